"""Run directories and run records: one directory per run, never overwritten, every write atomic.

The layout and the ``record.json`` schema are described in ``docs/CONTRACTS.md``. :class:`RunRecord` is the
only writer and reader of ``record.json``; the leaderboard is derived from these records alone.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
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

from ssl_bench.atomic import atomic_write_bytes, read_regular_file
from ssl_bench.errors import UserError
from ssl_bench.run import lock

# Where run directories go unless --results-dir says otherwise (every command's default, declared here once).
# Not ``results/``: that folder holds the committed reference records, and a run started inside a checkout must
# leave it clean (``runs/`` is git-ignored). Point --results-dir at results/ to add to the committed records.
DEFAULT_RESULTS_DIR = "runs"
REFERENCE_RESULTS_DIR = "results"   # the committed records of "Results measured here" (README)
# The files of a run directory (docs/CONTRACTS.md).
RECORD_FILE = "record.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
# 2: lr, momentum, weight_decay, strong_augment, hflip, training, teacher, train_size; statuses interrupted.
# 3: ``settings`` (every identifying setting of the run, resolved: RunConfig.identity()) replaces the flat
#    copies of those settings listed in LEGACY_SETTING_FIELDS; amp, channels_last and compile are recorded.
SCHEMA_VERSION = 3
# The settings readers compute with, and their types: checked on reading, so a hand-edited record is refused
# with one line instead of failing inside a table. Schema-1/2 records stored exactly these as top-level fields;
# reading them moves them into ``settings``.
SETTING_TYPES: dict[str, Any] = {
    "smooth": str, "granularity": str | None, "p": float | None, "m": float | None, "buffers": str | None,
    "labels": int, "seed": int, "split_seed": int | None, "profile": str, "steps": int, "model": str,
    "batch_size": int | None, "mu": int | None, "eval_every": int | None, "lr": float | None,
    "momentum": float | None, "weight_decay": float | None, "strong_augment": str | None,
    "amp": bool | None, "channels_last": bool | None, "compile": bool | None,
}
LEGACY_SETTING_FIELDS = tuple(name for name in SETTING_TYPES if name not in ("amp", "channels_last", "compile"))
# What schema-1/2 records did not store, read as the values every run had before they could be changed.
LEGACY_DEFAULTS = {"amp": False, "channels_last": False, "compile": False}
# The official FixMatch reports the median of the last 20 evaluations (FixMatch paper, Sec. 4).
MEDIAN_WINDOW = 20


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


# Readers refuse what no run writes, so one hand-edited or damaged record is skipped with a note instead of
# failing inside a table: nesting deeper than a record's own (which is 3), integers beyond 64 bits.
MAX_JSON_DEPTH = 16
MAX_INT = 2**63 - 1
# results keys that are top-1 accuracies in percent (summarize_evaluations writes them)
ACCURACY_KEYS = frozenset(f"{who}_{stat}" for who in ("teacher", "student")
                          for stat in ("median_last20", "best", "last", "corruption_mean"))


def loads_json(data: bytes) -> Any:
    """Parse JSON bytes; ``ValueError`` for bad UTF-8, bad JSON, nesting deeper than ``MAX_JSON_DEPTH`` or an
    integer of more than 64 bits (also 4300-digit ones, which Python refuses to convert)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"JSON nested deeper than Python can read (limit {MAX_JSON_DEPTH})") from None
    _check_plain(value, 0)
    return value


