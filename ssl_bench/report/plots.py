"""PNG figures from run directories (matplotlib, Agg canvas; pyplot and its global state are not used).

* ``plot_accuracy``: teacher and student top-1 over training steps for one algorithm, dataset and label
  budget, one line per smoothing strategy: the mean over seeds, with a band from the lowest to the highest
  seed. One figure per section (profile, dataset, model, steps), as in the leaderboard: runs of different
  budgets are never averaged together.
* ``plot_smoothness``: Figure 3 of Huang et al., "Spatial Ensemble" (NeurIPS 2021) for one or more runs:
  the mean squared difference of the teacher's parameters (left) and of its softmax outputs (right)
  between consecutive evaluations, ``teacher_param_msd`` and ``teacher_output_msd`` of ``metrics.csv``,
  on a log y-scale.
* ``plot_rows``: the leaderboard's cells for one algorithm, dataset and label budget, one column per row
  (mean ± sample std over seeds, each seed a dot): the Table-4 view of an ablation (strategy x granularity
  x p), with the ``supervised`` baseline beside it when it was run. One figure per section.
* ``plot_grid``: the paper's Figure 4 as one heat map per section: rows m in {0 (SE), m_1, ...}, columns p in
  {0 (TMA; for m = 0, no smoothing), p_1, ...}; each cell the paired difference (by seed) of that teacher from
  the reference TMA (the profile's m), its mean and 95 % t-interval written in the cell.

The first two read ``metrics.csv`` (columns in ``docs/CONTRACTS.md``); empty or non-numeric values (the first row's
msd columns, a line still being written) are skipped.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_bench.atomic import read_regular_file
from ssl_bench.config import PROFILES
from ssl_bench.errors import UserError
from ssl_bench.records import (
    DEFAULT_RESULTS_DIR,
    METRICS_FILE,
    RECORD_FILE,
    RecordError,
    RunRecord,
    RunStatus,
    atomic_write_bytes,
)
from ssl_bench.report.leaderboard import (
    SUPERVISED,
    LeaderboardError,
    build_leaderboard,
    group_finished,
    load_runs,
    row_key,
    row_label,
    row_sort_key,
    section_sort_key,
    section_title,
)
from ssl_bench.report.options import add_results_dir, add_selection, add_stat
from ssl_bench.report.stats import PairedDiff, paired_difference
from ssl_bench.smoothing import GRANULARITIES, STRATEGIES, strategy_class, strategy_settings


class PlotError(UserError):
    """Nothing to plot (no matching run, no usable metrics); the message says what was searched."""


# metrics.csv has one row per evaluation (1024 for the paper's 2^20 steps): a few hundred kB at most.
METRICS_LIMIT = 64 * 2**20


def read_metrics(path: str | os.PathLike) -> dict[str, list[float]]:
    """``metrics.csv`` as columns of floats; empty, missing or non-numeric values become NaN.

    Read as data from a results folder: a regular file of at most ``METRICS_LIMIT`` bytes (never a FIFO or a
    link), fields within ``csv``'s field limit; ``PlotError`` naming the file otherwise (``OSError`` when absent).
    """
    columns: dict[str, list[float]] = {}
    try:
        text = read_regular_file(Path(path), METRICS_LIMIT).decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}); a metrics.csv is a "
                        "regular UTF-8 file written by the training loop") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        names = [n for n in (reader.fieldnames or []) if n]
        for name in names:
            columns[name] = []
        for row in reader:
            for name in names:
                columns[name].append(_to_float(row.get(name)))
    except csv.Error as exc:   # e.g. a field over csv.field_size_limit() (131,072 characters)
        raise PlotError(f"{path} is not a metrics table ({exc}); it was not written by the training loop") from None
    return columns


def _to_float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _curve(metrics: dict[str, list[float]], column: str, *,
           positive: bool = False) -> tuple[list[float], list[float]]:
    """(steps, values) of one column, keeping rows where both are finite (and the value > 0 if asked)."""
    steps, values = metrics.get("step", []), metrics.get(column, [])
    pairs = [(s, v) for s, v in zip(steps, values, strict=False)
             if math.isfinite(s) and math.isfinite(v) and (v > 0 or not positive)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _band(curves: Sequence[tuple[list[float], list[float]]]):
    """Mean, min and max over seeds at each step (a step counts the seeds that evaluated there)."""
    at: dict[float, list[float]] = {}
    for steps, values in curves:
        for s, v in zip(steps, values, strict=True):
            at.setdefault(s, []).append(v)
    steps = sorted(at)
    return (steps, [statistics.fmean(at[s]) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])


def _figure(ncols: int, nrows: int = 1, height: float = 4.0):
    """A figure of ``nrows`` x ``ncols`` panels (``height`` inches each row), with constrained layout: titles,
    labels and legends outside the axes are never cut."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes if nrows > 1 else axes[0]


