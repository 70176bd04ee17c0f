"""What an SSL algorithm is, and the registry that finds the built-in ones and the user's plug-ins.

An algorithm is one small class in one file. It declares

* ``targets_from``: ``"student"`` when its targets (pseudo-labels, guessed labels) come from the
  student being trained, so the smoothed teacher is only the evaluated model (FixMatch); ``"teacher"``
  when its targets come from the smoothed teacher, so the smoothing strategy changes the targets
  (Mean Teacher).
* ``unlabeled_views``: which augmented views of each unlabelled image its loss needs, in order, each
  ``"weak"`` or ``"strong"`` (FixMatch: ``("weak", "strong")``; MixMatch with K = 2: ``("weak", "weak")``);
  ``()`` for an algorithm that uses no unlabelled images (the ``supervised`` baseline). Read it from the
  built instance: it may depend on a hyper-parameter (ReMixMatch's K).
* ``labeled_view`` (optional, default ``"weak"``): the augmentation of the labelled images, ``"weak"`` or
  ``"strong"`` (ReMixMatch's reference trains on strongly augmented labelled images).
* ``reference``: the training settings of the code that produced its published number, per dataset
  family (see :func:`loop_settings`), each with its source in a comment.
* ``loss(student, teacher, batch) -> Losses``.

and registers itself with ``@register("name")``. Hyper-parameters are dataclass fields declared with
:func:`hp` (default, valid range, source beside them); ``--alg-arg key=value`` overrides them and
:func:`build_algorithm` checks every value against its declared range. The training loop
(``ssl_bench.run.loop``) owns the optimizer, the data, the smoothing and the checkpoints; an algorithm never
sees them. Random draws (MixUp) come from ``batch.generator``, which the loop seeds and checkpoints.

An algorithm that needs trainable parts or state of its own (ReMixMatch's rotation head, a running
class distribution) returns them as one ``nn.Module`` from the optional ``setup(student, num_classes)``;
the loop moves it to the device, trains its parameters with the student's and saves it in checkpoints.
State kept per image (FlexMatch's selected labels, SimMatch's labelled memory bank) declares the keyword
parameters ``num_labeled`` / ``num_unlabeled`` of ``setup`` to get the split's sizes (:func:`setup_algorithm`)
and reads which images a batch holds from ``Batch.x_index`` / ``u_index``. Running statistics are updated
from :func:`gather_from_ranks` of the batch's values, so that every torchrun rank holds the same state.

Built-in algorithms live in the top-level ``algorithms/`` folder, installed as the package
``ssl_bench_algorithms``; their names are reserved. Plug-ins are found in ``./algorithms`` of the working
directory or by path (``--alg path/to/my_alg.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_bench.errors import UserError
from ssl_bench.functional import frozen_batchnorm_stats
from ssl_bench.plugins import add_note, claim_name, file_sha256, import_plugin_file, source_file

TARGET_SOURCES = ("student", "teacher")
VIEWS = ("weak", "strong")
BUILTIN_PACKAGE = "ssl_bench_algorithms"   # the top-level algorithms/ folder, as installed (pyproject.toml)
PLUGIN_FOLDER = "algorithms"               # ./algorithms in the working directory holds the user's plug-ins

# Training-loop settings an algorithm's ``reference`` may set, beside its hyper-parameters.
LOOP_SETTINGS = ("mu", "lr", "weight_decay")
# Names no hyper-parameter may take: the loop settings and the protocol settings the records compare.
RESERVED_SETTING_NAMES = (*LOOP_SETTINGS, "momentum", "strong_augment")
# For a plug-in that declares none: FixMatch's (google-research/fixmatch, fixmatch.py: flag uratio = 7,
# FLAGS.set_default('lr', 0.03), flag wd = 0.0005). algorithms/fixmatch.py declares the same values as its
# own reference (this module cannot import a built-in); a test checks that they agree.
DEFAULT_LOOP_SETTINGS: dict[str, Any] = {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}
ALL_FAMILIES = "*"


@dataclass
class Batch:
    """One training step's inputs, already augmented, normalised and on the device.

    ``x``/``y``: labelled images (the algorithm's ``labeled_view``, weak by default) and their labels,
    ``(B, C, H, W)`` and ``(B,)``.
    ``u``: the unlabelled views in the order ``unlabeled_views`` names them, each ``(mu * B, C, H, W)``;
    view ``i`` of every tensor shows the same underlying images.
    ``progress``: training progress ``step / total_steps`` in ``[0, 1]`` for ramp-ups and schedules.
    ``generator``: the seeded, checkpointed generator on the batch's device that every random draw of the
    algorithm uses (MixUp); read it with :func:`generator_of`.
    ``x_index`` / ``u_index``: which labelled / unlabelled images these are, as positions ``0..L-1`` in the
    split's labelled set and ``0..U-1`` in its unlabelled set (the sizes :func:`setup_algorithm` passes), for
    per-image state (FlexMatch's selected labels, SimMatch's labelled memory bank); None when the caller has
    no split (unit tests); read them with :func:`indices_of`.
    """

    x: Tensor
    y: Tensor
    u: tuple[Tensor, ...]
    progress: float
    num_classes: int
    generator: torch.Generator | None = None
    x_index: Tensor | None = None
    u_index: Tensor | None = None


@dataclass
class Losses:
    """What ``loss`` returns.

    ``total`` is what the loop back-propagates. ``terms`` holds each weighted term that sums to
    ``total`` (the gradient-flow tests check every term on its own). ``logs`` holds scalars worth
    logging (mask rate, ramp-up weight); the loop detaches them and reads them only at log intervals.
    """

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    logs: dict[str, Tensor | float] = field(default_factory=dict)


class Algorithm(Protocol):
    """The type of a built algorithm (what :func:`build_algorithm` returns); no base class to inherit."""

    name: str
    targets_from: str
    unlabeled_views: tuple[str, ...]
    labeled_view: str   # optional in an algorithm file (labeled_view_of gives "weak" when it is absent)
    reference: dict[str, dict[str, Any]]

    def loss(self, student: nn.Module, teacher: nn.Module, batch: Batch) -> Losses: ...


class AlgorithmError(UserError):
    """A registered algorithm or an algorithm file is unusable; the message names the file and the problem."""


# --- hyper-parameters with their valid range ----------------------------------------------------------------


def hp(default: Any, *, low: float | None = None, high: float | None = None, open_low: bool = False,
       choices: tuple[str, ...] | None = None, source: str | None = None) -> Any:
    """A hyper-parameter field whose valid range is declared once, beside its default.

    ``low``/``high`` bound a number (inclusive; ``open_low=True`` makes ``low`` exclusive, for a value that
    must be ``> low``); ``choices`` lists the valid strings. :func:`build_algorithm` checks every value.
    ``source``: where the default comes from (file and flag/key of the reference code); ``--dry-run`` prints it.
    """
    metadata = {"low": low, "high": high, "open_low": open_low, "choices": choices, "source": source}
    return field(default=default, metadata=metadata)


def describe_range(f: dataclasses.Field) -> str | None:
    """The declared valid range of a hyper-parameter field, in words (``[0, 1]``, ``(0, inf)``), or None."""
    meta = f.metadata
    if meta.get("choices") is not None:
        return f"one of {tuple(meta['choices'])}"
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return None
    left = "(-inf" if low is None else ("(" if meta.get("open_low") else "[") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}]"
    return f"{left}, {right}"


def _in_range(f: dataclasses.Field, value: Any) -> bool:
    meta = f.metadata
    if meta.get("choices") is not None:
        return value in meta["choices"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        # a bounded number must be finite: lambda_u=inf would pass [0, inf) and surface as a divergence
        return meta.get("low") is None and meta.get("high") is None
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("open_low") else value < low):
        return False
    return high is None or value <= high


def hyperparameter_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The hyper-parameters of an algorithm class: its dataclass fields set at construction (``init=True``).

    Fields with ``init=False`` are declared state (ReMixMatch's module), not hyper-parameters.
    """
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def check_hyperparameters(algorithm: Any, given: dict[str, str] | None = None) -> None:
    """Raise one clear line for the first hyper-parameter outside its declared range.

    ``given``: the ``--alg-arg`` strings, so the message can say which flag to change.
    """
    cls = type(algorithm)
    for f in hyperparameter_fields(cls):
        value = getattr(algorithm, f.name)
        if _in_range(f, value):
            continue
        source = f"--alg-arg {f.name}={given[f.name]}" if given and f.name in given else f"{f.name}={value!r}"
        raise AlgorithmError(f"{source}: {cls.__name__}.{f.name} must lie in {describe_range(f)}; "
                             f"pass a value in that range (default {_default(f)!r})")


# --- the registry -------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type] = {}


def source_sha256(algorithm: Any) -> str | None:
    """sha256 of the file that defines ``algorithm`` (recorded with every run), or None when it has none."""
    return file_sha256(type(algorithm))



def _is_builtin(cls: type) -> bool:
    return cls.__module__.startswith(BUILTIN_PACKAGE + ".")


def _builtin_package() -> Any:
    try:
        return importlib.import_module(BUILTIN_PACKAGE)
    except ImportError as exc:
        raise AlgorithmError(f"the built-in algorithms package {BUILTIN_PACKAGE!r} is not installed ({exc}); "
                             "reinstall ssl-bench: pip install . (pip install -e . in a checkout)") from exc


def builtin_algorithms() -> dict[str, Path]:
    """Names of the built-in algorithms (reserved) and their files, without importing them."""
    return dict(_builtin_algorithms())


@functools.cache
def _builtin_algorithms() -> tuple[tuple[str, Path], ...]:
    # The installed package does not change while a process runs; listing it costs milliseconds, and a sweep
    # asks once per planned training.
    package = _builtin_package()
    return tuple((m.name, Path(package.__path__[0]) / f"{m.name}.py")
                 for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def _check_views(views: Any, where: str, owner: str) -> None:
    if not isinstance(views, tuple) or any(v not in VIEWS for v in views):
        raise AlgorithmError(f"{where}: {owner}.unlabeled_views = {views!r}; expected a tuple of {VIEWS}, "
                             "e.g. ('weak', 'strong') (or () for no unlabelled images)")


def _check_reference(cls: type, where: str) -> None:
    reference = getattr(cls, "reference", {})
    fields = {f.name: f for f in hyperparameter_fields(cls)}
    if not isinstance(reference, dict) or any(not isinstance(v, dict) for v in reference.values()):
        raise AlgorithmError(f"{where}: {cls.__name__}.reference must map '*' or a dataset family to a dict "
                             f"of settings, e.g. {{'*': {{'mu': 7, 'lr': 0.03}}}}")
    for family, settings in reference.items():
        for key, value in settings.items():
            if key in LOOP_SETTINGS:
                valid = (isinstance(value, int) and value >= 1) if key == "mu" else (
                    isinstance(value, (int, float)) and value >= 0 and (key != "lr" or value > 0))
                if not valid:
                    raise AlgorithmError(f"{where}: {cls.__name__}.reference[{family!r}][{key!r}] = "
                                         f"{value!r}; expected mu an integer >= 1, lr > 0, weight_decay >= 0")
            elif key in fields:
                if not _in_range(fields[key], value):
                    raise AlgorithmError(f"{where}: {cls.__name__}.reference[{family!r}][{key!r}] = "
                                         f"{value!r} must lie in {describe_range(fields[key])}")
            else:
                raise AlgorithmError(f"{where}: {cls.__name__}.reference[{family!r}] sets {key!r}, which is "
                                     f"neither a loop setting {LOOP_SETTINGS} nor a hyper-parameter "
                                     f"{sorted(fields)}")


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` available as ``--alg name``.

    The class must be a dataclass (its fields are the hyper-parameters) with ``targets_from``,
    ``unlabeled_views`` and ``loss``. Mistakes are reported at import time with the file name; a plug-in may
    not take a built-in algorithm's name.
    """

    def decorate(cls: type) -> type:
        where = source_file(cls)
        if not isinstance(name, str) or not name.isidentifier():
            raise AlgorithmError(f"{where}: algorithm name {name!r} must be a Python identifier, "
                                 "e.g. 'my_alg'")
        if not dataclasses.is_dataclass(cls):
            raise AlgorithmError(f"{where}: {cls.__name__} must be a @dataclass (its fields are the "
                                 "hyper-parameters); put @dataclass under @register(...)")
        if getattr(cls, "targets_from", None) not in TARGET_SOURCES:
            raise AlgorithmError(f"{where}: {cls.__name__}.targets_from = "
                                 f"{getattr(cls, 'targets_from', None)!r}; expected one of {TARGET_SOURCES}")
        views = getattr(cls, "unlabeled_views", None)
        if not isinstance(views, property):   # a property is checked on the built instance
            _check_views(views, where, cls.__name__)
        if not callable(getattr(cls, "loss", None)):
            raise AlgorithmError(f"{where}: {cls.__name__} has no loss(self, student, teacher, batch) method")
        # A hyper-parameter named like a run setting would shadow it where records are compared with the
        # reference (an algorithm's EMA "momentum" read as SGD's momentum): refused.
        clashing = [f.name for f in hyperparameter_fields(cls) if f.name in RESERVED_SETTING_NAMES]
        if clashing:
            raise AlgorithmError(f"{where}: hyper-parameter {clashing[0]!r} has the name of a loop setting "
                                 f"{RESERVED_SETTING_NAMES}; rename it")
        _check_reference(cls, where)
        builtin = _is_builtin(cls)
        if builtin and name != cls.__module__.rsplit(".", 1)[-1]:
            raise AlgorithmError(f"{where}: a built-in algorithm registers the name of its file; expected "
                                 f"@register({cls.__module__.rsplit('.', 1)[-1]!r})")
        if not builtin and name in builtin_algorithms():
            raise AlgorithmError(f"{where}: algorithm name {name!r} is reserved for the built-in "
                                 f"{builtin_algorithms()[name]}; pick another name, "
                                 f"e.g. @register('my_{name}')")
        return claim_name(_REGISTRY, name, cls, "algorithm", AlgorithmError)

    return decorate


def _import_plugin(path: Path) -> None:
    """Import one plug-in file. Its own errors keep their traceback (it is the user's code: the line that failed
    is the fix), with a note naming the file; a registration mistake (:class:`AlgorithmError`) stays one line."""
    def note(exc: BaseException) -> None:   # a broken plug-in is loud, with its traceback, never "unknown algorithm"
        add_note(exc, f"(raised while importing the algorithm plug-in {path}; fix the file, or move it out of "
                      f"{path.parent} while you use other algorithms)")

    import_plugin_file(path, "ssl_bench_plugin", AlgorithmError, note)


def _plugin_dir() -> Path | None:
    """``./algorithms`` of the working directory, unless it holds the built-ins: the installed package's
    folder (an editable install) or the ``algorithms/`` package of an ssl-bench checkout (beside
    ``ssl_bench/algorithm.py``) whose built-ins are installed from a wheel."""
    folder = Path.cwd() / PLUGIN_FOLDER
    if not folder.is_dir():
        return None
    if folder.resolve() == Path(_builtin_package().__path__[0]).resolve():
        return None
    if (folder / "__init__.py").is_file() and (folder.parent / "ssl_bench" / "algorithm.py").is_file():
        return None
    return folder


def _plugin_files() -> list[Path]:
    plugins = _plugin_dir()
    return [] if plugins is None else sorted(p.resolve() for p in plugins.glob("*.py") if not p.name.startswith("_"))


def available_algorithms() -> list[str]:
    """Names of every built-in algorithm, every algorithm registered so far, and every plug-in file's stem in
    ``./algorithms`` (without importing it: a file's registered name is known only once it is imported)."""
    plugins = [n for n, c in _REGISTRY.items() if not _is_builtin(c)]
    return sorted(set(builtin_algorithms()) | set(plugins) | {p.stem for p in _plugin_files()})


def registered_plugins() -> dict[str, Path]:
    """Every plug-in of ``./algorithms`` imported, by registered name: ``{name: file}``. A file that fails to
    import raises its own error with its traceback."""
    for path in _plugin_files():
        _import_plugin(path)
    return {n: Path(source_file(c)) for n, c in _REGISTRY.items() if not _is_builtin(c)}


def _unknown_algorithm(name: str) -> AlgorithmError:
    import difflib

    known = sorted(set(builtin_algorithms()) | set(registered_plugins()))
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    where = f" and the plug-ins of {_plugin_dir()}" if _plugin_dir() is not None else ""
    return AlgorithmError(f"unknown algorithm {name!r}: {hint}the built-ins{where} register {known}; a plug-in "
                          "elsewhere is given by path (--alg path/to/my_alg.py) or copied into ./algorithms/")


def _check_not_shadowing(name: str) -> None:
    plugins = _plugin_dir()
    if plugins is not None and (plugins / f"{name}.py").is_file():
        raise AlgorithmError(f"{(plugins / f'{name}.py').resolve()}: the file has the name of the built-in "
                             f"algorithm {name!r} ({builtin_algorithms()[name]}), which is reserved; rename "
                             f"your file and its @register(...), e.g. my_{name}.py")


def load_algorithm_class(name_or_path: str) -> type:
    """Find an algorithm by registered name (``fixmatch``) or by file (``path/to/my_alg.py``).

    A name is a built-in (reserved: a plug-in file of the same name in ``./algorithms`` is an error) or the
    name a plug-in in ``./algorithms`` registers, whatever its file is called. A path is imported and must
    register exactly one algorithm. A plug-in that fails to import raises its own error, with its traceback.
    """
    if name_or_path.endswith(".py"):
        path = Path(name_or_path).resolve()
        if not path.is_file():
            raise AlgorithmError(f"--alg {name_or_path!r}: no such file; pass an existing .py file or a name "
                                 f"from {available_algorithms()}")
        builtins = {p.resolve(): n for n, p in builtin_algorithms().items()}
        if path in builtins:
            return load_algorithm_class(builtins[path])
        before = dict(_REGISTRY)
        _import_plugin(path)
        mine = [n for n, c in _REGISTRY.items() if Path(source_file(c)).resolve() == path]
        new = [n for n in mine if before.get(n) is not _REGISTRY[n]] or mine
        if len(new) != 1:
            raise AlgorithmError(f"{path}: expected exactly one @register(...) algorithm in the file, found "
                                 f"{new or 'none'}; decorate your class with @register('my_alg')")
        return _REGISTRY[new[0]]
    if name_or_path in builtin_algorithms():
        _check_not_shadowing(name_or_path)
        if name_or_path not in _REGISTRY:
            importlib.import_module(f"{BUILTIN_PACKAGE}.{name_or_path}")
        return _REGISTRY[name_or_path]
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path]
    # A plug-in is found by the name it registers, whatever its file is called: the file of that name first
    # (cheap, the usual case), then every other file of ./algorithms.
    files = _plugin_files()
    files.sort(key=lambda p: p.stem != name_or_path)
    for path in files:
        _import_plugin(path)
        if name_or_path in _REGISTRY:
            return _REGISTRY[name_or_path]
    raise _unknown_algorithm(name_or_path)


def registered_name(name_or_path: str) -> str:
    """The name an algorithm registers (what run folders and records are named after), from a name or a path."""
    if name_or_path in _REGISTRY or name_or_path in builtin_algorithms():
        return name_or_path
    return load_algorithm_class(name_or_path).name


# --- reference settings and building -----------------------------------------------------------------------


def _reference_for(cls: type, dataset_family: str | None) -> dict[str, Any]:
    """The class's reference settings for a family: the ``"*"`` entry overridden by the family's entry."""
    reference = getattr(cls, "reference", {})
    merged = dict(reference.get(ALL_FAMILIES, {}))
    if dataset_family is not None:
        merged.update(reference.get(dataset_family, {}))
    return merged


def _class_of(algorithm_or_cls: Any) -> type:
    if isinstance(algorithm_or_cls, str):
        return load_algorithm_class(algorithm_or_cls)
    return algorithm_or_cls if isinstance(algorithm_or_cls, type) else type(algorithm_or_cls)


def loop_settings(algorithm_or_cls: Any, dataset_family: str | None) -> dict[str, Any]:
    """The training-loop settings (``mu``, ``lr``, ``weight_decay``) an algorithm's reference uses.

    :data:`DEFAULT_LOOP_SETTINGS`, overridden by the algorithm's ``reference["*"]``, overridden by its
    ``reference[dataset_family]``. Accepts an instance, a class or a name.
    """
    reference = _reference_for(_class_of(algorithm_or_cls), dataset_family)
    return {key: reference.get(key, DEFAULT_LOOP_SETTINGS[key]) for key in LOOP_SETTINGS}


def _coerce(value: str, like: Any, key: str, cls: type) -> Any:
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise AlgorithmError(f"--alg-arg {key}={value!r}: expected true or false for {cls.__name__}.{key}")
    try:
        return type(like)(value) if like is not None else value
    except (TypeError, ValueError) as exc:
        raise AlgorithmError(f"--alg-arg {key}={value!r}: expected a {type(like).__name__} for "
                             f"{cls.__name__}.{key} (default {like!r})") from exc


def build_algorithm(name_or_path: str, overrides: dict[str, str] | None = None,
                    dataset_family: str | None = None) -> Algorithm:
    """Instantiate an algorithm with its reference defaults for ``dataset_family``, then ``--alg-arg``s.

    Defaults are the field defaults, overridden by the hyper-parameters the class's ``reference`` sets for
    the family. ``overrides`` are ``--alg-arg`` strings, coerced to each default's type. Unknown keys and
    values outside a field's declared range raise :class:`AlgorithmError` (never silently ignored).
    """
    cls = load_algorithm_class(name_or_path)
    fields = {f.name: f for f in hyperparameter_fields(cls)}
    defaults = {name: _default(f) for name, f in fields.items()}
    defaults.update({k: v for k, v in _reference_for(cls, dataset_family).items() if k in fields})
    kwargs = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in fields:
            flag = "--" + key.replace("_", "-")
            hint = f" ({key} is a loop setting: use {flag})" if key in LOOP_SETTINGS else ""
            raise AlgorithmError(f"--alg-arg {key}=...: {cls.__name__} has no hyper-parameter {key!r}{hint}; "
                                 f"valid keys: {sorted(fields)}")
        kwargs[key] = _coerce(value, defaults[key], key, cls)
    algorithm = cls(**kwargs)
    check_hyperparameters(algorithm, overrides)
    _check_views(algorithm.unlabeled_views, source_file(cls), cls.__name__)
    if labeled_view_of(algorithm) not in VIEWS:
        raise AlgorithmError(f"{source_file(cls)}: {cls.__name__}.labeled_view = {labeled_view_of(algorithm)!r}; "
                             f"expected one of {VIEWS}")
    return algorithm


def labeled_view_of(algorithm: Any) -> str:
    """The augmentation of an algorithm's labelled images: its ``labeled_view``, ``"weak"`` when undeclared."""
    return getattr(algorithm, "labeled_view", "weak")


def setting_sources(algorithm: Any, dataset_family: str | None, loop: dict[str, Any]) -> list[str]:
    """One line per setting with a declared source: ``name=value  <- source``, for ``--dry-run``.

    Hyper-parameters name theirs with ``hp(..., source=...)``; the loop settings the algorithm's ``reference``
    sets name theirs in the optional class attribute ``reference_sources`` (family or ``"*"`` -> source). ``loop``
    holds the run's effective loop settings; a value that differs from the reference's is marked as given.
    """
    cls = type(algorithm)
    reference = _reference_for(cls, dataset_family)
    sources = getattr(cls, "reference_sources", {})
    lines = []

    def line(name: str, value: Any, default: Any, source: str) -> str:
        given = "" if value == default else f"  (given; the reference has {default!r})"
        return f"{name}={value!r}  <- {source}{given}"

    for f in hyperparameter_fields(cls):
        if f.metadata.get("source"):
            default = reference.get(f.name, _default(f))
            lines.append(line(f.name, getattr(algorithm, f.name), default, f.metadata["source"]))
    for key in LOOP_SETTINGS:
        family = dataset_family if key in getattr(cls, "reference", {}).get(dataset_family, {}) else ALL_FAMILIES
        if key in reference and family in sources:
            lines.append(line(key, loop.get(key, reference[key]), reference[key], sources[family]))
    return lines


def hyperparameters(algorithm: Any) -> dict[str, Any]:
    """The algorithm's resolved hyper-parameters, for the run record (declared state is left out)."""
    return {f.name: getattr(algorithm, f.name) for f in hyperparameter_fields(type(algorithm))}


def reference_configuration(name: str, dataset_family: str | None) -> dict[str, Any]:
    """The hyper-parameters and loop settings a default run of algorithm ``name`` has on ``dataset_family``.

    A run whose effective settings equal these ran the reference configuration (the leaderboard shows the
    paper's number beside it), however they were given.
    """
    algorithm = build_algorithm(name, None, dataset_family)
    return {**hyperparameters(algorithm), **loop_settings(algorithm, dataset_family)}


# --- helpers the algorithms and the loop share -------------------------------------------------------------


def generator_of(batch: Batch, algorithm: Any) -> torch.Generator:
    """``batch.generator``, or a clear error naming the algorithm when the caller passed none."""
    if batch.generator is None:
        name = getattr(algorithm, "name", type(algorithm).__name__)
        raise AlgorithmError(f"{name}: its loss draws random numbers (MixUp) from batch.generator, which is "
                             "None; pass Batch(..., generator=torch.Generator(device).manual_seed(seed))")
    return batch.generator


def indices_of(batch: Batch, algorithm: Any) -> tuple[Tensor, Tensor]:
    """``(batch.x_index, batch.u_index)``, or a clear error naming the algorithm when the caller passed none."""
    if batch.x_index is None or batch.u_index is None:
        name = getattr(algorithm, "name", type(algorithm).__name__)
        raise AlgorithmError(f"{name}: its per-image state needs batch.x_index and batch.u_index (positions in the "
                             "split's labelled / unlabelled sets), which are None; pass them to Batch(...) "
                             "(the training loop does)")
    return batch.x_index, batch.u_index


def setup_algorithm(algorithm: Any, student: nn.Module, num_classes: int, *, num_labeled: int,
                    num_unlabeled: int) -> nn.Module | None:
    """Call the algorithm's optional ``setup``; what it returns is the algorithm's module (trained, saved).

    ``setup(student, num_classes)`` is the contract; an algorithm whose state is per image (a memory bank over
    the labelled set) also declares keyword parameters ``num_labeled`` and/or ``num_unlabeled`` (the sizes of
    the split's sets, which ``Batch.x_index`` / ``u_index`` index) and gets them.
    """
    setup = getattr(algorithm, "setup", None)
    if setup is None:
        return None
    accepted = inspect.signature(setup).parameters
    sizes = {k: v for k, v in (("num_labeled", num_labeled), ("num_unlabeled", num_unlabeled)) if k in accepted}
    return setup(student, num_classes, **sizes)


@torch.no_grad()
def gather_from_ranks(tensor: Tensor) -> Tensor:
    """The rows of ``tensor`` from every data-parallel rank, concatenated in rank order (no gradient).

    Running statistics of an algorithm (confidence EMAs, class-wise learning status, memory banks) are updated
    from this, so that every rank holds the same state, the one a single process of the global batch would
    compute; every rank's tensor must have the same shape (the loop gives every rank the same batch size).
    Without torchrun it returns ``tensor`` itself.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def check_losses(result: Any, algorithm: Any) -> Losses:
    """Validate what ``loss`` returned, naming the algorithm's file when it is wrong."""
    where = f"{source_file(type(algorithm))}: {type(algorithm).__name__}.loss"
    if not isinstance(result, Losses):
        raise AlgorithmError(f"{where} returned {type(result).__name__}; "
                             "expected ssl_bench.algorithm.Losses(total=...)")
    if not isinstance(result.total, Tensor) or result.total.dim() != 0:
        raise AlgorithmError(f"{where} returned Losses.total = {type(result.total).__name__} "
                             f"{getattr(result.total, 'shape', '')}; expected a scalar torch.Tensor")
    if not result.total.requires_grad:
        raise AlgorithmError(f"{where}: Losses.total carries no gradient; compute it from the student's "
                             "outputs (the teacher's outputs and the targets are constants)")
    return result


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze or unfreeze a module (the teacher is always frozen: only the smoother changes it)."""
    for p in module.parameters():
        p.requires_grad_(flag)


def teacher_forward(teacher: nn.Module, x: Tensor) -> Tensor:
    """The teacher's logits as constants (no graph): targets never carry gradient.

    The teacher's BatchNorm running statistics are left alone (google-research/fixmatch, mean_teacher.py:
    the EMA pass's update ops are not among the ``post_ops`` it runs); the smoother owns them.
    """
    with torch.no_grad(), frozen_batchnorm_stats(teacher):
        return teacher(x)
