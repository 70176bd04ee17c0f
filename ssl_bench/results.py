"""Run directories and run records: one directory per run, never overwritten, every write atomic.

The layout and the ``record.json`` schema are described in ``docs/CONTRACTS.md``. :class:`RunRecord` is the
only writer and reader of ``record.json``; the leaderboard is derived from these records alone.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import secrets
import subprocess
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ssl_bench
from ssl_bench import lock
from ssl_bench.data.imagefolder import PREFIX as IMAGEFOLDER_PREFIX  # run directory names of imagefolder:PATH
from ssl_bench.data.imagefolder import short_name as imagefolder_short_name
from ssl_bench.smoothing import PARAMETER_DEFAULTS, STRATEGY_PARAMETERS

# The files of a run directory (docs/CONTRACTS.md).
RECORD_FILE = "record.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
# 2: lr, momentum, weight_decay, strong_augment, hflip, training, teacher, train_size; statuses interrupted.
SCHEMA_VERSION = 2
# The official FixMatch reports the median of the last 20 evaluations (FixMatch paper, Sec. 4).
MEDIAN_WINDOW = 20


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a killed writer never leaves half a file.

    The temporary file is created with mode 0666 filtered by the process umask, like any file a program
    creates (``tempfile.mkstemp`` would make it 0600, unreadable to colleagues sharing a results folder).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # another writer drew the same name: draw again
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a run record")


def atomic_write_csv(path: Path, rows: Sequence[dict[str, Any]], first_columns: Sequence[str]) -> None:
    """Write rows as CSV with ``first_columns`` first and any other keys after them, in first-seen order."""
    columns = list(first_columns)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def run_base_name(config: Any) -> str:
    """Human-readable stem of a run directory: algorithm, smoothing, data, budget, seed and profile."""
    reads = STRATEGY_PARAMETERS.get(config.smooth, ())
    smooth = config.smooth
    if "granularity" in reads and config.granularity != PARAMETER_DEFAULTS["granularity"]:
        smooth += f"_{config.granularity}"
    if "p" in reads and config.p != PARAMETER_DEFAULTS["p"]:
        smooth += f"_p{config.p}"
    dataset = Path(config.dataset).stem if config.dataset.endswith(".npz") else config.dataset
    if dataset.startswith(IMAGEFOLDER_PREFIX):  # imagefolder:PATH[@SIZE] holds a path: not a directory name
        dataset = imagefolder_short_name(dataset)
    algorithm = Path(config.algorithm).stem
    return f"{algorithm}-{smooth}-{dataset}-{config.labels}-s{config.seed}-{config.profile}"


def create_run_dir(results_dir: Path, base: str) -> Path:
    """Create a new, empty run directory ``base``, ``base-2``, ``base-3``, ...; never reuse an existing one.

    ``os.mkdir`` is atomic, so two runs that start at the same moment get different directories.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        path = results_dir / (base if k == 1 else f"{base}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"more than 10000 runs named {base!r} in {results_dir}")


def find_runs(results_dir: Path, base: str) -> list[Path]:
    """Existing run directories for the same settings, oldest first."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    def numbered(name: str) -> bool:
        return name.startswith(base + "-") and name[len(base) + 1:].isdigit()

    found = [p for p in results_dir.iterdir() if p.is_dir() and (p.name == base or numbered(p.name))]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def git_commit() -> str | None:
    """The commit of the ssl-bench checkout, with ``+dirty`` when it has uncommitted changes."""
    repo = Path(ssl_bench.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    return {"ssl_bench": ssl_bench.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(["python", *sys.argv]) if sys.argv and sys.argv[0] else ""


def summarize_evaluations(history: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Both evaluation conventions, named as such.

    ``*_median_last20``: median of the last 20 evaluations (official FixMatch). ``*_best``: best
    accuracy seen (USB / TorchSSL; chosen on the test set, so optimistic). ``*_last``: final evaluation.
    """
    history = list(history)
    out: dict[str, Any] = {"num_evals": len(history)}
    for who in ("teacher", "student"):
        accs = [h[f"{who}_acc"] for h in history]
        if not accs:
            out.update({f"{who}_median_last20": None, f"{who}_best": None, f"{who}_last": None})
            continue
        out[f"{who}_median_last20"] = float(np.median(accs[-MEDIAN_WINDOW:]))
        out[f"{who}_best"] = float(max(accs))
        out[f"{who}_last"] = float(accs[-1])
    return out


# ----------------------------------------------------------------------------------------------------
# The run record


class RunStatus(str, Enum):
    """Where a run is. ``STALE`` is never written: a reader reports a ``RUNNING`` record as stale when
    the process holding the run's lock is gone (see :meth:`RunRecord.effective_status`)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"            # an error (divergence, out of memory, a bug): ``error`` says which
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: resumable with --resume
    STALE = "stale"


class RecordError(ValueError):
    """An unusable ``record.json`` (corrupt, partial, unknown schema); one line naming file and fix."""


def _stored() -> Any:
    """A field written to ``record.json`` (``None`` until set; required fields are checked after init)."""
    return field(default=None, metadata={"stored": True})


@dataclass(kw_only=True)
class RunRecord:
    """One run's ``record.json`` (schema in docs/CONTRACTS.md): what ran, where it is, and its results.

    Fields without a default are required in every record; the others are ``None`` when unknown (records
    of an older schema read with the fields they lacked set to ``None``). Accuracies are top-1 in percent.
    ``run_dir`` is where the record was read from; it is not stored.
    """

    run_id: str = _stored()
    status: RunStatus = _stored()
    error: str | None = _stored()
    algorithm: str = _stored()
    alg_args: dict[str, Any] | None = _stored()       # the algorithm's effective hyper-parameters
    alg_overrides: dict[str, Any] | None = _stored()  # those given with --alg-arg
    targets_from: str | None = _stored()
    smooth: str = _stored()
    granularity: str | None = _stored()
    p: float | None = _stored()
    m: float | None = _stored()
    buffers: str | None = _stored()
    training: str | None = _stored()   # id of the training this run shares with other teacher variants
    teacher: str | None = _stored()    # this variant's label within that training
    dataset: str = _stored()
    dataset_kind: str = _stored()
    dataset_family: str | None = _stored()
    dataset_fingerprint: str | None = _stored()
    train_size: int | None = _stored()   # training images: a budget equal to it is the fully-labelled ceiling
    labels: int = _stored()
    seed: int = _stored()
    split_seed: int | None = _stored()
    split_hash: str | None = _stored()
    profile: str = _stored()
    steps: int = _stored()
    steps_done: int | None = _stored()
    model: str = _stored()
    batch_size: int | None = _stored()
    mu: int | None = _stored()
    eval_every: int | None = _stored()
    lr: float | None = _stored()
    momentum: float | None = _stored()
    weight_decay: float | None = _stored()
    strong_augment: str | None = _stored()
    hflip: bool | None = _stored()
    algorithm_sha256: str | None = _stored()   # of the algorithm's file: a plug-in edited later is told apart
    results: dict[str, Any] | None = _stored()
    versions: dict[str, Any] | None = _stored()
    device: str | None = _stored()
    commit: str | None = _stored()
    command: str | None = _stored()
    started: str | None = _stored()
    finished: str | None = _stored()
    wall_seconds: float | None = _stored()
    data_parallel: list[dict[str, Any]] | None = _stored()
    run_dir: Path | None = field(default=None, compare=False, repr=False, metadata={"stored": False})

    def __post_init__(self) -> None:
        missing = [f.name for f in _stored_fields() if _is_required(f.name) and getattr(self, f.name) is None]
        if missing:
            raise TypeError(f"RunRecord needs {', '.join(missing)}")
        self.status = RunStatus(self.status)

    # -- files

    @staticmethod
    def path(run_dir: str | os.PathLike) -> Path:
        """Where the record of ``run_dir`` lives."""
        return Path(run_dir) / RECORD_FILE

    @classmethod
    def exists(cls, run_dir: str | os.PathLike) -> bool:
        return cls.path(run_dir).is_file()

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunRecord:
        """The record of ``run_dir``; :class:`RecordError` (one line: file, problem, fix) if unusable."""
        path = cls.path(run_dir)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise RecordError(f"{path}: no run record there; is {Path(run_dir)} a run directory?") from None
        except OSError as exc:
            raise RecordError(f"{path} cannot be read ({exc.strerror or exc}); check that it is a file you may "
                              "read") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(_broken(path, f"cannot be read as JSON ({exc})")) from None
        return cls.from_dict(data, run_dir=Path(run_dir))

    @classmethod
    def read_if_present(cls, run_dir: str | os.PathLike) -> RunRecord | None:
        """The record of ``run_dir``, or ``None`` when the run has none yet (killed before its first)."""
        return cls.read(run_dir) if cls.exists(run_dir) else None

    def write(self, run_dir: str | os.PathLike | None = None) -> Path:
        """Write ``record.json`` atomically into ``run_dir`` (default: ``self.run_dir``); returns its path."""
        where = run_dir if run_dir is not None else self.run_dir
        if where is None:
            raise ValueError(f"RunRecord {self.run_id!r} has no run directory to be written to")
        if self.status is RunStatus.STALE:
            raise ValueError("status 'stale' is never written: a reader reports a dead 'running' run so")
        path = self.path(where)
        atomic_write_json(path, self.to_dict())
        self.run_dir = Path(where)
        return path

    # -- conversion

    def to_dict(self) -> dict[str, Any]:
        """The stored form: plain JSON types, ``schema`` first."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION}
        for f in _stored_fields():
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, RunStatus) else value
        return out

    @classmethod
    def from_dict(cls, data: Any, *, run_dir: Path | None = None) -> RunRecord:
        """Validate and type a stored record; older schemas are migrated (missing fields become ``None``)."""
        where = cls.path(run_dir) if run_dir is not None else Path(RECORD_FILE)
        if not isinstance(data, dict):
            raise RecordError(_broken(where, f"is a JSON {type(data).__name__}, not an object"))
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= SCHEMA_VERSION:
            raise RecordError(f"{where}: unknown record schema {schema!r} (this ssl-bench reads 1 to "
                              f"{SCHEMA_VERSION}); upgrade ssl-bench if a newer version wrote it, else "
                              "delete the record and re-run the same command with --resume")
        known = {f.name for f in _stored_fields()}
        unknown = sorted(set(data) - known - {"schema"})
        if unknown:
            raise RecordError(_broken(where, f"has unknown fields {unknown} for schema {schema}"))
        values = {"run_id": run_dir.name if run_dir is not None else None}
        values.update({k: v for k, v in data.items() if k != "schema"})
        try:
            typed = {name: _typed(name, values.get(name)) for name in known}
        except ValueError as exc:
            raise RecordError(_broken(where, str(exc))) from None
        return cls(**typed, run_dir=run_dir)

    # -- status

    def effective_status(self, run_dir: str | os.PathLike | None = None) -> RunStatus:
        """``STALE`` for a ``RUNNING`` run whose lock holder is gone (killed, out of memory); else ``status``.

        A running record without a lock file (written before runs held locks) stays ``RUNNING``.
        """
        where = run_dir if run_dir is not None else self.run_dir
        if self.status is not RunStatus.RUNNING or where is None:
            return self.status
        return RunStatus.STALE if lock.holder_alive(Path(where)) is False else RunStatus.RUNNING


