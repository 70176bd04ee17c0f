"""What an SSL algorithm is, and the registry that finds the files in ``algorithms/``.

An algorithm is one small class in one file. It declares

* ``targets_from``: ``"student"`` when its targets (pseudo-labels, guessed labels) come from the
  student being trained, so the smoothed teacher is only the evaluated model (FixMatch); ``"teacher"``
  when its targets come from the smoothed teacher, so the smoothing strategy changes the targets
  (Mean Teacher).
* ``unlabeled_views``: which augmented views of each unlabelled image its loss needs, in order, each
  ``"weak"`` or ``"strong"`` (FixMatch: ``("weak", "strong")``; MixMatch with K = 2: ``("weak", "weak")``).
* ``loss(student, teacher, batch) -> Losses``.

and registers itself with ``@register("name")``. Hyper-parameters are dataclass fields with their
source beside them; ``--alg-arg key=value`` overrides them. The training loop (``ssl_bench.train``) owns
the optimizer, the data, the smoothing and the checkpoints; an algorithm never sees them.

An algorithm that needs trainable parts or state of its own (ReMixMatch's rotation head, a running
class distribution) returns them as one ``nn.Module`` from the optional ``setup(student, num_classes)``;
the loop moves it to the device, trains its parameters with the student's and saves it in checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

TARGET_SOURCES = ("student", "teacher")
VIEWS = ("weak", "strong")

# Folders searched for ``--alg NAME``: the user's working directory first, then the suite's own.
_REPO_ALGORITHMS = Path(__file__).resolve().parents[1] / "algorithms"


@dataclass
class Batch:
    """One training step's inputs, already augmented, normalised and on the device.

    ``x``/``y``: labelled images (weak view) and their labels, ``(B, C, H, W)`` and ``(B,)``.
    ``u``: the unlabelled views in the order ``unlabeled_views`` names them, each ``(mu * B, C, H, W)``;
    view ``i`` of every tensor shows the same underlying images.
    ``progress``: training progress ``step / total_steps`` in ``[0, 1]`` for ramp-ups and schedules.
    """

    x: Tensor
    y: Tensor
    u: tuple[Tensor, ...]
    progress: float
    num_classes: int


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


@runtime_checkable
class Algorithm(Protocol):
    """The protocol every registered algorithm follows (no base class to inherit)."""

    name: str
    targets_from: str
    unlabeled_views: tuple[str, ...]

    def loss(self, student: nn.Module, teacher: nn.Module, batch: Batch) -> Losses: ...


class AlgorithmError(ValueError):
    """A registered algorithm or an algorithm file is unusable; the message names the file and the problem."""


_REGISTRY: dict[str, type] = {}


def _source_file(cls: type) -> str:
    try:
        return inspect.getsourcefile(cls) or "<unknown file>"
    except TypeError:
        return "<unknown file>"


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` available as ``--alg name``.

    The class must be a dataclass (its fields are the hyper-parameters) with ``targets_from``,
    ``unlabeled_views`` and ``loss``. Mistakes are reported at import time with the file name.
    """

    def decorate(cls: type) -> type:
        where = _source_file(cls)
        if not isinstance(name, str) or not name.isidentifier():
            raise AlgorithmError(f"{where}: algorithm name {name!r} must be a Python identifier, e.g. 'my_alg'")
        if not dataclasses.is_dataclass(cls):
            raise AlgorithmError(f"{where}: {cls.__name__} must be a @dataclass (its fields are the hyper-parameters); "
                                 "put @dataclass under @register(...)")
        if getattr(cls, "targets_from", None) not in TARGET_SOURCES:
            raise AlgorithmError(f"{where}: {cls.__name__}.targets_from = {getattr(cls, 'targets_from', None)!r}; "
                                 f"expected one of {TARGET_SOURCES}")
        views = getattr(cls, "unlabeled_views", None)
        if not isinstance(views, tuple) or not views or any(v not in VIEWS for v in views):
            raise AlgorithmError(f"{where}: {cls.__name__}.unlabeled_views = {views!r}; "
                                 f"expected a non-empty tuple of {VIEWS}, e.g. ('weak', 'strong')")
        if not callable(getattr(cls, "loss", None)):
            raise AlgorithmError(f"{where}: {cls.__name__} has no loss(self, student, teacher, batch) method")
        if name in _REGISTRY and _source_file(_REGISTRY[name]) != where:
            raise AlgorithmError(f"{where}: algorithm name {name!r} is already registered by "
                                 f"{_source_file(_REGISTRY[name])}; pick another name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_file(path: Path) -> None:
    module_name = f"ssl_bench_algorithms.{path.stem}"
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AlgorithmError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except AlgorithmError:
        del sys.modules[module_name]
        raise
    except Exception as exc:  # a broken plug-in is a loud error naming the file, never a silent skip
        del sys.modules[module_name]
        raise AlgorithmError(f"{path}: importing the algorithm file failed: {type(exc).__name__}: {exc}") from exc


def algorithm_dirs() -> list[Path]:
    """Folders searched for ``--alg NAME``: ``./algorithms`` (the user's) then the suite's ``algorithms/``."""
    dirs = [Path.cwd() / "algorithms", _REPO_ALGORITHMS]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def available_algorithms() -> list[str]:
    """Names of every algorithm file in the searched folders (without importing them)."""
    return sorted({p.stem for d in algorithm_dirs() for p in d.glob("*.py") if not p.name.startswith("_")})


def load_algorithm_class(name_or_path: str) -> type:
    """Find an algorithm by registered name (``fixmatch``) or by file (``path/to/my_alg.py``).

    A name is looked up as ``algorithms/<name>.py``; the file must register an algorithm under that
    name. A path is imported and must register exactly one algorithm.
    """
    if name_or_path.endswith(".py"):
        path = Path(name_or_path).resolve()
        if not path.is_file():
            raise AlgorithmError(f"--alg {name_or_path!r}: no such file; pass an existing .py file or a name from "
                                 f"{available_algorithms()}")
        before = {n: c for n, c in _REGISTRY.items()}
        _import_file(path)
        mine = [n for n, c in _REGISTRY.items() if _source_file(c) == str(path)]
        new = [n for n in mine if before.get(n) is not _REGISTRY[n]] or mine
        if len(new) != 1:
            raise AlgorithmError(f"{path}: expected exactly one @register(...) algorithm in the file, found {new or 'none'}; "
                                 "decorate your class with @register('my_alg')")
        return _REGISTRY[new[0]]
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path]
    for d in algorithm_dirs():
        path = (d / f"{name_or_path}.py").resolve()
        if path.is_file():
            _import_file(path)
            if name_or_path not in _REGISTRY:
                raise AlgorithmError(f"{path}: the file registers no algorithm named {name_or_path!r}; "
                                     f"add @register({name_or_path!r}) above the class")
            return _REGISTRY[name_or_path]
    raise AlgorithmError(f"unknown algorithm {name_or_path!r}; valid choices: {available_algorithms()} "
                         "or a path to your own file (--alg path/to/my_alg.py)")


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


