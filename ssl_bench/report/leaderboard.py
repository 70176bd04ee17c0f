"""Leaderboard tables, derived only from the run records ``results/*/record.json`` (``RunRecord``).

There is no second source of truth: every table is rebuilt from the run records and the paper's Table 6
(``ssl_bench.report.paper``), so it can be regenerated at any time, also while runs are still writing records.
Rendering is ``ssl_bench.report.render``, paired comparisons ``ssl_bench.report.compare``, the commands
``ssl_bench.report.cli``.

Layout (like Table 6 of Huang et al., "Spatial Ensemble", NeurIPS 2021):

* one **section** per (profile, dataset, dataset kind, model, steps): runs of different budgets, data,
  models or lengths are never averaged together; sections are ordered by budget, best first
  (``full > short > cpu > smoke``, unknown profiles after, alphabetically);
* one **row** per algorithm x smoothing strategy x the settings that strategy reads (granularity, p, m,
  buffers) x the run's deviations from the reference settings (``ssl_bench.report.paper.deviations``). Rows with
  different settings never merge; the label shows every setting that differs from the paper's. The
  ``supervised`` baseline (labelled loss only) is a row like any other, listed first; its runs with every
  training label (the fully-labelled ceiling) are kept apart from the budget columns;
* one **column** per label budget of the dataset family (CIFAR-10: 20/40/250/4000, CIFAR-100:
  200/400/2500/10000, plus any other budget that was run);
* each **cell**: the teacher's top-1 over seeds and, for runs in the paper configuration, the paper's number.

Runs that share one training (several teachers of one student: the ``training`` field) are ordinary rows.
Failed, interrupted, running and stale runs are listed apart and never averaged in. When the same seed of
the same cell finished more than once, the run that finished last is kept and the others are listed as
superseded. Unreadable records are reported, never fatal.

The statistic is ``teacher_median_last20`` (median of the teacher's last 20 evaluations, the official
FixMatch protocol) or, with ``stat="best"``, ``teacher_best`` (best evaluation, the USB/TorchSSL
convention, optimistic); every header says which.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from ssl_bench.config import PROFILES, TEACHER_SETTINGS
from ssl_bench.errors import UserError
from ssl_bench.records import DEFAULT_RESULTS_DIR, RECORD_FILE, RecordError, RunRecord, RunStatus
from ssl_bench.report.paper import (
    PAPER_SMOOTHING,
    deviations,
    is_paper_configuration,
    load_paper_table,
    paper_columns,
    paper_number,
    paper_statistic,
    same_value,
)
from ssl_bench.report.stats import mean, sample_std
from ssl_bench.smoothing import GRANULARITIES, STRATEGIES, relevant_settings, strategy_class, strategy_settings

STATS = {"median": "teacher_median_last20", "best": "teacher_best", "last": "teacher_last",
         "ece": "teacher_ece_last", "nll": "teacher_nll_last", "corruption": "teacher_corruption_mean"}
STAT_DESCRIPTIONS = {
    "teacher_median_last20": "teacher top-1, median of the last 20 evaluations (official FixMatch protocol)",
    "teacher_best": "teacher top-1, best evaluation during training (USB/TorchSSL convention; optimistic)",
    "teacher_last": "teacher top-1 at the end of training (the Spatial Ensemble paper's own FixMatch rows)",
    "teacher_ece_last": "the final teacher's expected calibration error (15 equal-width bins, fraction; lower is "
                        "better)",
    "teacher_nll_last": "the final teacher's negative log-likelihood on the test set (nats per image; lower is "
                        "better)",
    "teacher_corruption_mean": "the final teacher's mean top-1 over its corrupted test set (record.corruption.set: "
                               "synthetic-c, 5 torch-made corruptions x 5 severities, is not CIFAR-10-C)",
}
# The labelled-only baseline, registered under this name by algorithms/supervised.py.
SUPERVISED = "supervised"
PROFILE_ORDER = tuple(PROFILES)  # budget, best first: the order config.PROFILES declares them in
# The smoke profile measures nothing (ssl_bench/config.py): its sections need no baseline.
UNMEASURED_PROFILES = ("smoke",)
# Rows: the baseline first, then the paper's Table 6 order; strategies and granularities as smoothing.py
# lists them (none, tma, se, sts; layer, channel, neuron).
ALGORITHM_ORDER = (SUPERVISED, *dict.fromkeys(row["algorithm"] for row in load_paper_table()["rows"]))
SMOOTH_ORDER = STRATEGIES
GRANULARITY_ORDER = GRANULARITIES
# Record fields outside the run's settings that should also agree within one cell (a plug-in's effective
# hyper-parameters, the data's mirror symmetry).
SETUP_FIELDS = ("alg_args", "targets_from", "hflip")
# The settings that place a run in its section, row, column and seed (the smoothing axes are the row's own
# fields). Every other identifying setting of the record (batch, mu, lr, amp, compile, ...) is part of the row
# key, so no two runs with different identifying settings share a cell.
PLACED_SETTINGS = frozenset({"algorithm", "alg_args", "dataset", "labels", "seed", "profile", "model", "steps",
                             *TEACHER_SETTINGS})
# What a run's numbers depend on beyond its settings (ssl_bench.run.rundirs.CONTENT_FIELDS): part of the row's
# setup, so runs of an edited plug-in or of another data file with the same name are another row. The sha256 of
# a built-in algorithm's file is not: it changes with every ssl-bench release that touches the file, and the
# record's commit says which one ran.
CONTENT_SETTINGS = ("algorithm_sha256", "dataset_fingerprint", "smoothing_sha256")
# Shown in a row's label when they differ from these values (the reference's values are shown as deviations).
USUAL_SYSTEM_SETTINGS = {"amp": False, "channels_last": False, "compile": False}


class LeaderboardError(UserError):
    """A request the records cannot answer (nothing matches, bad option value); the message says why."""


# ----------------------------------------------------------------------------------------------------
# Keys: which runs are averaged together


class SectionKey(NamedTuple):
    """What must be equal for runs to be averaged: budget, data, model and length."""

    profile: str
    dataset: str
    dataset_kind: str
    dataset_family: str | None
    model: str
    steps: int


class RowKey(NamedTuple):
    """Algorithm x smoothing strategy; settings the strategy does not read are None."""

    algorithm: str
    smooth: str
    granularity: str | None = None
    p: float | None = None
    m: float | None = None
    buffers: str | None = None
    deviations: tuple[tuple[str, Any], ...] = ()   # (setting, value) where the run differs from the reference
    setup: tuple[tuple[str, Any], ...] = ()        # every other identifying setting (``setup_settings``)
    smoothing: tuple[tuple[str, Any], ...] = ()    # the strategy's other settings (schedule, swa's start, ...)


def section_key(record: RunRecord) -> SectionKey:
    return SectionKey(record.profile, record.dataset, record.dataset_kind, record.dataset_family,
                      record.model, record.steps)


def plugin_smoothing(record: RunRecord) -> tuple[str, dict[str, Any]] | None:
    """A plug-in strategy's name and settings as its record states them (``record.smoothing``), or None when the
    record's strategy is a built-in or the record holds no usable statement. Never imports the plug-in."""
    spec = record.smoothing
    if record.smooth in STRATEGIES or not isinstance(spec, dict):
        return None
    name, settings = spec.get("strategy"), spec.get("settings")
    if not (isinstance(name, str) and name.isidentifier() and name not in STRATEGIES and isinstance(settings, dict)
            and all(isinstance(v, str | int | float | bool) for v in settings.values())):
        return None
    return name, dict(settings)