def _save(fig, path: Path) -> Path:
    """Save as PNG through a temporary file and ``os.replace``, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(str(p) for p in parts))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _metrics_of(run: RunRecord) -> dict[str, list[float]] | None:
    path = run.run_dir / METRICS_FILE
    try:
        return read_metrics(path)
    except (OSError, PlotError) as exc:
        _warn(f"{run.run_id}: cannot read {path}: {exc}")
        return None


def plot_accuracy(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, *, alg: str, dataset: str, labels: int,
                  profile: str | None = None, out_dir: str | os.PathLike) -> list[Path]:
    """Teacher and student top-1 vs step, one line per smoothing strategy; one PNG per section."""
    runs, _ = load_runs(results_dir)
    matching = [r for r in runs if r.status is RunStatus.FINISHED and r.algorithm == alg
                and r.dataset == dataset and r.labels == labels and (profile is None or r.profile == profile)]
    if not matching:
        finished = [r for r in runs if r.status is RunStatus.FINISHED]
        raise PlotError(
            f"no finished runs match algorithm={alg!r} dataset={dataset!r} labels={labels}"
            + (f" profile={profile!r}" if profile else "")
            + f"; searched {len(runs)} records in {results_dir}/*/{RECORD_FILE}; finished runs have "
            f"algorithms {sorted({r.algorithm for r in finished})}, "
            f"datasets {sorted({r.dataset for r in finished})}, "
            f"labels {sorted({r.labels for r in finished})}"
        )
    cells, _ = group_finished(matching)
    written = []
    for section in sorted(cells, key=section_sort_key):
        fig = _accuracy_figure(cells[section], labels)
        if fig is None:
            _warn(f"no usable metrics.csv rows for {section_title(section)}; no figure")
            continue
        fig.suptitle(f"{alg}, {labels} labels — {section_title(section)}\n"
                     "line: mean over seeds; band: min–max over seeds", fontsize="medium")
        name = _slug("accuracy", alg, dataset, labels, section.profile, section.model, section.steps) + ".png"
        written.append(_save(fig, Path(out_dir) / name))
    if not written:
        raise PlotError(f"runs match, but none has a usable {METRICS_FILE} (teacher_acc/student_acc)")
    return written


PANEL_COLUMNS = 3   # panels per figure row: the student, then one per smoothing strategy


def _accuracy_figure(rows: dict[Any, dict[int, list[RunRecord]]], labels: int):
    """The student once (a training's teachers share it), then one panel per smoothing strategy with its variants
    in distinct colours and the student's mean as a dashed grey reference; every legend below its panel."""
    teacher: dict[str, list[tuple[str, tuple]]] = {}   # strategy -> [(variant label, band)]
    students: dict[tuple, list[str]] = {}              # one student curve -> the rows that share it
    for rkey in sorted(rows, key=row_sort_key):
        metrics = [m for m in map(_metrics_of, rows[rkey][labels]) if m is not None]
        t_curves = [c for c in (_curve(m, "teacher_acc") for m in metrics) if c[0]]
        s_curves = [c for c in (_curve(m, "student_acc") for m in metrics) if c[0]]
        variant = row_label(rkey).split(" · ", 1)[-1]
        if t_curves:
            teacher.setdefault(rkey.smooth, []).append((f"{variant} (n={len(t_curves)})", _band(t_curves)))
        if s_curves:
            band = _band(s_curves)
            students.setdefault(tuple(map(tuple, band)), []).append(variant)
    if not teacher and not students:
        return None
    from matplotlib import colormaps

    strategies = [k for k in STRATEGIES if k in teacher] + sorted(set(teacher) - set(STRATEGIES))
    count = 1 + len(strategies)
    ncols = min(PANEL_COLUMNS, count)
    nrows = math.ceil(count / ncols)
    longest = max([len(v) for v in teacher.values()] + [len(students)])
    fig, axes = _figure(ncols, nrows=nrows, height=3.2 + 0.22 * math.ceil(longest / 2))
    panels = list(axes.flat)
    ax = panels[0]
    shared = len(students) == 1
    for i, (band, owners) in enumerate(students.items()):
        steps, mean, low, high = band
        label = (f"student (shared by the {len(owners)} teachers)" if shared and len(owners) > 1 else
                 "student" if shared else f"student of {owners[0]}")
        color = "0.25" if shared else colormaps["tab10" if len(students) <= 10 else "tab20"](i % 20)
        ax.plot(steps, mean, color=color, label=label)
        if low != high:
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_title("student top-1")
    reference = next(iter(students)) if shared else None
    for ax, strategy in zip(panels[1:], strategies, strict=False):
        variants = teacher[strategy]
        palette = colormaps["tab10" if len(variants) <= 10 else "tab20"]
        if reference is not None:
            ax.plot(reference[0], reference[1], color="0.5", linestyle="--", linewidth=1, label="student (mean)")
        for i, (label, (steps, mean, low, high)) in enumerate(variants):
            color = palette(i % palette.N)
            ax.plot(steps, mean, color=color, label=label)
            if low != high:
                ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
        ax.set_title(f"teacher top-1: {strategy}")
    used = panels[:count]
    for ax in panels[count:]:
        ax.set_visible(False)
    low = min(y for ax in used for line in ax.lines for y in line.get_ydata())
    for ax in used:
        ax.set_ylim(max(0.0, low - 2), 100)
        ax.set_xlabel("step")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return fig


def plot_rows(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, *, alg: str, dataset: str, labels: int,
              profile: str | None = None, stat: str = "median", out_dir: str | os.PathLike) -> list[Path]:
    """Each leaderboard row of ``alg`` (and ``supervised``) at ``labels``: mean ± std over seeds, seeds as dots."""
    board = build_leaderboard(results_dir, stat=stat, profile=profile, dataset=dataset)
    written = []
    for section in board.sections:
        rows = [r for r in section.rows if r.key.algorithm in (alg, SUPERVISED) and labels in r.cells]
        if not any(r.key.algorithm == alg for r in rows):
            continue
        names = [f"{r.label} (n={r.cells[labels].n})" for r in rows]
        # rotated tick labels take about 0.05 inch per character below the axes: the figure grows to hold them
        fig, (ax,) = _figure(1, height=3.2 + 0.05 * max(map(len, names)))
        fig.set_size_inches(max(5.2, 0.6 * len(rows) + 2), 3.2 + 0.05 * max(map(len, names)))
        for x, row in enumerate(rows):
            cell = row.cells[labels]
            color = "0.5" if row.key.algorithm == SUPERVISED else "C0"
            # Points, not bars: an ablation's differences are small, and bars must start at 0 to be honest.
            ax.errorbar(x, cell.mean, yerr=cell.std or 0.0, fmt="o", color=color, capsize=4)
            ax.plot([x + 0.15] * cell.n, cell.values, ".", color="k", alpha=0.5, markersize=4)
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", rotation_mode="anchor", fontsize="small")
        ax.set_ylabel("top-1 accuracy (%)")   # the statistic's long name goes in the title, where it fits
        ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{alg}, {labels} labels — {section_title(section.key)}\n"
                     f"{board.stat}: mean ± sample std over seeds; dots: seeds",
                     fontsize="medium")
        name = _slug("rows", alg, dataset, labels, section.key.profile, section.key.model, section.key.steps)
        written.append(_save(fig, Path(out_dir) / f"{name}.png"))
    if not written:
        raise PlotError(f"no finished runs of algorithm={alg!r} dataset={dataset!r} labels={labels}"
                        + (f" profile={profile!r}" if profile else "") + f" in {results_dir}/*/{RECORD_FILE}")
    return written


