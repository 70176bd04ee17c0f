"""Leaderboard and paired comparisons, derived only from the run records ``results/*/record.json``.

There is no second source of truth: every table here is rebuilt from the run records (schema 1, see
``docs/CONTRACTS.md``) and the paper's reference numbers in ``ssl_bench/paper_table6.json``, so it can be
regenerated at any time, also while runs are still writing their records.

Layout (like Table 6 of Huang et al., "Spatial Ensemble", NeurIPS 2021):

* one **section** per (profile, dataset, dataset kind, model, steps): runs of different budgets, data,
  models or lengths are never averaged together; sections are ordered by budget, best first
  (``full > short > cpu > smoke``, unknown profiles after, alphabetically);
* one **row** per algorithm x smoothing strategy; the granularity is shown where it is not ``layer``, p and
  m where they differ from the paper's defaults (p = 0.5, m = 0.999). Parameters a strategy does not use
  are not part of the row: TMA ignores p and the granularity, SE ignores m, ``none`` ignores all three;
* one **column** per label budget of the dataset family (CIFAR-10: 20/40/250/4000, CIFAR-100:
  200/400/2500/10000, plus any other budget that was run);
* each **cell**: the teacher's top-1 as ``mean ± sample std (n=seeds)`` and the paper's number beside
  it (only for rows in the paper's configuration). A cell without a finished run is empty.

Failed and unfinished runs are listed in a table of their own and never averaged in. When the same seed
of the same cell finished more than once, the run that finished last is kept and the others are listed
as superseded. Unreadable records are reported, never fatal.

The statistic is ``teacher_median_last20`` (median of the teacher's last 20 evaluations, the official
FixMatch protocol) or, with ``stat="best"``, ``teacher_best`` (best evaluation, the USB/TorchSSL
convention, optimistic); every header says which.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from ssl_bench.results import atomic_write_bytes

STATS = {"median": "teacher_median_last20", "best": "teacher_best"}
STAT_DESCRIPTIONS = {
    "teacher_median_last20": "teacher top-1, median of the last 20 evaluations (official FixMatch protocol)",
    "teacher_best": "teacher top-1, best evaluation during training (USB/TorchSSL convention; optimistic)",
}
FORMATS = ("markdown", "csv", "json")
PROFILE_ORDER = ("full", "short", "cpu", "smoke")  # budget, best first
ALGORITHM_ORDER = ("pi_model", "pseudo_label", "mean_teacher", "mixmatch", "uda", "remixmatch", "fixmatch")
SMOOTH_ORDER = ("none", "tma", "se", "sts")
GRANULARITY_ORDER = ("layer", "channel", "neuron")
DEFAULT_GRANULARITY = "layer"
PAPER_P = 0.5  # preserving probability for FixMatch, Huang et al. 2021, Sec. 4.1
PAPER_M = 0.999  # TMA momentum, FixMatch (Sohn et al. 2020) and Huang et al. 2021 Fig. 3
LEADERBOARD_FILE = "LEADERBOARD.md"
RECORD_FILE = "record.json"

# Two-sided 95 % critical values t_{0.975, df} of Student's t distribution for df = 1..30, from the
# NIST/SEMATECH e-Handbook of Statistical Methods, Sec. 1.3.6.7.2 "Critical Values of the Student's t
# Distribution" (https://www.itl.nist.gov/div898/handbook/eda/section3/eda3672.htm), column 0.975.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z_975 = 1.959963984540054  # standard normal 0.975 quantile


class LeaderboardError(ValueError):
    """A request the records cannot answer (nothing matches, bad option value); the message says why."""


# ----------------------------------------------------------------------------------------------------
# Paper numbers


@functools.lru_cache(maxsize=1)
def load_paper_table() -> dict[str, Any]:
    """The paper's Table 6 as stored in ``ssl_bench/paper_table6.json`` (package data)."""
    text = resources.files("ssl_bench").joinpath("paper_table6.json").read_text(encoding="utf-8")
    table = json.loads(text)
    keys = [(row["algorithm"], row["smooth"]) for row in table["rows"]]
    if len(keys) != len(set(keys)):
        raise ValueError("paper_table6.json maps two rows to the same (algorithm, smooth) key")
    return table