def strategy_of(record: RunRecord) -> str:
    """The strategy's name (a plug-in's registered name, not the path it was given by)."""
    plugin = plugin_smoothing(record)
    return record.smooth if plugin is None else plugin[0]


def smoothing_settings(record: RunRecord) -> dict[str, Any]:
    """The smoothing settings the run's strategy reads (TMA ignores p and the granularity, SE m, ...)."""
    plugin = plugin_smoothing(record)
    if plugin is not None:
        return plugin[1]
    settings = {**record.settings, **(record.settings.get("smooth_args") or {}),
                "granularity": record.granularity or PAPER_SMOOTHING["granularity"],
                "p": record.p, "m": record.m, "buffers": record.buffers or PAPER_SMOOTHING["buffers"]}
    settings = {k: v for k, v in settings.items() if v is not None}   # older records: the declared default
    return relevant_settings(record.smooth, settings)


def _plain(value: Any) -> Any:
    """A hashable, rounded form of a setting's value (floats to 6 digits, containers as JSON)."""
    if isinstance(value, float):
        return round(value, 6)
    if value is None or isinstance(value, str | int | bool):
        return value
    return json.dumps(value, sort_keys=True)


def setup_settings(record: RunRecord) -> tuple[tuple[str, Any], ...]:
    """The record's identifying settings that its section, row, column and seed do not already fix."""
    out = {name: _plain(value) for name, value in record.settings.items() if name not in PLACED_SETTINGS}
    if out.get("split_seed", None) in (None, record.seed):   # the default: the split follows the seed
        out.pop("split_seed")
    if record.algorithm_sha256 is not None and record.algorithm not in _builtin_names():
        out["algorithm_sha256"] = record.algorithm_sha256
    if record.dataset_fingerprint is not None:
        out["dataset_fingerprint"] = record.dataset_fingerprint
    if record.smoothing_sha256 is not None:   # a plug-in strategy's file
        out["smoothing_sha256"] = record.smoothing_sha256
    return tuple(sorted(out.items()))