def _default_smoothing(key: Any) -> bool:
    """The row's strategy-specific settings (schedule, ...) are all their declared defaults."""
    if key.smooth not in STRATEGIES:   # a plug-in: not part of Figure 4's grid
        return False
    declared = strategy_settings(strategy_class(key.smooth))
    return all(name in declared and value == declared[name].default for name, value in key.smoothing)


def _grid_strategy(p: float, m: float) -> str:
    """Which strategy sits at (p, m) of Figure 4: STS contains the others (p = 0: TMA, m = 0: SE, both: none)."""
    return {(True, True): "none", (True, False): "tma", (False, True): "se"}.get((p == 0.0, m == 0.0), "sts")


def grid_cells(rows: Sequence[Any], labels: int, m_ref: float, granularity: str = "layer"
               ) -> tuple[dict[tuple[float, float], PairedDiff], Any] | None:
    """Figure 4's cells from one section's leaderboard rows: (p, m) -> the paired difference (by seed) of that
    teacher from the reference TMA at ``m_ref``, and the reference row; None without the reference or any p > 0.

    (p, 0) is SE, (0, m) TMA, (0, 0) no smoothing; only rows with the default buffers and schedule and the given
    granularity take part.
    """
    at: dict[tuple[float, float], Any] = {}
    for r in rows:
        if labels not in r.cells or not _default_smoothing(r.key) or r.key.buffers not in (None, "copy") \
                or r.key.granularity not in (None, granularity):
            continue
        p = 0.0 if r.key.smooth in ("none", "tma") else r.key.p
        m = 0.0 if r.key.smooth in ("none", "se") else r.key.m
        if p is not None and m is not None and _grid_strategy(p, m) == r.key.smooth:
            at.setdefault((float(p), float(m)), r)
    base = at.get((0.0, m_ref))
    if base is None or not any(p > 0 for p, _ in at):
        return None
    reference = base.cells[labels].by_seed()
    return {k: paired_difference(r.cells[labels].by_seed(), reference) for k, r in at.items()}, base


