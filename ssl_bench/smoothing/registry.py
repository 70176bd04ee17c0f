"""The registry of smoothing strategies: built-ins and the user's one-file plug-ins, found by name or path.

A strategy is a frozen dataclass whose fields are its settings, each declared with :func:`setting` (default,
valid range, help: declared once), plus ``update(self, u)``, the rule applied after every optimizer step
(``u`` is a :class:`~ssl_bench.smoothing.kernels.Update`).  ``@register("name")`` makes it available as
``--smooth name``.  Optional members: ``granularity`` (a field: the unit of random masks, default layer),
``draws(self) -> bool`` (True if updates draw from the generator; default False) and
``expected_momentum(self) -> float``.

Settings that several strategies read (``p``, ``m``, ``granularity``, ``buffers``, ``schedule``) are declared
once in :data:`SHARED_SETTINGS` and taken with :func:`shared`, so ``--m`` means one thing for every strategy.

Built-ins live in ``ssl_bench/smoothing/builtins.py``; their names are reserved.  Plug-ins are found in
``./smoothers`` of the working directory (``--smooth my_smoother`` imports ``./smoothers/my_smoother.py``) or
by path (``--smooth path/to/my_smoother.py``).  A broken plug-in is a loud :class:`SmoothingError` naming the
file, with its traceback chained.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench.plugins import claim_name, import_plugin_file, source_file
from ssl_bench.smoothing.kernels import GRANULARITIES

BUILTIN_MODULE = "ssl_bench.smoothing.builtins"
PLUGIN_FOLDER = "smoothers"             # ./smoothers in the working directory holds the user's plug-ins


class SmoothingError(ValueError):
    """A smoothing strategy, setting or strategy file is unusable; the message names it and the fix."""


@dataclass(frozen=True)
class Setting:
    """One setting of a strategy: default, valid range (numbers) or choices (strings), meaning."""

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    integer: bool = False

    def interval(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"

    def describe_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"{'an integer' if self.integer else 'a number'} in {self.interval()}"

    def check(self, name: str, value: Any) -> Any:
        """``value`` if valid (ints accepted for floats, returned as float), else SmoothingError naming it."""
        if self.choices is not None:
            if value not in self.choices:
                raise SmoothingError(f"unknown {name} {value!r}; choose one of "
                                     f"{', '.join(repr(c) for c in self.choices)} ({self.help})")
            return value
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            raise SmoothingError(f"{name}={value!r} is not {'an integer' if self.integer else 'a number'}; "
                                 f"{name} is {self.help} and must be {self.describe_range()}")
        value = int(value) if self.integer else float(value)
        if (not math.isfinite(value) or (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high)):
            raise SmoothingError(f"{name}={value!r} is outside {self.interval()}; {name} is {self.help}, "
                                 f"pass {self.describe_range()}")
        return value


    def parse(self, name: str, text: Any) -> Any:
        """A value given as text (``--smooth-arg start=0.75``) converted to the setting's type, then checked."""
        if self.choices is not None or not isinstance(text, str):
            return self.check(name, text)
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise SmoothingError(f"{name}={text!r} is not {'an integer' if self.integer else 'a number'}; {name} "
                                 f"is {self.help} and must be {self.describe_range()}") from None
        return self.check(name, value)


_SETTING_KEY = "ssl_bench_smoothing_setting"


def setting(default: Any, *, help: str, low: float | None = None, high: float | None = None,
            choices: tuple[str, ...] | None = None, integer: bool = False) -> Any:
    """A strategy setting: a dataclass field whose default and valid range are declared here, once."""
    meta = Setting(default, help, low, high, choices, integer)
    return dataclasses.field(default=default, metadata={_SETTING_KEY: meta})