def paper_columns(family: str | None) -> list[int]:
    """The label budgets of ``family`` in the paper's Table 6 (empty for a family the paper lacks)."""
    return [int(n) for n in load_paper_table()["columns"].get(family or "", [])]


def paper_number(algorithm: str, smooth: str, family: str | None, labels: int) -> float | None:
    """The paper's top-1 for (algorithm, smooth) on ``family`` with ``labels`` labels, or None."""
    for row in load_paper_table()["rows"]:
        if row["algorithm"] == algorithm and row["smooth"] == smooth:
            value = row.get(family or "", {}).get(str(labels))
            return None if value is None else float(value)
    return None


# ----------------------------------------------------------------------------------------------------
# Run records


class SectionKey(NamedTuple):
    """What must be equal for runs to be averaged: budget, data, model and length."""

    profile: str
    dataset: str
    dataset_kind: str
    dataset_family: str | None
    model: str
    steps: int


class RowKey(NamedTuple):
    """Algorithm x smoothing strategy; parameters the strategy does not use are None."""

    algorithm: str
    smooth: str
    granularity: str | None
    p: float | None
    m: float | None
    overrides: tuple[tuple[str, str], ...] = ()   # --alg-arg hyper-parameters changed from the paper defaults


@dataclass(frozen=True, eq=False)
class Run:
    """One run record, validated and typed (``record`` keeps the raw dictionary)."""

    run_id: str
    run_dir: Path
    status: str
    error: str | None
    algorithm: str
    smooth: str
    granularity: str | None
    p: float | None
    m: float | None
    dataset: str
    dataset_kind: str
    dataset_family: str | None
    model: str
    profile: str
    steps: int
    steps_done: int | None
    labels: int
    seed: int
    results: Mapping[str, Any] | None
    started: str | None
    finished: str | None
    record: Mapping[str, Any]

    @property
    def section(self) -> SectionKey:
        return SectionKey(self.profile, self.dataset, self.dataset_kind, self.dataset_family, self.model, self.steps)

    @property
    def row(self) -> RowKey:
        key = row_key(self.algorithm, self.smooth, self.granularity, self.p, self.m)
        overrides = self.record.get("alg_overrides") or {}
        return key._replace(overrides=tuple(sorted((k, repr(v)) for k, v in overrides.items())))

    @property
    def setup(self) -> str:
        """The settings outside the section and row keys that should also agree within one cell."""
        keys = ("alg_args", "targets_from", "buffers", "batch_size", "mu", "eval_every")
        return json.dumps({k: self.record.get(k) for k in keys}, sort_keys=True)


@dataclass(frozen=True)
class Problem:
    """A record that could not be used, and why."""

    path: Path
    reason: str