def plot_grid(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, *, alg: str, dataset: str, labels: int,
              profile: str | None = None, stat: str = "median", granularity: str = "layer",
              out_dir: str | os.PathLike) -> list[Path]:
    """Figure 4 of Huang et al. (NeurIPS 2021) as heat maps (:func:`grid_cells`): each (m, p) teacher minus the
    reference TMA, the one at the section's profile momentum (m = 0.99 on the cpu profile, 0.999 on the paper's).
    A cell shows the mean and, with two or more seeds, the 95 % t-interval.
    """
    board = build_leaderboard(results_dir, stat=stat, profile=profile, dataset=dataset)
    written = []
    for section in board.sections:
        if section.key.profile not in PROFILES:
            continue
        found = grid_cells([r for r in section.rows if r.key.algorithm == alg], labels,
                           PROFILES[section.key.profile].m, granularity)
        if found is None:
            continue
        cells, base = found
        ps, ms = sorted({p for p, _ in cells}), sorted({m for _, m in cells})
        fig, (ax,) = _figure(1, height=1.1 * len(ms) + 1.6)
        fig.set_size_inches(1.25 * len(ps) + 2.4, 1.1 * len(ms) + 1.6)
        grid = [[math.nan] * len(ps) for _ in ms]
        limit = max((abs(d.mean) for d in cells.values() if d.mean is not None), default=1.0) or 1.0
        for (p, m), d in cells.items():
            i, j = ms.index(m), ps.index(p)
            grid[i][j] = d.mean if d.mean is not None else math.nan
            text = "reference" if (p, m) == (0.0, PROFILES[section.key.profile].m) else (
                ("none: " if p == m == 0.0 else "") + f"{d.mean:+.2f}"
                + (f"\n[{d.low:+.1f}, {d.high:+.1f}]" if d.low is not None else f"\nn={d.n}"))
            strong = not math.isnan(grid[i][j]) and abs(grid[i][j]) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color="w" if strong else "k")
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        fig.colorbar(image, ax=ax, label="minus the reference (points)")
        ax.set_xticks(range(len(ps)), [f"{p:g}" + (" (TMA)" if p == 0 else "") for p in ps])
        ax.set_yticks(range(len(ms)), [f"{m:g}" + (" (SE)" if m == 0 else "") for m in ms])
        ax.set_xlabel("p (preserving probability)")
        ax.set_ylabel("m (momentum)")
        fig.suptitle(f"{alg}, {labels} labels — {section_title(section.key)}\nSTS(p, m) minus the reference "
                     f"{base.label}, paired by seed: mean [95 % t-interval]\n{board.stat}", fontsize="small")
        name = _slug("grid", alg, dataset, labels, section.key.profile, section.key.model, section.key.steps,
                     board.stat)
        written.append(_save(fig, Path(out_dir) / f"{name}.png"))
    if not written:
        raise PlotError(f"no (p, m) grid of algorithm={alg!r} dataset={dataset!r} labels={labels}"
                        + (f" profile={profile!r}" if profile else "") + f" in {results_dir}/*/{RECORD_FILE}: "
                        "it needs se/sts teachers at several p and the TMA at the profile's m (train them with "
                        "--smooth tma,se,sts --p 0.1,0.3,0.5,0.7,0.9 --m 0.9,0.99,0.999)")
    return written