# The settings several built-ins read, each with its source.
SHARED_SETTINGS: dict[str, Setting] = {
    # Paper Sec. 4.1: "The masking probability p is set to 0.7/0.5/0.5 for BYOL/MoCo/FixMatch".
    "p": Setting(0.5, "the preserving probability of Eq. 1-3 (p = 0 is TMA, p = 1 never updates)", 0.0, 1.0),
    # google-research/fixmatch, fixmatch.py, FixMatch.model(..., ema=0.999) (the `ema` flag of its scripts).
    "m": Setting(0.999, "the TMA momentum of Eq. 3-4 (e.g. m=0.999)", 0.0, 1.0),
    # Paper Sec. 4.3: "we use LW [layer-wise] as default".
    "granularity": Setting("layer", "the unit of the Bernoulli draw", choices=GRANULARITIES),
    # google-research/fixmatch, libml/utils.py: the EMA covers model_vars() = TRAINABLE_VARIABLES only, and
    # getter_ema falls back to the live variable, so the EMA model normalises with the student's BN
    # statistics: "copy".  "average" is EMAN's rule (see builtins.py).
    # "recompute" is SWA's recipe (Izmailov et al., UAI 2018, Sec. 3.2; timgaripov/swa train.py calls
    # utils.bn_update(loaders['train'], swa_model) before evaluating): the loop recomputes them with one pass over
    # the training images before every evaluation of the teacher (ssl_bench.run.evaluate.recompute_batch_norm).
    "buffers": Setting("copy", "the teacher's BatchNorm statistics: copied from the student, averaged (EMAN) or "
                               "recomputed on the training images before each evaluation (SWA)",
                       choices=("copy", "average", "recompute")),
    # The momentum schedule of tma / sts (builtins.momentum_at): constant is the reference's (FixMatch).
    "schedule": Setting("constant", "the momentum schedule over training",
                        choices=("constant", "cosine", "warmup")),
}


def shared(name: str) -> Any:
    """The field of a shared setting (:data:`SHARED_SETTINGS`): same default, range and meaning everywhere."""
    s = SHARED_SETTINGS[name]
    return dataclasses.field(default=s.default, metadata={_SETTING_KEY: s})


def strategy_settings(cls: type) -> dict[str, Setting]:
    """The declared settings of a strategy class, in declaration order."""
    return {f.name: f.metadata[_SETTING_KEY] for f in dataclasses.fields(cls)}


# ------------------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type] = {}