def _float_or_none(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def row_key(algorithm: str, smooth: str, granularity: str | None, p: float | None, m: float | None) -> RowKey:
    """The row a run belongs to, keeping only the parameters its smoothing strategy uses."""
    p, m = _float_or_none(p), _float_or_none(m)
    granularity = granularity or DEFAULT_GRANULARITY
    if smooth == "none":
        return RowKey(algorithm, smooth, None, None, None)
    if smooth == "tma":  # Eq. 4: per-element EMA, no units and no Bernoulli draws
        return RowKey(algorithm, smooth, None, None, m)
    if smooth == "se":  # Eq. 2: no momentum
        return RowKey(algorithm, smooth, granularity, p, None)
    return RowKey(algorithm, smooth, granularity, p, m)


def row_label(key: RowKey) -> str:
    """``fixmatch · sts``, ``fixmatch · sts (channel)``, ``fixmatch · sts (p=0.7, m=0.99)``."""
    extras = []
    if key.granularity is not None and key.granularity != DEFAULT_GRANULARITY:
        extras.append(key.granularity)
    if key.p is not None and not math.isclose(key.p, PAPER_P):
        extras.append(f"p={key.p:g}")
    if key.m is not None and not math.isclose(key.m, PAPER_M):
        extras.append(f"m={key.m:g}")
    extras += [f"{k}={v}" for k, v in key.overrides]
    label = f"{key.algorithm} · {key.smooth}"
    return f"{label} ({', '.join(extras)})" if extras else label


def is_paper_configuration(key: RowKey) -> bool:
    """True when the row runs the paper's setting (layer-wise units, p = 0.5, m = 0.999 where used)."""
    return (
        not key.overrides
        and key.granularity in (None, DEFAULT_GRANULARITY)
        and (key.p is None or math.isclose(key.p, PAPER_P))
        and (key.m is None or math.isclose(key.m, PAPER_M))
    )


def section_title(key: SectionKey) -> str:
    return f"profile {key.profile} · {key.dataset} ({key.dataset_kind}) · {key.model} · {key.steps} steps"


def section_sort_key(key: SectionKey) -> tuple:
    rank = PROFILE_ORDER.index(key.profile) if key.profile in PROFILE_ORDER else len(PROFILE_ORDER)
    return (rank, key.profile, key.dataset_family or "", key.dataset, key.dataset_kind, key.model, -key.steps)


def _index(order: Sequence[str], value: str | None) -> int:
    return order.index(value) if value in order else len(order)


def row_sort_key(key: RowKey) -> tuple:
    return (
        _index(ALGORITHM_ORDER, key.algorithm), key.algorithm,
        _index(SMOOTH_ORDER, key.smooth), key.smooth,
        _index(GRANULARITY_ORDER, key.granularity), key.granularity or "",
        -1.0 if key.p is None else key.p, -1.0 if key.m is None else key.m, key.overrides,
    )


_REQUIRED = ("status", "algorithm", "smooth", "dataset", "dataset_kind", "model", "profile", "steps", "labels",
             "seed")  # dataset_family may be null (a dataset outside CIFAR, e.g. the embedded digits)


def _run_from_record(data: Any, run_dir: Path) -> Run:
    if not isinstance(data, dict):
        raise ValueError("record is not a JSON object")
    if data.get("schema") != 1:
        raise ValueError(f"unknown record schema {data.get('schema')!r} (this leaderboard reads schema 1)")
    missing = [k for k in _REQUIRED if data.get(k) is None]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    results = data.get("results")
    if results is not None and not isinstance(results, dict):
        raise ValueError("'results' is neither an object nor null")
    try:
        return Run(
            run_id=str(data.get("run_id") or run_dir.name),
            run_dir=run_dir,
            status=str(data["status"]),
            error=None if data.get("error") is None else str(data["error"]),
            algorithm=str(data["algorithm"]),
            smooth=str(data["smooth"]),
            granularity=data.get("granularity"),
            p=_float_or_none(data.get("p")),
            m=_float_or_none(data.get("m")),
            dataset=str(data["dataset"]),
            dataset_kind=str(data["dataset_kind"]),
            dataset_family=data.get("dataset_family"),
            model=str(data["model"]),
            profile=str(data["profile"]),
            steps=int(data["steps"]),
            steps_done=None if data.get("steps_done") is None else int(data["steps_done"]),
            labels=int(data["labels"]),
            seed=int(data["seed"]),
            results=results,
            started=data.get("started"),
            finished=data.get("finished"),
            record=data,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad field value: {exc}") from exc


def read_run(run_dir: str | os.PathLike) -> Run:
    """The run record of one run directory; ``ValueError`` (or ``OSError``) when it cannot be used."""
    run_dir = Path(run_dir)
    return _run_from_record(json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8")), run_dir)


def load_runs(results_dir: str | os.PathLike) -> tuple[list[Run], list[Problem]]:
    """Every ``<results_dir>/<run_id>/record.json``, parsed; unreadable ones come back as problems.

    Only the exact name ``record.json`` is read, so the temporary files of a writer that is replacing a
    record right now (``os.replace``) are never seen; hidden directories are skipped.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise LeaderboardError(f"results directory {str(results_dir)!r} does not exist")
    runs: list[Run] = []
    problems: list[Problem] = []
    for path in sorted(results_dir.glob(f"*/{RECORD_FILE}")):
        if path.parent.name.startswith("."):
            continue
        try:
            runs.append(read_run(path.parent))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(Problem(path, f"cannot be read as JSON: {exc}"))
        except ValueError as exc:
            problems.append(Problem(path, str(exc)))
    return runs, problems


def select_runs(runs: Iterable[Run], *, profile: str | None = None, dataset: str | None = None) -> list[Run]:
    """The runs of one profile and/or dataset; a filter that matches nothing is an error naming the choices."""
    runs = list(runs)
    for name, value in (("profile", profile), ("dataset", dataset)):
        if value is None:
            continue
        available = sorted({getattr(r, name) for r in runs})
        runs = [r for r in runs if getattr(r, name) == value]
        if not runs:
            raise LeaderboardError(
                f"no run records with {name} {value!r}; {name}s present: {', '.join(available) or '(no records)'}"
            )
    return runs


def _finish_time(run: Run) -> tuple[float, str]:
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


Cells = dict[SectionKey, dict[RowKey, dict[int, list[Run]]]]


def group_finished(runs: Iterable[Run]) -> tuple[Cells, list[Superseded]]:
    """Finished runs grouped section -> row -> labels, one run per seed (the one that finished last)."""
    by_seed: dict[tuple[SectionKey, RowKey, int, int], list[Run]] = {}
    for run in runs:
        if run.status == "finished":
            by_seed.setdefault((run.section, run.row, run.labels, run.seed), []).append(run)
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

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof = 1); None for fewer than two seeds."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))


@dataclass
class Row:
    key: RowKey
    cells: dict[int, Cell]

    @property
    def label(self) -> str:
        return row_label(self.key)


@dataclass
class Section:
    key: SectionKey
    columns: list[int]
    rows: list[Row]
    superseded: list[Superseded] = field(default_factory=list)

    @property
    def title(self) -> str:
        return section_title(self.key)


@dataclass(frozen=True)
class NotCounted:
    """A run listed apart: failed, unfinished, or finished without the statistic."""

    run: Run
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


def leaderboard_command(results_dir: str | os.PathLike = "results", stat: str = "median",
                        profile: str | None = None, dataset: str | None = None) -> str:
    """The command line that rebuilds this leaderboard (written into its header)."""
    short = next((k for k, v in STATS.items() if v == resolve_stat(stat)), stat)
    parts = ["python run_bench.py leaderboard", f"--results-dir {results_dir}", f"--stat {short}"]
    parts += [f"--profile {profile}"] if profile else []
    parts += [f"--dataset {dataset}"] if dataset else []
    return " ".join(parts)


def build_leaderboard(results_dir: str | os.PathLike = "results", *, stat: str = "median",
                      profile: str | None = None, dataset: str | None = None) -> Leaderboard:
    """Read every run record under ``results_dir`` and build the sections, rows and cells."""
    key = resolve_stat(stat)
    runs, problems = load_runs(results_dir)
    num_records = len(runs) + len(problems)
    runs = select_runs(runs, profile=profile, dataset=dataset)
    not_counted = [NotCounted(r, r.error or f"status {r.status}") for r in runs if r.status != "finished"]

    def has_stat(run: Run) -> bool:
        value = (run.results or {}).get(key)
        return isinstance(value, int | float) and math.isfinite(value)

    for run in runs:
        if run.status == "finished" and not has_stat(run):
            not_counted.append(NotCounted(run, f"finished, but results has no finite {key}"))
    cells, superseded = group_finished(r for r in runs if r.status != "finished" or has_stat(r))

    sections = []
    for skey in sorted(cells, key=section_sort_key):
        rows = []
        found = {labels for row in cells[skey].values() for labels in row}
        columns = sorted(set(paper_columns(skey.dataset_family)) | found)
        for rkey in sorted(cells[skey], key=row_sort_key):
            row_cells = {}
            for labels, cell_runs in sorted(cells[skey][rkey].items()):
                cell_runs = sorted(cell_runs, key=lambda r: r.seed)
                paper = None
                if is_paper_configuration(rkey):
                    paper = paper_number(rkey.algorithm, rkey.smooth, skey.dataset_family, labels)
                row_cells[labels] = Cell(
                    labels=labels,
                    seeds=[r.seed for r in cell_runs],
                    values=[float(r.results[key]) for r in cell_runs],
                    run_ids=[r.run_id for r in cell_runs],
                    paper=paper,
                    mixed_setup=len({r.setup for r in cell_runs}) > 1,
                )
            rows.append(Row(rkey, row_cells))
        mine = {rid for row in rows for c in row.cells.values() for rid in c.run_ids}
        sections.append(Section(skey, columns, rows, [s for s in superseded if s.kept in mine]))
    not_counted.sort(key=lambda nc: (section_sort_key(nc.run.section), nc.run.run_id))
    return Leaderboard(key, sections, not_counted, problems, num_records,
                       leaderboard_command(results_dir, key, profile, dataset), str(results_dir))


# ----------------------------------------------------------------------------------------------------
# Rendering


def format_cell(cell: Cell | None, *, paper: bool = True) -> str:
    """``41.3 ± 2.1 (n=3) | 92.06``; ``40.0 (n=1)`` for one seed; empty without runs."""
    if cell is None or cell.n == 0:
        return ""
    text = f"{cell.mean:.1f}"
    if cell.std is not None:
        text += f" ± {cell.std:.1f}"
    text += f" (n={cell.n})"
    if paper and cell.paper is not None:
        text += f" | {cell.paper:.2f}"
    return text


def _md(text: Any) -> str:
    """Make text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _short(text: str | None, limit: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _paper_reference_section() -> list[str]:
    """The paper's whole Table 6, so every section can be read against it (scaled runs get no per-cell number)."""
    table = load_paper_table()
    columns = [(family, n) for family in ("cifar10", "cifar100") for n in paper_columns(family)]
    header = ["paper row", "ssl-bench row"] + [f"{'C10' if f == 'cifar10' else 'C100'}/{n}" for f, n in columns]
    body = []
    for row in table["rows"]:
        values = [row.get(f, {}).get(str(n)) for f, n in columns]
        body.append([row["method"], f"{row['algorithm']} · {row['smooth']}"]
                    + ["" if v is None else f"{float(v):.2f}" for v in values])
    source = table["source"]
    return ["", "## The paper's Table 6, for reference", "",
            f"{source['paper']}, {source['venue']}, Table 6: top-1 on the full CIFAR-10 (C10) / CIFAR-100 (C100) with "
            "the paper's protocol (2^20 steps, WRN-28-2 / WRN-28-8, m = 0.999). Not comparable with scaled "
            "profiles or subsets; shown so every section can be read against it.", "",
            *_md_table(header, body)]


def render_markdown(board: Leaderboard) -> str:
    source = load_paper_table()["source"]
    out = [
        "# ssl-bench leaderboard",
        "",
        f"Generated by `{board.command}` from the run records `{board.results_dir}/*/record.json` "
        f"({board.num_records} records read). Derived file: do not edit, re-run the command to rebuild it.",
        "",
        f"Statistic: **{board.stat_description}** (`{board.stat}`). Each cell: mean ± sample std over seeds "
        "(n = seeds) | the paper's number for the same algorithm and smoothing "
        f"({source['paper']}, {source['venue']}, Table 6; full CIFAR training), shown only for rows in the "
        "paper's configuration (layer-wise, p = 0.5, m = 0.999). Empty cell: no finished run. Sections are "
        "never averaged together.",
    ]
    if not board.sections:
        out += ["", "_No finished runs yet._"]
    for section in board.sections:
        out += ["", f"## {section.title}", ""]
        header = ["method"] + [f"{n} labels" for n in section.columns]
        body = [[row.label] + [format_cell(row.cells.get(n)) for n in section.columns] for row in section.rows]
        out += _md_table(header, body)
        notes = []
        for row in section.rows:
            for cell in row.cells.values():
                if cell.mixed_setup:
                    notes.append(f"{row.label}, {cell.labels} labels mixes runs with different alg_args / "
                                 f"batch size / mu / buffers / eval_every: {', '.join(cell.run_ids)}")
        for s in section.superseded:
            notes.append(f"seed {s.seed}: `{s.run_id}` superseded by the later `{s.kept}`")
        if notes:
            out += [""] + [f"- {_short(n, 400)}" for n in notes]
    out += _paper_reference_section()
    if board.not_counted:
        out += ["", "## Runs not counted (failed, unfinished or without the statistic)", ""]
        body = []
        for nc in board.not_counted:
            r = nc.run
            progress = f"{r.steps_done if r.steps_done is not None else '?'}/{r.steps}"
            body.append([r.run_id, r.status, section_title(r.section), row_label(r.row), r.labels, r.seed,
                         progress, _short(nc.reason)])
        out += _md_table(["run_id", "status", "section", "method", "labels", "seed", "steps", "error"], body)
    if board.problems:
        out += ["", "## Unreadable run records", ""]
        out += [f"- `{p.path}`: {_short(p.reason, 300)}" for p in board.problems]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("profile", "dataset", "dataset_kind", "dataset_family", "model", "steps", "method", "algorithm",
               "smooth", "granularity", "p", "m", "overrides", "labels", "stat", "mean", "std", "n", "paper", "seeds",
               "run_ids")


def _cell_dicts(board: Leaderboard) -> Iterable[dict[str, Any]]:
    for section in board.sections:
        for row in section.rows:
            for labels in section.columns:
                cell = row.cells.get(labels)
                if cell is None:
                    continue
                yield {
                    **section.key._asdict(), "method": row.label, **row.key._asdict(),
                    "overrides": json.dumps(dict(row.key.overrides)) if row.key.overrides else "", "labels": labels,
                    "stat": board.stat, "mean": cell.mean, "std": cell.std, "n": cell.n, "paper": cell.paper,
                    "seeds": cell.seeds, "run_ids": cell.run_ids,
                }


def render_csv(board: Leaderboard) -> str:
    """Long form: one line per (section, row, label budget) cell that has runs."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for d in _cell_dicts(board):
        d = {k: ("" if v is None else v) for k, v in d.items()}
        d["seeds"] = " ".join(map(str, d["seeds"]))
        d["run_ids"] = " ".join(d["run_ids"])
        writer.writerow(d)
    return buffer.getvalue()


def render_json(board: Leaderboard) -> str:
    data = {
        "command": board.command,
        "results_dir": board.results_dir,
        "stat": board.stat,
        "stat_description": board.stat_description,
        "num_records": board.num_records,
        "paper_source": load_paper_table()["source"],
        "sections": [
            {
                **section.key._asdict(), "title": section.title, "columns": section.columns,
                "rows": [
                    {"method": row.label, **row.key._asdict(),
                     "cells": {str(n): {"mean": c.mean, "std": c.std, "n": c.n, "paper": c.paper, "seeds": c.seeds,
                                        "values": c.values, "run_ids": c.run_ids, "mixed_setup": c.mixed_setup}
                               for n, c in sorted(row.cells.items())}}
                    for row in section.rows
                ],
                "superseded": [vars(s) for s in section.superseded],
            }
            for section in board.sections
        ],
        "not_counted": [
            {"run_id": nc.run.run_id, "status": nc.run.status, "reason": nc.reason, "section": nc.run.section._asdict(),
             "method": row_label(nc.run.row), "labels": nc.run.labels, "seed": nc.run.seed,
             "steps_done": nc.run.steps_done}
            for nc in board.not_counted
        ],
        "problems": [{"path": str(p.path), "reason": p.reason} for p in board.problems],
    }
    return json.dumps(data, indent=2) + "\n"


def render(board: Leaderboard, fmt: str = "markdown") -> str:
    renderers = {"markdown": render_markdown, "csv": render_csv, "json": render_json}
    if fmt not in renderers:
        raise LeaderboardError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return renderers[fmt](board)


def write_leaderboard(results_dir: str | os.PathLike = "results", *, stat: str = "median",
                      profile: str | None = None, dataset: str | None = None,
                      board: Leaderboard | None = None) -> Path:
    """(Re)write ``<results_dir>/LEADERBOARD.md`` atomically; returns its path."""
    board = board or build_leaderboard(results_dir, stat=stat, profile=profile, dataset=dataset)
    path = Path(results_dir) / LEADERBOARD_FILE
    atomic_write_bytes(path, render_markdown(board).encode("utf-8"))  # temp file + os.replace
    return path


# ----------------------------------------------------------------------------------------------------
# Paired comparison


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table above for df <= 30, the Cornish-Fisher expansion (error < 1e-3) beyond."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if df <= len(T_975):
        return T_975[df - 1]
    z = _Z_975  # Abramowitz & Stegun 26.7.5, first three terms
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class PairedDiff:
    """arm - baseline over the seeds both have: mean, sample std, n and a 95 % t-interval."""

    n: int
    mean: float | None
    std: float | None
    half_width: float | None
    low: float | None
    high: float | None
    seeds: list[int]
    only_arm: list[int]
    only_baseline: list[int]

    @property
    def verdict(self) -> str:
        if self.n == 0:
            return "no seed in common"
        if self.half_width is None:
            return "one paired seed: no interval"
        if self.low > 0:
            return "gain larger than the seed noise (95 % CI above 0)"
        if self.high < 0:
            return "loss larger than the seed noise (95 % CI below 0)"
        return "not distinguishable from the seed noise (95 % CI contains 0)"


def paired_difference(arm: Mapping[int, float], baseline: Mapping[int, float]) -> PairedDiff:
    """Paired difference arm[s] - baseline[s] over the common seeds s; the others are listed, not used.

    mean d̄, sample std s_d (ddof = 1), and the 95 % interval d̄ ± t_{0.975, n-1} · s_d / √n.
    """
    seeds = sorted(set(arm) & set(baseline))
    only_arm, only_base = sorted(set(arm) - set(baseline)), sorted(set(baseline) - set(arm))
    diffs = [arm[s] - baseline[s] for s in seeds]
    n = len(diffs)
    if n == 0:
        return PairedDiff(0, None, None, None, None, None, seeds, only_arm, only_base)
    mean = statistics.fmean(diffs)
    if n == 1:
        return PairedDiff(1, mean, None, None, None, None, seeds, only_arm, only_base)
    std = statistics.stdev(diffs)
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return PairedDiff(n, mean, std, half, mean - half, mean + half, seeds, only_arm, only_base)


@dataclass(frozen=True)
class ArmComparison:
    label: str  # e.g. "fixmatch · sts"
    baseline_label: str
    diff: PairedDiff
    arm_mean: float | None  # over the paired seeds
    baseline_mean: float | None


@dataclass(frozen=True)
class Comparison:
    section: SectionKey
    algorithm: str
    labels: int
    stat: str
    baseline: str | None
    arms: list[ArmComparison]


def _pick_baseline(rows: Sequence[Row]) -> Row | None:
    tma = [r for r in rows if r.key.smooth == "tma"]
    default = [r for r in tma if r.key.m is not None and math.isclose(r.key.m, PAPER_M)]
    return (default or tma or [None])[0]


def compare(results_dir: str | os.PathLike = "results", *, alg: str, dataset: str, labels: int,
            profile: str | None = None, stat: str = "median") -> list[Comparison]:
    """Every other smoothing row minus TMA (m = 0.999) for one algorithm, dataset and budget, per section.

    Arms are ordered STS, SE, NONE, then variants; the differences are paired by seed.
    """
    board = build_leaderboard(results_dir, stat=stat, profile=profile, dataset=dataset)
    comparisons = []
    for section in board.sections:
        rows = [r for r in section.rows if r.key.algorithm == alg and labels in r.cells]
        if not rows:
            continue
        base = _pick_baseline(rows)
        arms = []
        order = {"sts": 0, "se": 1, "none": 2}
        others = sorted((r for r in rows if r is not base), key=lambda r: (order.get(r.key.smooth, 3), row_sort_key(r.key)))
        for row in others if base is not None else []:
            a, b = row.cells[labels].by_seed(), base.cells[labels].by_seed()
            diff = paired_difference(a, b)
            arm_mean = statistics.fmean(a[s] for s in diff.seeds) if diff.seeds else None
            base_mean = statistics.fmean(b[s] for s in diff.seeds) if diff.seeds else None
            arms.append(ArmComparison(row.label, base.label, diff, arm_mean, base_mean))
        comparisons.append(Comparison(section.key, alg, labels, board.stat, base.label if base else None, arms))
    if not comparisons:
        runs, _ = load_runs(results_dir)
        runs = [r for r in runs if r.dataset == dataset and (profile is None or r.profile == profile)]
        have = sorted({(r.algorithm, r.labels) for r in runs if r.status == "finished"})
        raise LeaderboardError(
            f"no finished runs of algorithm {alg!r} on {dataset!r} with {labels} labels"
            + (f" in profile {profile!r}" if profile else "")
            + f" under {results_dir}/*/{RECORD_FILE}; finished (algorithm, labels) there: "
            + (", ".join(f"{a}/{n}" for a, n in have) or "none")
        )
    return comparisons


def _signed(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{x:+.{digits}f}"


def render_compare(comparisons: Sequence[Comparison]) -> str:
    out = []
    for comp in comparisons:
        out += [
            f"## {comp.algorithm}, {comp.labels} labels — {section_title(comp.section)}",
            "",
            f"Statistic: {STAT_DESCRIPTIONS.get(comp.stat, comp.stat)} (`{comp.stat}`). Paired by seed; "
            "95 % interval: mean ± t(0.975, n-1) · std / √n.",
            "",
        ]
        if comp.baseline is None:
            out += ["No TMA runs in this section: nothing to compare against.", ""]
            continue
        if not comp.arms:
            out += [f"Only the baseline `{comp.baseline}` was run here: nothing to compare.", ""]
            continue
        body = []
        for arm in comp.arms:
            d = arm.diff
            ci = "" if d.low is None else f"[{d.low:+.2f}, {d.high:+.2f}]"
            unpaired = "; ".join(
                part for part in (
                    f"{arm.label}: {' '.join(map(str, d.only_arm))}" if d.only_arm else "",
                    f"{arm.baseline_label}: {' '.join(map(str, d.only_baseline))}" if d.only_baseline else "",
                ) if part
            )
            body.append([
                f"{arm.label} − {arm.baseline_label}", d.n, _signed(d.mean), "" if d.std is None else f"{d.std:.2f}",
                ci, "" if arm.arm_mean is None else f"{arm.arm_mean:.2f}",
                "" if arm.baseline_mean is None else f"{arm.baseline_mean:.2f}",
                " ".join(map(str, d.seeds)), unpaired or "—", d.verdict,
            ])
        out += _md_table(["difference", "n", "mean", "std", "95 % CI", "arm", "baseline", "paired seeds",
                          "unpaired seeds (not used)", "verdict"], body)
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------
# Command line


def _leaderboard_main(args: argparse.Namespace) -> int:
    try:
        board = build_leaderboard(args.results_dir, stat=args.stat, profile=args.profile, dataset=args.dataset)
        print(render(board, args.format), end="")
        if args.format != "markdown" and board.problems:
            for p in board.problems:
                print(f"warning: skipped {p.path}: {p.reason}", file=sys.stderr)
        write = args.write
        if write is None:  # default: keep the canonical, unfiltered file up to date
            write = args.format == "markdown" and args.profile is None and args.dataset is None
        if write:
            path = write_leaderboard(args.results_dir, board=board)
            print(f"wrote {path}", file=sys.stderr)
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _compare_main(args: argparse.Namespace) -> int:
    try:
        comparisons = compare(args.results_dir, alg=args.alg, dataset=args.dataset, labels=args.labels,
                              profile=args.profile, stat=args.stat)
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_compare(comparisons), end="")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``leaderboard`` and ``compare`` to the CLI's sub-parsers; each sets ``func(args) -> int``."""
    lb = subparsers.add_parser(
        "leaderboard",
        help="Table-6-style leaderboard derived from results/*/record.json",
        description="Print the leaderboard derived from the run records and (by default, for the unfiltered "
        "markdown board) rewrite <results-dir>/LEADERBOARD.md atomically.",
    )
    lb.add_argument("--results-dir", default="results", help="folder of run directories (default: results)")
    lb.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default: markdown)")
    lb.add_argument("--stat", choices=tuple(STATS), default="median",
                    help="median: teacher_median_last20, the official FixMatch protocol (default); "
                    "best: teacher_best, the USB/TorchSSL convention")
    lb.add_argument("--profile", help="only this profile's sections (default: all, best budget first)")
    lb.add_argument("--dataset", help="only this dataset's sections (default: all)")
    lb.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                    help="rewrite <results-dir>/LEADERBOARD.md (default: yes for --format markdown without "
                    "--profile/--dataset filters)")
    lb.set_defaults(func=_leaderboard_main)

    cp = subparsers.add_parser(
        "compare",
        help="paired STS/SE/NONE minus TMA differences over seeds, with 95 %% t-intervals",
        description="For one algorithm, dataset and label budget: every other smoothing strategy minus TMA, "
        "paired by seed, per section (profile, dataset, model, steps).",
    )
    cp.add_argument("--alg", required=True, help="algorithm name, e.g. fixmatch")
    cp.add_argument("--dataset", required=True, help="dataset name as in the records, e.g. cifar10_subset")
    cp.add_argument("--labels", required=True, type=_positive_int, help="label budget, e.g. 40")
    cp.add_argument("--profile", help="only this profile (default: every section that has the runs)")
    cp.add_argument("--stat", choices=tuple(STATS), default="median", help="median (default) or best")
    cp.add_argument("--results-dir", default="results", help="folder of run directories (default: results)")
    cp.set_defaults(func=_compare_main)