def _check_plain(value: Any, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ValueError(f"integer of {len(str(value))} digits, beyond 64 bits")
    if isinstance(value, dict):
        for v in value.values():
            _check_plain(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v, depth + 1)


def read_json(path: Path) -> Any:
    """A small JSON file of a results folder: a regular file (``read_regular_file``), plain and shallow JSON."""
    return loads_json(read_regular_file(Path(path)))


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
    for metric in ("ece", "nll"):   # the final teacher's calibration (runs before schema 3 have none)
        values = [h[f"teacher_{metric}"] for h in history if h.get(f"teacher_{metric}") is not None]
        if values:
            out[f"teacher_{metric}_last"] = float(values[-1])
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


class RecordError(UserError):
    """An unusable ``record.json`` (corrupt, partial, unknown schema); one line naming file and fix."""

    problem: str | None = None   # what is wrong, without the advice (set for out-of-range and mistyped values)


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
    # Every identifying setting of the run as RunConfig resolved it (``RunConfig.identity()``: algorithm,
    # dataset, labels, seed, profile, model, smoothing, budget, amp, ...): the leaderboard's cells key on it.
    # Read as attributes too: ``record.labels`` is ``record.settings["labels"]``.
    settings: dict[str, Any] = _stored()
    training: str | None = _stored()   # id of the training this run shares with other teacher variants
    teacher: str | None = _stored()    # this variant's label within that training
    dataset: str = _stored()
    dataset_kind: str = _stored()
    dataset_family: str | None = _stored()
    dataset_fingerprint: str | None = _stored()
    train_size: int | None = _stored()   # training images: a budget equal to it is the fully-labelled ceiling
    split_hash: str | None = _stored()
    steps_done: int | None = _stored()
    hflip: bool | None = _stored()
    algorithm_sha256: str | None = _stored()   # of the algorithm's file: a plug-in edited later is told apart
    # The teacher's smoothing as one value (SmoothingSpec.to_record(): {"strategy": name, "settings": {...}}), so
    # readers need no registry (a plug-in strategy is never imported to read its record); the sha256 of a plug-in
    # strategy's file (None for a built-in), so an edited plug-in is another row.
    smoothing: dict[str, Any] | None = _stored()
    smoothing_sha256: str | None = _stored()
    results: dict[str, Any] | None = _stored()
    # The end-of-training corruption evaluation: {"set": "synthetic-c" | "cifar10-c" | ..., "step": N,
    # "teacher": {"mean", "severity1".."severity5", <corruption>: top-1 %}, "student": {...}} (None: not run).
    corruption: dict[str, Any] | None = _stored()
    versions: dict[str, Any] | None = _stored()
    device: str | None = _stored()
    commit: str | None = _stored()
    command: str | None = _stored()
    started: str | None = _stored()
    finished: str | None = _stored()
    wall_seconds: float | None = _stored()
    data_parallel: list[dict[str, Any]] | None = _stored()
    run_dir: Path | None = field(default=None, compare=False, repr=False, metadata={"stored": False})

    def __getattr__(self, name: str) -> Any:
        # Only called when ``name`` is not a field: a setting of the run (``record.labels``, ``record.smooth``).
        settings = self.__dict__.get("settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__!r} has no field or setting {name!r}")

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
        # lexists: a FIFO, a link or a folder named record.json is there, and reading it says why it is refused
        return os.path.lexists(cls.path(run_dir))

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunRecord:
        """The record of ``run_dir``; :class:`RecordError` (one line: file, problem, fix) if unusable."""
        path = cls.path(run_dir)
        try:
            data = loads_json(read_regular_file(path))
        except FileNotFoundError:
            raise RecordError(f"{path}: no run record there; is {Path(run_dir)} a run directory?") from None
        except OSError as exc:
            raise RecordError(f"{path} cannot be read ({exc.strerror or exc}); check that it is a regular file "
                              "you may read") from None
        except ValueError as exc:   # bad UTF-8, bad JSON, too deep, too large an integer
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
            raise UserError(f"RunRecord {self.run_id!r} has no run directory to be written to")
        if self.status is RunStatus.STALE:
            raise UserError("status 'stale' is never written: a reader reports a dead 'running' run so")
        path = self.path(where)
        stored = self.to_dict()
        # what every reader would refuse is never written: the run fails now, naming the value, instead of
        # leaving a record the leaderboard skips
        try:
            type(self).from_dict(json.loads(json.dumps(stored, default=_json_default)), run_dir=Path(where))
        except RecordError as exc:
            raise RecordError(f"refusing to write {path}: the record {getattr(exc, 'problem', exc)}, which every "
                              "reader would refuse; a setting or result out of range (the algorithm's reference "
                              "or its loss?)") from None
        atomic_write_json(path, stored)
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
        unknown = sorted(set(data) - known - {"schema"} - (set(LEGACY_SETTING_FIELDS) if schema < 3 else set()))
        if unknown:
            raise RecordError(_broken(where, f"has unknown fields {unknown} for schema {schema}"))
        values = {"run_id": run_dir.name if run_dir is not None else None}
        values.update({k: v for k, v in data.items() if k != "schema"})
        if schema < 3:   # the settings were top-level fields
            flat = {k: values.pop(k) for k in LEGACY_SETTING_FIELDS if k in values}
            values["settings"] = {**LEGACY_DEFAULTS, **flat}
        elif not isinstance(values.get("settings"), dict):
            raise RecordError(_broken(where, "has no settings object (schema 3 records carry one)"))
        try:
            typed = {name: _typed(name, values.get(name)) for name in known}
            typed["settings"] = {**typed["settings"], **{name: _typed_as(name, hint, typed["settings"].get(name))
                                                         for name, hint in SETTING_TYPES.items()}}
            _check_ranges(typed)
        except ValueError as exc:
            error = RecordError(_broken(where, str(exc)))
            error.problem = str(exc)   # without the reader's advice, for the writer's message
            raise error from None
        return cls(**typed, run_dir=run_dir)

    # -- status

    def effective_status(self, run_dir: str | os.PathLike | None = None) -> RunStatus:
        """``STALE`` for a ``RUNNING`` run whose lock holder is gone (killed, out of memory); else ``status``.

        A running record without a lock file is stale too: a training takes its lock before its first record
        and removes it only after its last write, so the lock is gone only when that last write failed (a full
        disk) or the lock was removed by hand.
        """
        where = run_dir if run_dir is not None else self.run_dir
        if self.status is not RunStatus.RUNNING or where is None:
            return self.status
        return RunStatus.RUNNING if lock.holder_alive(Path(where)) else RunStatus.STALE


def _stored_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(RunRecord) if f.metadata.get("stored"))