def resolve_run_dir(spec: str | os.PathLike, results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR) -> Path:
    """A run directory from a path or a run id (looked up in ``results_dir``)."""
    candidates = [Path(spec), Path(results_dir) / str(spec)]
    for candidate in candidates:
        if (candidate / METRICS_FILE).is_file():
            return candidate
    raise PlotError(f"run {str(spec)!r} not found: no {METRICS_FILE} in "
                    + " or ".join(repr(str(c)) for c in candidates))


def _run_names(run_dirs: Sequence[Path]) -> list[str]:
    """Short legend names, ``fixmatch · sts · seed 0``; the run id is added where two would collide."""
    names = []
    for run_dir in run_dirs:
        try:
            run = RunRecord.read(run_dir)
            names.append(f"{row_label(row_key(run))} · seed {run.seed}")
        except RecordError:
            names.append(run_dir.name)
    return [f"{n} [{d.name}]" if names.count(n) > 1 and n != d.name else n
            for n, d in zip(names, run_dirs, strict=True)]


def plot_smoothness(runs: Sequence[str | os.PathLike], *, results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
                    out_dir: str | os.PathLike) -> list[Path]:
    """Figure 3 of the paper: teacher parameter and output msd between evaluations vs step, log y."""
    if not runs:
        raise PlotError("no run given")
    run_dirs = [resolve_run_dir(spec, results_dir) for spec in runs]
    fig, axes = _figure(2)
    colors = [f"C{i % 10}" for i in range(len(run_dirs))]
    handles, labels = [], []
    for run_dir, name, color in zip(run_dirs, _run_names(run_dirs), colors, strict=True):
        metrics = read_metrics(run_dir / METRICS_FILE)
        drawn = None
        for ax, column in zip(axes, ("teacher_param_msd", "teacher_output_msd"), strict=True):
            steps, values = _curve(metrics, column, positive=True)
            if steps:
                (drawn,) = ax.plot(steps, values, marker="o", markersize=2.5, color=color)
            else:
                _warn(f"{run_dir}: no positive {column} values; nothing drawn for it")
        if drawn is not None:
            handles.append(drawn)
            labels.append(name)
    if not handles:
        raise PlotError(f"no positive teacher_param_msd / teacher_output_msd values in {METRICS_FILE} of "
                        + ", ".join(map(str, run_dirs)))
    for ax, title in zip(axes, ("teacher parameters", "teacher outputs (softmax)"), strict=True):
        ax.set_yscale("log")
        ax.set_title(f"{title}: msd between evaluations")
        ax.set_xlabel("step")
        ax.set_ylabel("mean squared difference (log)")
        ax.grid(alpha=0.3, which="both")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), fontsize="small")
    fig.suptitle("Smoothness of the teacher (cf. Huang et al., NeurIPS 2021, Fig. 3)", fontsize="medium")
    if len(run_dirs) == 1:
        name = _slug("smoothness", run_dirs[0].name)
    else:
        digest = hashlib.sha1("\n".join(str(d.resolve()) for d in run_dirs).encode()).hexdigest()[:8]
        name = _slug("smoothness", run_dirs[0].name, f"and-{len(run_dirs) - 1}-more", digest)
    return [_save(fig, Path(out_dir) / f"{name}.png")]


# ----------------------------------------------------------------------------------------------------
# Command line