def build_algorithm(name_or_path: str, overrides: dict[str, str] | None = None) -> Any:
    """Instantiate an algorithm with its paper defaults, overridden by ``--alg-arg key=value`` strings.

    Unknown keys raise (they are never silently ignored).
    """
    cls = load_algorithm_class(name_or_path)
    defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise AlgorithmError(f"--alg-arg {key}=...: {cls.__name__} has no hyper-parameter {key!r}; "
                                 f"valid keys: {sorted(defaults)}")
        kwargs[key] = _coerce(value, defaults[key], key, cls)
    return cls(**kwargs)


def hyperparameters(algorithm: Any) -> dict[str, Any]:
    """The algorithm's resolved hyper-parameters, for the run record."""
    return dataclasses.asdict(algorithm)


def check_losses(result: Any, algorithm: Any) -> Losses:
    """Validate what ``loss`` returned, naming the algorithm's file when it is wrong."""
    where = f"{_source_file(type(algorithm))}: {type(algorithm).__name__}.loss"
    if not isinstance(result, Losses):
        raise AlgorithmError(f"{where} returned {type(result).__name__}; expected ssl_bench.algorithm.Losses(total=...)")
    if not isinstance(result.total, Tensor) or result.total.dim() != 0:
        raise AlgorithmError(f"{where} returned Losses.total = {type(result.total).__name__} "
                             f"{getattr(result.total, 'shape', '')}; expected a scalar torch.Tensor")
    if not result.total.requires_grad:
        raise AlgorithmError(f"{where}: Losses.total carries no gradient; compute it from the student's outputs "
                             "(the teacher's outputs and the targets are constants)")
    return result


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze or unfreeze a module (the teacher is always frozen: only the smoother changes it)."""
    for p in module.parameters():
        p.requires_grad_(flag)


def teacher_forward(teacher: nn.Module, x: Tensor) -> Tensor:
    """The teacher's logits as constants (no graph): targets never carry gradient."""
    with torch.no_grad():
        return teacher(x)