@functools.cache
def _builtin_names() -> frozenset[str]:
    from ssl_bench.algorithm import builtin_algorithms  # here: only the rows need the registry

    return frozenset(builtin_algorithms())


def row_key(record: RunRecord) -> RowKey:
    """The row a run belongs to: its strategy's settings, its deviations from the reference, its setup."""
    settings = {name: _plain(value) for name, value in smoothing_settings(record).items()}
    others = tuple((k, v) for k, v in settings.items() if k not in ("granularity", "p", "m", "buffers"))
    return RowKey(record.algorithm, strategy_of(record), settings.get("granularity"), settings.get("p"),
                  settings.get("m"), settings.get("buffers"),
                  tuple(sorted((name, _plain(value)) for name, value in deviations(record).items())),
                  setup_settings(record), others)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def row_label(key: RowKey, show_content: Sequence[str] = ()) -> str:
    """``fixmatch · sts``, ``fixmatch · sts (channel, p=0.3)``, ``mixmatch · tma (m=0.99, mu=7)``.

    Shown: every strategy setting that differs from the paper's, then the deviations from the reference;
    then the short hashes of the ``show_content`` settings (``CONTENT_SETTINGS`` in which rows that agree on
    everything else differ).
    """
    extras = []
    if key.granularity is not None and key.granularity != PAPER_SMOOTHING["granularity"]:
        extras.append(key.granularity)
    for name in ("p", "m", "buffers"):
        value = getattr(key, name)
        if value is not None and not same_value(value, PAPER_SMOOTHING[name]):
            extras.append(f"{name}={_show(value)}")
    if key.smooth in STRATEGIES:   # a built-in's defaults are known; a plug-in's settings are all shown
        declared = strategy_settings(strategy_class(key.smooth)) if key.smoothing else {}
        extras += [f"{name}={_show(value)}" for name, value in key.smoothing
                   if name in declared and value != declared[name].default]
    else:
        extras += [f"{name}={_show(value)}" for name, value in key.smoothing]
    extras += [f"{name}={_show(value)}" for name, value in key.deviations]
    extras += [f"{name}={_show(value)}" for name, value in key.setup
               if (name in USUAL_SYSTEM_SETTINGS and value != USUAL_SYSTEM_SETTINGS[name]) or name == "split_seed"]
    if show_content:
        short = {"algorithm_sha256": "file", "dataset_fingerprint": "data", "smoothing_sha256": "smoother"}
        extras += [f"{short[name]} {str(value)[:8]}" for name, value in key.setup if name in show_content]
    label = f"{key.algorithm} · {key.smooth}"
    return f"{label} ({', '.join(extras)})" if extras else label


def section_title(key: SectionKey) -> str:
    return f"profile {key.profile} · {key.dataset} ({key.dataset_kind}) · {key.model} · {key.steps} steps"


def section_sort_key(key: SectionKey) -> tuple:
    rank = PROFILE_ORDER.index(key.profile) if key.profile in PROFILE_ORDER else len(PROFILE_ORDER)
    return (rank, key.profile, key.dataset_family or "", key.dataset, key.dataset_kind, key.model, -key.steps)