def _broken(path: Path, problem: str) -> str:
    return (f"{path} {problem}; delete this record.json and re-run the same command with --resume (the "
            "checkpoint, if any, is kept), or move the run directory out of the results folder")


def _check_ranges(typed: dict[str, Any]) -> None:
    """Values no run writes: settings outside the run options' bounds (``RunConfig``'s field table),
    accuracies outside 0-100 or not finite, a step count beyond the run's steps or a "finished" run short of
    them. ``ValueError`` naming the field and the value."""
    from ssl_bench.config import run_settings  # here: ssl_bench.config imports this module

    settings = typed["settings"]
    for f in run_settings():
        value = settings.get(f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"has {f.name} = {value!r}, not a finite number")
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = f.metadata["minimum"], f.metadata["maximum"]
            if (low is not None and value < low) or (high is not None and value > high):
                raise UserError(f"has {f.name} = {value!r}, outside the range [{low}, {high}] of {f.name}")
    for name, value in (typed["results"] or {}).items():
        if name in ACCURACY_KEYS and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 100.0):
            raise UserError(f"has results.{name} = {value!r}, not an accuracy in percent (0 to 100)")
    for name, high in (("teacher_ece_last", 1.0), ("teacher_nll_last", math.inf)):   # a fraction; nats
        value = (typed["results"] or {}).get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or not 0.0 <= value <= high):
            raise UserError(f"has results.{name} = {value!r}, outside 0 to {high}")
    steps, done = settings.get("steps"), typed["steps_done"]
    if done is not None:
        if done < 0 or (steps is not None and done > steps):
            raise UserError(f"has steps_done = {done}, outside 0 to the run's {steps} steps")
        if typed["status"] is RunStatus.FINISHED and steps is not None and done != steps:
            raise UserError(f"says finished at step {done} of {steps}")
    if typed["train_size"] is not None and typed["train_size"] < 1:
        raise UserError(f"has train_size = {typed['train_size']}, expected >= 1")


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
    return _typed_as(name, _hint(name), value)


def _typed_as(name: str, hint: Any, value: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise UserError(f"lacks the required field {name!r}")
    base = next(t for t in options if t is not type(None))
    kind = typing.get_origin(base) or base
    if kind is RunStatus:
        try:
            return RunStatus(value)
        except ValueError:
            allowed = [s.value for s in RunStatus if s is not RunStatus.STALE]
            raise UserError(f"has status {value!r}, not one of {allowed}") from None
    if isinstance(value, bool) and kind is not bool:
        raise UserError(f"has {name} = {value!r}, expected a {kind.__name__}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        raise UserError(f"has {name} = {value!r} ({type(value).__name__}), expected a {kind.__name__}")
    return value