def _stored_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(RunRecord) if f.metadata.get("stored"))


def _broken(path: Path, problem: str) -> str:
    return (f"{path} {problem}; delete this record.json and re-run the same command with --resume (the "
            "checkpoint, if any, is kept), or move the run directory out of the results folder")


_HINTS: dict[str, Any] = {}


def _hint(name: str) -> Any:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(RunRecord))
    return _HINTS[name]


def _is_required(name: str) -> bool:
    hint = _hint(name)
    return not (isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint))


def _typed(name: str, value: Any) -> Any:
    """``value`` checked against the field's type (ints as floats are fine; bools are not numbers)."""
    hint = _hint(name)
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"lacks the required field {name!r}")
    base = next(t for t in options if t is not type(None))
    kind = typing.get_origin(base) or base
    if kind is RunStatus:
        try:
            return RunStatus(value)
        except ValueError:
            allowed = [s.value for s in RunStatus if s is not RunStatus.STALE]
            raise ValueError(f"has status {value!r}, not one of {allowed}") from None
    if isinstance(value, bool) and kind is not bool:
        raise ValueError(f"has {name} = {value!r}, expected a {kind.__name__}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        raise ValueError(f"has {name} = {value!r} ({type(value).__name__}), expected a {kind.__name__}")
    return value