def _index(order: Sequence[str], value: str | None) -> int:
    return order.index(value) if value in order else len(order)


def row_sort_key(key: RowKey) -> tuple:
    return (
        _index(ALGORITHM_ORDER, key.algorithm), key.algorithm, len(key.deviations) > 0,
        _index(SMOOTH_ORDER, key.smooth), key.smooth,
        _index(GRANULARITY_ORDER, key.granularity), key.granularity or "",
        -1.0 if key.p is None else key.p, -1.0 if key.m is None else key.m,
        key.buffers not in (None, PAPER_SMOOTHING["buffers"]), key.buffers or "",
        tuple((name, str(value)) for name, value in key.deviations),
        tuple((name, str(value)) for name, value in key.smoothing),
    )


def is_ceiling(record: RunRecord) -> bool:
    """A ``supervised`` run with every training image labelled: the fully-labelled ceiling."""
    everything = record.train_size is not None and record.labels >= record.train_size
    return record.algorithm == SUPERVISED and everything


def setup_of(record: RunRecord) -> str:
    """The settings outside the section and row keys, which should also agree within one cell."""
    return json.dumps({name: getattr(record, name) for name in SETUP_FIELDS}, sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------------------
# Reading the records


@dataclass(frozen=True)
class Problem:
    """A record that could not be used, and why."""

    path: Path
    reason: str


def load_runs(results_dir: str | os.PathLike) -> tuple[list[RunRecord], list[Problem]]:
    """Every ``<results_dir>/<run_id>/record.json``, read; unreadable ones come back as problems.

    Only the exact name ``record.json`` is read, so the temporary files of a writer that is replacing a
    record right now are never seen; hidden directories are skipped.
    """
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise LeaderboardError(f"--results-dir {str(results_dir)!r} is a file, not a folder of run directories; "
                               "pass the folder the runs were written to")
    if not results_dir.is_dir():
        raise LeaderboardError(f"results directory {str(results_dir)!r} does not exist")
    runs: list[RunRecord] = []
    problems: list[Problem] = []
    for path in sorted(results_dir.glob(f"*/{RECORD_FILE}")):
        if path.parent.name.startswith("."):
            continue
        if path.parent.is_symlink():   # a results folder is read as data: its links lead nowhere
            problems.append(Problem(path, f"{path.parent} is a symbolic link, not a run directory; copy the run "
                                          "into the results folder instead of linking it"))
            continue
        try:
            record = RunRecord.read(path.parent)
        except (RecordError, ValueError, OSError, RecursionError) as exc:   # one bad record never spoils the table
            problems.append(Problem(path, str(exc)))
            continue
        if record.smooth not in STRATEGIES and plugin_smoothing(record) is None:
            known = ", ".join(STRATEGIES)
            problems.append(Problem(path, f"unknown smoothing strategy {record.smooth!r} (known: {known}; a "
                                          "plug-in's record must state it in its smoothing field)"))
            continue
        runs.append(record)
    return runs, problems


def select_runs(runs: Iterable[RunRecord], *, profile: str | None = None,
                dataset: str | None = None) -> list[RunRecord]:
    """The runs of one profile and/or dataset; a filter matching nothing is an error naming the choices."""
    runs = list(runs)
    for name, value in (("profile", profile), ("dataset", dataset)):
        if value is None:
            continue
        available = sorted({getattr(r, name) for r in runs})
        runs = [r for r in runs if getattr(r, name) == value]
        if not runs:
            present = ", ".join(available) or "(no records)"
            raise LeaderboardError(f"no run records with {name} {value!r}; {name}s present: {present}")
    return runs


def _finish_time(run: RunRecord) -> tuple[float, str]:
    for stamp in (run.finished, run.started):
        if stamp:
            try:
                return (datetime.fromisoformat(str(stamp)).timestamp(), run.run_id)
            except ValueError:
                pass
    return (-math.inf, run.run_id)


@dataclass(frozen=True)
class Superseded:
    """A finished run dropped because the same seed of the same cell finished again later."""

    run_id: str
    kept: str
    seed: int


Cells = dict[SectionKey, dict[RowKey, dict[int, list[RunRecord]]]]


def group_finished(runs: Iterable[RunRecord]) -> tuple[Cells, list[Superseded]]:
    """Finished runs grouped section -> row -> labels, one run per seed (the one that finished last)."""
    by_seed: dict[tuple[SectionKey, RowKey, int, int], list[RunRecord]] = {}
    for run in runs:
        if run.status is RunStatus.FINISHED:
            by_seed.setdefault((section_key(run), row_key(run), run.labels, run.seed), []).append(run)
    cells: Cells = {}
    superseded: list[Superseded] = []
    for (section, row, labels, seed), same in by_seed.items():
        same.sort(key=_finish_time)
        kept = same[-1]
        superseded += [Superseded(r.run_id, kept.run_id, seed) for r in same[:-1]]
        cells.setdefault(section, {}).setdefault(row, {}).setdefault(labels, []).append(kept)
    return cells, superseded


# ----------------------------------------------------------------------------------------------------
# The leaderboard


@dataclass
class Cell:
    labels: int
    seeds: list[int]
    values: list[float]
    run_ids: list[str]
    paper: float | None
    mixed_setup: bool = False
    stat: str | None = None   # the results key of ``values`` (the paper row's own beside a paper number)
    trainings: list[str | None] = field(default_factory=list)   # each seed's shared training, if any

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return mean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof = 1); None for fewer than two seeds."""
        return sample_std(self.values)

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))


@dataclass
class Row:
    key: RowKey
    cells: dict[int, Cell]
    # the CONTENT_SETTINGS in which another row of its section, alike in everything else, differs from it
    show_content: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return row_label(self.key, self.show_content)


def without_content(key: RowKey) -> RowKey:
    """``key`` without the algorithm file's and the data's hashes (to find rows that differ only in them)."""
    return key._replace(setup=tuple(item for item in key.setup if item[0] not in CONTENT_SETTINGS))


@dataclass
class Section:
    key: SectionKey
    columns: list[int]
    rows: list[Row]
    superseded: list[Superseded] = field(default_factory=list)
    ceilings: list[Row] = field(default_factory=list)   # supervised with every training label

    @property
    def title(self) -> str:
        return section_title(self.key)

    @property
    def has_supervised(self) -> bool:
        return any(row.key.algorithm == SUPERVISED for row in self.rows)

    @property
    def needs_baseline(self) -> bool:
        """A measuring section without the ``supervised`` baseline: SSL gains cannot be read there."""
        return self.key.profile not in UNMEASURED_PROFILES and not self.has_supervised

    def shared_trainings(self) -> dict[str, int]:
        """Shared training id -> how many of this section's runs it serves (those serving one left out)."""
        count: dict[str, int] = {}
        for row in self.rows:
            for cell in row.cells.values():
                for training in cell.trainings:
                    if training is not None:
                        count[training] = count.get(training, 0) + 1
        return {training: n for training, n in count.items() if n > 1}