def _builtin_names() -> tuple[str, ...]:
    importlib.import_module(BUILTIN_MODULE)
    return tuple(n for n, c in _REGISTRY.items() if c.__module__ == BUILTIN_MODULE)


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a strategy available as ``--smooth name`` (mistakes reported with the file)."""

    def decorate(cls: type) -> type:
        where = source_file(cls)
        if not isinstance(name, str) or not name.isidentifier():
            raise SmoothingError(f"{where}: strategy name {name!r} must be a Python identifier, e.g. 'my_ema'")
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            raise SmoothingError(f"{where}: {cls.__name__} must be a @dataclass(frozen=True) (its fields are "
                                 f"its settings); put @dataclass(frozen=True) under @register(...)")
        for f in dataclasses.fields(cls):
            meta = f.metadata.get(_SETTING_KEY)
            if meta is None:
                raise SmoothingError(f"{where}: {cls.__name__}.{f.name} is not declared with setting(...) or "
                                     f"shared(...); declare its default and range there")
            if f.name in SHARED_SETTINGS and meta is not SHARED_SETTINGS[f.name]:
                raise SmoothingError(f"{where}: {cls.__name__}.{f.name} has the name of a shared setting; "
                                     f"declare it as {f.name}: ... = shared({f.name!r}) (one meaning per "
                                     f"flag) or rename it")
        if not callable(getattr(cls, "update", None)):
            raise SmoothingError(f"{where}: {cls.__name__} has no update(self, u) method")
        builtin = cls.__module__ == BUILTIN_MODULE
        if not builtin and name in _builtin_names():
            raise SmoothingError(f"{where}: strategy name {name!r} is reserved for a built-in strategy; pick "
                                 f"another name, e.g. @register('my_{name}')")
        return claim_name(_REGISTRY, name, cls, "strategy", SmoothingError)

    return decorate


def _import_plugin(path: Path) -> None:
    # user code: a loud error naming the file; its traceback is chained (raise ... from the plug-in's error)
    import_plugin_file(path, "ssl_bench_smoother", SmoothingError, lambda exc: SmoothingError(
        f"{path}: importing the smoothing strategy file failed: {type(exc).__name__}: {exc} (traceback above)"))


def _plugin_dir() -> Path | None:
    folder = Path.cwd() / PLUGIN_FOLDER
    return folder if folder.is_dir() else None


def is_plugin_reference(name: str) -> bool:
    """``name`` points at a plug-in: a ``.py`` path, or a file ``./smoothers/<name>.py`` (not yet imported)."""
    if not isinstance(name, str):
        return False
    folder = _plugin_dir()
    return name.endswith(".py") or (folder is not None and name.isidentifier() and (folder / f"{name}.py").is_file()
                                    and name not in _builtin_names())


def plugin_file(cls: type) -> Path | None:
    """The file of a plug-in strategy class; None for a built-in."""
    return None if cls.__module__ == BUILTIN_MODULE else Path(source_file(cls))


def available_strategies() -> list[str]:
    """Built-in names, then the plug-in files of ``./smoothers`` (not imported) and registered plug-ins."""
    builtins = list(_builtin_names())
    folder = _plugin_dir()
    files = [] if folder is None else sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    return builtins + sorted((set(files) | set(_REGISTRY)) - set(builtins))


def strategy_class(name_or_path: str) -> type:
    """The strategy class for a registered name (``sts``), a plug-in in ``./smoothers``, or a ``.py`` path."""
    builtins = _builtin_names()
    if isinstance(name_or_path, str) and name_or_path.endswith(".py"):
        path = Path(name_or_path).resolve()
        if not path.is_file():
            raise SmoothingError(f"--smooth {name_or_path!r}: no such file; pass an existing .py file or one "
                                 f"of {available_strategies()}")
        before = dict(_REGISTRY)
        _import_plugin(path)
        mine = [n for n, c in _REGISTRY.items() if Path(source_file(c)).resolve() == path]
        new = [n for n in mine if before.get(n) is not _REGISTRY[n]] or mine
        if len(new) != 1:
            raise SmoothingError(f"{path}: expected exactly one @register(...) strategy in the file, found "
                                 f"{new or 'none'}; decorate your class with @register('my_smoother')")
        return _REGISTRY[new[0]]
    if name_or_path in builtins:
        folder = _plugin_dir()
        if folder is not None and (folder / f"{name_or_path}.py").is_file():
            raise SmoothingError(f"{(folder / f'{name_or_path}.py').resolve()}: the file has the name of the "
                                 f"built-in strategy {name_or_path!r}, which is reserved; rename your file "
                                 f"and its @register(...), e.g. my_{name_or_path}.py")
        return _REGISTRY[name_or_path]
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path]
    folder = _plugin_dir()
    if isinstance(name_or_path, str) and folder is not None and (folder / f"{name_or_path}.py").is_file():
        path = (folder / f"{name_or_path}.py").resolve()
        _import_plugin(path)
        if name_or_path not in _REGISTRY:
            raise SmoothingError(f"{path}: the file registers no strategy named {name_or_path!r}; add "
                                 f"@register({name_or_path!r}) above the class")
        return _REGISTRY[name_or_path]
    raise SmoothingError(f"unknown strategy {name_or_path!r}; choose one of "
                         f"{', '.join(repr(n) for n in available_strategies())} or pass a path to your own "
                         f"file (--smooth path/to/my_smoother.py)")


def known_setting_names() -> set[str]:
    """Every setting name any registered strategy declares (a caller may pass these to any strategy)."""
    return set(SHARED_SETTINGS) | {n for c in _REGISTRY.values() for n in strategy_settings(c)}


def build_strategy(name_or_path: str, settings: Mapping[str, Any]) -> Any:
    """The strategy instance with ``settings`` checked against their declared ranges.

    Settings the strategy does not read are ignored when some strategy declares them (a caller may pass its
    configured values for every strategy); a name no strategy declares is an error (a typo).
    """
    cls = strategy_class(name_or_path)
    declared = strategy_settings(cls)
    unknown = sorted(set(settings) - known_setting_names())
    if unknown:
        raise SmoothingError(f"strategy {cls.name!r}: unknown setting {unknown[0]!r}; {cls.name} reads "
                             f"{sorted(declared) or 'no settings'}")
    values = {n: s.check(n, settings[n]) for n, s in declared.items() if n in settings}
    return cls(**values)


def settings_of(strategy: Any) -> dict[str, Any]:
    """The settings of a strategy instance (what it reads), in declaration order."""
    return {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy)}