def _run_plot(make) -> int:
    try:
        paths = make()
    except (PlotError, LeaderboardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _accuracy_main(args: argparse.Namespace) -> int:
    return _run_plot(lambda: plot_accuracy(args.results_dir, alg=args.alg, dataset=args.dataset,
                                           labels=args.labels, profile=args.profile, out_dir=args.out))


def _smoothness_main(args: argparse.Namespace) -> int:
    return _run_plot(lambda: plot_smoothness(args.run, results_dir=args.results_dir, out_dir=args.out))


def _rows_main(args: argparse.Namespace) -> int:
    return _run_plot(lambda: plot_rows(args.results_dir, alg=args.alg, dataset=args.dataset, labels=args.labels,
                                       profile=args.profile, stat=args.stat, out_dir=args.out))


def _grid_main(args: argparse.Namespace) -> int:
    return _run_plot(lambda: plot_grid(args.results_dir, alg=args.alg, dataset=args.dataset, labels=args.labels,
                                       profile=args.profile, stat=args.stat, granularity=args.granularity,
                                       out_dir=args.out))


def _leaderboard_figure(kinds: argparse._SubParsersAction, name: str, func, *, help: str,
                        description: str) -> argparse.ArgumentParser:
    """A figure drawn from the leaderboard's cells: the selection, --stat, --results-dir and --out options."""
    parser = kinds.add_parser(name, help=help, description=description)
    add_selection(parser, alg_required=True, profile_help="only this profile (default: one figure per section)")
    add_stat(parser)
    add_results_dir(parser)
    parser.add_argument("--out", required=True, help="folder for the PNG files")
    parser.set_defaults(func=func)
    return parser


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plot accuracy`` and ``plot smoothness``; each sets ``func(args) -> int``."""
    plot = subparsers.add_parser("plot", help="PNG figures from run directories",
                                 description="PNG figures from run directories (metrics.csv).")
    kinds = plot.add_subparsers(dest="plot_kind", required=True, metavar="{accuracy,smoothness,rows,grid}")

    acc = kinds.add_parser("accuracy",
                           help="teacher and student top-1 vs step, one line per smoothing strategy",
                           description="Teacher and student top-1 over training steps for one algorithm, "
                           "dataset and label budget: mean over seeds with a min-max band, one line per "
                           "smoothing strategy, one PNG per section (profile, dataset, model, steps).")
    add_selection(acc, alg_required=True, profile_help="only this profile (default: one figure per section)")
    add_results_dir(acc)
    acc.add_argument("--out", required=True, help="folder for the PNG files")
    acc.set_defaults(func=_accuracy_main)

    sm = kinds.add_parser("smoothness", help="the paper's Figure 3: teacher parameter/output msd vs step",
                          description="Figure 3 of Huang et al. (NeurIPS 2021) for one or more runs: "
                          "teacher_param_msd and teacher_output_msd vs step, log y-scale.")
    sm.add_argument("--run", action="append", required=True, metavar="RUN_ID_OR_DIR",
                    help="run id (in --results-dir) or run directory; repeat for several runs")
    add_results_dir(sm, "where run ids are looked up")
    sm.add_argument("--out", required=True, help="folder for the PNG file")
    sm.set_defaults(func=_smoothness_main)

    _leaderboard_figure(kinds, "rows", _rows_main,
                        help="each leaderboard row's mean ± std (the Table-4 view of an ablation)",
                        description="The leaderboard's cells for one algorithm, dataset and label budget (mean ± "
                        "sample std over seeds, seeds as dots), with the supervised baseline; one PNG per section "
                        "(profile, dataset, model, steps).")
    grid = _leaderboard_figure(kinds, "grid", _grid_main,
                               help="the paper's Figure 4: a heat map of STS(p, m) minus TMA, paired by seed",
                               description="Figure 4 of Huang et al. (NeurIPS 2021) for one algorithm, dataset and "
                               "label budget: rows m (0 = SE), columns p (0 = TMA), each cell the paired difference "
                               "from the TMA at the profile's m, mean and 95 % t-interval; one PNG per section.")
    grid.add_argument("--granularity", default="layer", choices=GRANULARITIES,
                      help="the unit of SE/STS's random draw the grid is drawn for")