@dataclass(frozen=True)
class NotCounted:
    """A run listed apart: failed, interrupted, running, stale, or finished without the statistic."""

    run: RunRecord
    status: RunStatus   # the effective status (stale: running, but its process is gone)
    reason: str


@dataclass
class Leaderboard:
    stat: str  # the results key, e.g. "teacher_median_last20"
    sections: list[Section]
    not_counted: list[NotCounted]
    problems: list[Problem]
    num_records: int
    command: str
    results_dir: str

    @property
    def stat_description(self) -> str:
        return STAT_DESCRIPTIONS.get(self.stat, self.stat)


def resolve_stat(stat: str) -> str:
    """``median``/``best`` (or the results key itself) -> the results key; anything else is an error."""
    if stat in STATS:
        return STATS[stat]
    if stat in STATS.values():
        return stat
    raise LeaderboardError(f"unknown statistic {stat!r}; choose one of: {', '.join(STATS)}")


def leaderboard_command(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, stat: str = "median",
                        profile: str | None = None, dataset: str | None = None) -> str:
    """The command line that rebuilds this leaderboard (written into its header)."""
    short = next((k for k, v in STATS.items() if v == resolve_stat(stat)), stat)
    parts = ["ssl-bench leaderboard", f"--results-dir {results_dir}", f"--stat {short}"]   # the installed command
    parts += [f"--profile {profile}"] if profile else []
    parts += [f"--dataset {dataset}"] if dataset else []
    return " ".join([*parts, "--write"])   # the command that rebuilds the written file


def _not_counted_reason(run: RunRecord, status: RunStatus) -> str:
    if status is RunStatus.STALE:
        return ("record says running, no live process holds its lock (killed, or a full disk?); resume it with "
                "--resume")
    if status is RunStatus.INTERRUPTED:
        return run.error or "interrupted; resume it with the same command and --resume"
    return run.error or f"status {status.value}"


def _cell(labels: int, runs: list[RunRecord], stat: str, skey: SectionKey, rkey: RowKey) -> Cell:
    runs = sorted(runs, key=lambda r: r.seed)
    paper = None
    if all(is_paper_configuration(r, smoothing_settings(r)) for r in runs):
        paper = paper_number(rkey.algorithm, rkey.smooth, skey.dataset_family, labels)
    # Beside a paper number, the default statistic gives way to the paper row's own (the final teacher for
    # the paper's FixMatch rows), so both numbers were read off a training the same way.
    if paper is not None and stat == STATS["median"]:
        row_stat = paper_statistic(rkey.algorithm, rkey.smooth)
        if all(row_stat in (r.results or {}) for r in runs):
            stat = row_stat
    return Cell(labels=labels, seeds=[r.seed for r in runs], values=[float(r.results[stat]) for r in runs],
                run_ids=[r.run_id for r in runs], paper=paper, stat=stat,
                mixed_setup=len({setup_of(r) for r in runs}) > 1, trainings=[r.training for r in runs])


def build_leaderboard(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, *, stat: str = "median",
                      profile: str | None = None, dataset: str | None = None) -> Leaderboard:
    """Read every run record under ``results_dir`` and build the sections, rows and cells."""
    key = resolve_stat(stat)
    runs, problems = load_runs(results_dir)
    num_records = len(runs) + len(problems)
    runs = select_runs(runs, profile=profile, dataset=dataset)
    not_counted = []
    for run in runs:
        if run.status is not RunStatus.FINISHED:
            status = run.effective_status()
            not_counted.append(NotCounted(run, status, _not_counted_reason(run, status)))

    def has_stat(run: RunRecord) -> bool:
        value = (run.results or {}).get(key)
        return isinstance(value, int | float) and math.isfinite(value)

    for run in runs:
        if run.status is RunStatus.FINISHED and not has_stat(run):
            not_counted.append(NotCounted(run, run.status, f"finished, but results has no finite {key}"))
    cells, superseded = group_finished(r for r in runs if r.status is RunStatus.FINISHED and has_stat(r))

    sections = []
    for skey in sorted(cells, key=section_sort_key):
        rows, ceilings = [], []
        for rkey in sorted(cells[skey], key=row_sort_key):
            row, ceiling = Row(rkey, {}), Row(rkey, {})
            for labels, cell_runs in sorted(cells[skey][rkey].items()):
                target = ceiling if all(is_ceiling(r) for r in cell_runs) else row
                target.cells[labels] = _cell(labels, cell_runs, key, skey, rkey)
            rows += [row] if row.cells else []
            ceilings += [ceiling] if ceiling.cells else []
        for group in (rows, ceilings):   # a ceiling row has its budget row's key: they are told apart already
            alike: dict[RowKey, list[Row]] = {}
            for row in group:
                alike.setdefault(without_content(row.key), []).append(row)
            for same in alike.values():
                values = [dict(row.key.setup) for row in same]
                differ = tuple(n for n in CONTENT_SETTINGS if len({v.get(n) for v in values}) > 1)
                for row in same:
                    row.show_content = differ
        found = {labels for row in rows for labels in row.cells}
        columns = sorted(set(paper_columns(skey.dataset_family)) | found)
        mine = {rid for row in rows + ceilings for c in row.cells.values() for rid in c.run_ids}
        sections.append(Section(skey, columns, rows, [s for s in superseded if s.kept in mine], ceilings))
    not_counted.sort(key=lambda nc: (section_sort_key(section_key(nc.run)), nc.run.run_id))
    return Leaderboard(key, sections, not_counted, problems, num_records,
                       leaderboard_command(results_dir, key, profile, dataset), str(results_dir))

