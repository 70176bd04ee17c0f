"""The leaderboard and paired comparisons as text: markdown (``LEADERBOARD.md``), CSV (long form) and JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ssl_bench.data.published import fixmatch_table2_columns, load_fixmatch_table2
from ssl_bench.records import DEFAULT_RESULTS_DIR, RECORD_FILE, atomic_write_bytes
from ssl_bench.report.compare import ArmComparison, Comparison
from ssl_bench.report.leaderboard import (
    STAT_DESCRIPTIONS,
    STATS,
    SUPERVISED,
    Cell,
    Leaderboard,
    LeaderboardError,
    Section,
    build_leaderboard,
    row_key,
    row_label,
    section_key,
    section_title,
)
from ssl_bench.report.paper import load_paper_table, paper_columns
from ssl_bench.report.paper_usb import load_usb_table, usb_columns

FORMATS = ("markdown", "csv", "json")
LEADERBOARD_FILE = "LEADERBOARD.md"


def format_cell(cell: Cell | None, *, paper: bool = True, stat: str | None = None) -> str:
    """``41.3 ± 2.1 (n=3) | 92.06``; ``40.0 (n=1)`` for one seed; empty without runs; ``(n=3, last)`` when the
    cell holds another statistic than the board's ``stat`` (a paper row's own)."""
    if cell is None or cell.n == 0:
        return ""
    digits = 3 if (cell.stat or stat or "").endswith(("_ece_last", "_nll_last")) else 1   # fractions, nats
    text = f"{cell.mean:.{digits}f}"
    if cell.std is not None:
        text += f" ± {cell.std:.{digits}f}"
    other = ""
    if stat is not None and cell.stat not in (None, stat):
        other = next((k for k, v in STATS.items() if v == cell.stat), cell.stat)
    text += f" (n={cell.n}{', ' + other if other else ''})"
    if paper and cell.paper is not None:
        text += f" | {cell.paper:.2f}"
    return text


def _inline(text: Any) -> str:
    """Text from a record as one line of Markdown that stays text: every line break (``str.split`` also splits at the
    Unicode line separators) becomes a space and ``<``/``>`` are entities, so a record's field never starts a
    heading, a list, a table row or an HTML tag in LEADERBOARD.md."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace(">", "&gt;")


def _code(text: Any) -> str:
    """A record's value inside a Markdown code span: one line, no backtick to close the span early."""
    return "`" + " ".join(str(text).split()).replace("`", "'") + "`"


def _md(text: Any) -> str:
    """Make text safe inside a markdown table cell."""
    return _inline(str(text).replace("\\", "\\\\").replace("|", "\\|"))


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _short(text: str | None, limit: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _paper_reference_section() -> list[str]:
    """The paper's whole Table 6, to read every section against (scaled runs get no paper number)."""
    table = load_paper_table()
    columns = [(family, n) for family in table["columns"] for n in paper_columns(family)]
    short = {"cifar10": "C10", "cifar100": "C100"}   # the paper's column groups, as the text below names them
    header = ["paper row", "ssl-bench row", "statistic"] + [f"{short[f]}/{n}" for f, n in columns]
    body = []
    for row in table["rows"]:
        values = [row.get(f, {}).get(str(n)) for f, n in columns]
        statistic = row.get("statistic", "teacher_median_last20")
        short_stat = next((k for k, v in STATS.items() if v == statistic), statistic)
        body.append([row["method"], f"{row['algorithm']} · {row['smooth']}", short_stat]
                    + ["" if v is None else f"{float(v):.2f}" for v in values])
    source = table["source"]
    return ["", "## The paper's Table 6, for reference", "",
            f"{source['paper']}, {source['venue']}, Table 6: top-1 on the full CIFAR-10 (C10) / "
            "CIFAR-100 (C100) with the paper's protocol (2^20 steps, WRN-28-2 / WRN-28-8, m = 0.999). Not "
            "comparable with scaled profiles or subsets; shown so every section can be read against it. "
            "'statistic': how each row was read off a training, and the statistic its ssl-bench cell uses "
            "beside it: median = the median of the last 20 evaluations (the FixMatch codebase's baselines, "
            "scripts/extract_accuracy.py); last = the final teacher (the paper's own FixMatch rows: 'We dump "
            "the teacher model at the end of training').", "",
            *md_table(header, body)]


def _usb_reference_section() -> list[str]:
    """USB's published classic-CV numbers (the post-FixMatch baselines' reference), read as Table 6 is."""
    table = load_usb_table()
    columns = [(family, n) for family in table["columns"] for n in usb_columns(family)]
    short = {"cifar10": "C10", "cifar100": "C100"}
    header = ["USB row", "ssl-bench row"] + [f"{short[f]}/{n}" for f, n in columns]
    body = []
    for row in table["rows"]:
        cells = [row.get(f, {}).get(str(n)) for f, n in columns]
        body.append([row["usb_name"], f"{row['algorithm']} · {row['smooth']}"]
                    + ["" if c is None else f"{c['accuracy']:.2f} ± {c['std']:.2f}" for c in cells])
    source = table["source"]
    return ["", "## USB's classic-CV results, for reference", "",
            f"{source['suite']}, `{source['file']}` (commit {source['file_commit'][:12]}, {source['file_date']}): "
            f"top-1 = 100 − the printed error, ± its std over 3 seeds; {source['statistic']}; the EMA model. "
            f"{table['note']} Not comparable with scaled profiles or subsets.", "",
            *md_table(header, body)]


def _fixmatch_table2_section() -> list[str]:
    """The FixMatch paper's SVHN and STL-10 columns (its Table 2), the reference of those data sets."""
    table = load_fixmatch_table2()
    columns = [(family, n) for family in table["columns"] for n in fixmatch_table2_columns(family)]
    header = ["paper row", "ssl-bench row"] + [f"{family.upper()}/{n}" for family, n in columns]
    body = []
    for row in table["rows"]:
        cells = [row.get(f, {}).get(str(n)) for f, n in columns]
        name = row["algorithm"] + (f" ({row['strong_augment']})" if row.get("strong_augment") else "")
        body.append([row["label"], name]
                    + ["" if c is None else f"{100 - c[0]:.2f} ± {c[1]:.2f}" for c in cells])
    source = table["source"]
    return ["", "## The FixMatch paper's SVHN and STL-10 results, for reference", "",
            f"{source['paper']}, {source['venue']}, {source['table']}: top-1 = 100 − the printed error, ± its std "
            f"over 5 splits. {source['protocol']} {source['verification']} 'cta' (CTAugment) has no ssl-bench "
            "implementation.", "", *md_table(header, body)]


def _section_notes(section: Section) -> list[str]:
    notes = []
    for row in section.ceilings:
        for cell in row.cells.values():
            notes.append(f"fully-labelled ceiling: {row.label} with all {cell.labels} training labels: "
                         f"{format_cell(cell, paper=False)}")
    if section.needs_baseline:
        notes.append(f"no `{SUPERVISED}` runs in this section: the gain of semi-supervised learning over "
                     "the labelled loss alone cannot be read here (run `--alg "
                     f"{SUPERVISED}` with the same settings)")
    shared = section.shared_trainings()
    if shared:
        notes.append(f"{sum(shared.values())} of these runs come from {len(shared)} shared "
                     f"training{'s' if len(shared) != 1 else ''} (one "
                     "student, several teachers): their differences are exactly paired")
    for row in section.rows:
        for cell in row.cells.values():
            if cell.mixed_setup:
                notes.append(f"{row.label}, {cell.labels} labels mixes runs with different alg_args / targets / "
                             "mirroring: "
                             + ", ".join(cell.run_ids))
    split = [row.label for row in section.rows + section.ceilings if row.show_content]
    if split:
        notes.append("rows that differ only in `file`/`data` ran another algorithm file or another data file of the "
                     "same name (sha256 / fingerprint in their records), so they are not averaged: "
                     + "; ".join(split))
    for s in section.superseded:
        notes.append(f"seed {s.seed}: {_code(s.run_id)} superseded by the later {_code(s.kept)}")
    return notes


def render_markdown(board: Leaderboard) -> str:
    source = load_paper_table()["source"]
    out = [
        "# ssl-bench leaderboard",
        "",
        f"Generated by `{board.command}` from the run records `{board.results_dir}/*/{RECORD_FILE}` "
        f"({board.num_records} records read). Derived file: do not edit, re-run the command to rebuild it.",
        "",
        f"Statistic: **{board.stat_description}** (`{board.stat}`). Each cell: mean ± sample std over seeds "
        "(n = seeds) | the paper's number for the same algorithm and smoothing "
        f"({source['paper']}, {source['venue']}, Table 6), shown only for runs in the paper configuration: "
        "the full profile on the full data set with the reference's effective settings (layer-wise, p = 0.5, "
        "m = 0.999). A row label names every setting that differs from the paper's or the reference's. "
        f"`{SUPERVISED}`: the labelled loss alone, the baseline every gain is measured against. Empty cell: "
        "no finished run. Sections are never averaged together.",
    ]
    if not board.sections:
        out += ["", "_No finished runs yet._"]
    for section in board.sections:
        out += ["", f"## {_inline(section.title)}", ""]
        header = ["method"] + [f"{n} labels" for n in section.columns]
        body = [[row.label] + [format_cell(row.cells.get(n), stat=board.stat) for n in section.columns]
                for row in section.rows]
        out += md_table(header, body)
        notes = _section_notes(section)
        if notes:
            out += [""] + [f"- {_inline(_short(n, 400))}" for n in notes]
    out += _paper_reference_section() + _usb_reference_section() + _fixmatch_table2_section()
    if board.not_counted:
        out += ["", "## Runs not counted (failed, interrupted, running, stale, or without the statistic)", ""]
        body = []
        for nc in board.not_counted:
            r = nc.run
            progress = f"{r.steps_done if r.steps_done is not None else '?'}/{r.steps}"
            body.append([r.run_id, nc.status.value, section_title(section_key(r)), row_label(row_key(r)),
                         r.labels, r.seed, progress, _short(nc.reason)])
        out += md_table(["run_id", "status", "section", "method", "labels", "seed", "steps", "reason"], body)
    if board.problems:
        out += ["", "## Unreadable run records", ""]
        out += [f"- {_code(p.path)}: {_inline(_short(p.reason, 400))}" for p in board.problems]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("profile", "dataset", "dataset_kind", "dataset_family", "model", "steps", "method",
               "algorithm", "smooth", "granularity", "p", "m", "buffers", "smoothing", "deviations", "setup",
               "ceiling", "labels", "stat", "mean", "std", "n", "paper", "seeds", "run_ids")


def _cell_dicts(board: Leaderboard) -> Iterable[dict[str, Any]]:
    for section in board.sections:
        for ceiling, rows in ((False, section.rows), (True, section.ceilings)):
            for row in rows:
                for labels, cell in sorted(row.cells.items()):
                    yield {
                        **section.key._asdict(), "method": row.label, **row.key._asdict(),
                        "deviations": json.dumps(dict(row.key.deviations)) if row.key.deviations else "",
                        "setup": json.dumps(dict(row.key.setup)) if row.key.setup else "",
                        "smoothing": json.dumps(dict(row.key.smoothing)) if row.key.smoothing else "",
                        "ceiling": ceiling, "labels": labels, "stat": cell.stat or board.stat, "mean": cell.mean,
                        "std": cell.std, "n": cell.n, "paper": cell.paper, "seeds": cell.seeds,
                        "run_ids": cell.run_ids,
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


def _row_json(row) -> dict[str, Any]:
    return {"method": row.label, **row.key._asdict(), "deviations": dict(row.key.deviations),
            "setup": dict(row.key.setup), "smoothing": dict(row.key.smoothing),
            "cells": {str(n): {"mean": c.mean, "std": c.std, "n": c.n, "paper": c.paper, "seeds": c.seeds,
                               "values": c.values, "run_ids": c.run_ids, "mixed_setup": c.mixed_setup,
                               "trainings": c.trainings}
                      for n, c in sorted(row.cells.items())}}


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
                "rows": [_row_json(row) for row in section.rows],
                "ceilings": [_row_json(row) for row in section.ceilings],
                "has_supervised": section.has_supervised,
                "shared_trainings": section.shared_trainings(),
                "superseded": [vars(s) for s in section.superseded],
            }
            for section in board.sections
        ],
        "not_counted": [
            {"run_id": nc.run.run_id, "status": nc.status.value, "reason": nc.reason,
             "section": section_key(nc.run)._asdict(), "method": row_label(row_key(nc.run)),
             "labels": nc.run.labels, "seed": nc.run.seed, "steps_done": nc.run.steps_done}
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


def write_leaderboard(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, *, stat: str = "median",
                      profile: str | None = None, dataset: str | None = None,
                      board: Leaderboard | None = None) -> Path:
    """(Re)write ``<results_dir>/LEADERBOARD.md`` atomically; returns its path."""
    board = board or build_leaderboard(results_dir, stat=stat, profile=profile, dataset=dataset)
    path = Path(results_dir) / LEADERBOARD_FILE
    atomic_write_bytes(path, render_markdown(board).encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------------------------
# Paired comparisons


def _signed(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{x:+.{digits}f}"


def _arm_rows(arms: Sequence[ArmComparison]) -> list[list[Any]]:
    body = []
    for arm in arms:
        d = arm.diff
        ci = ("undefined" if d.n else "") if d.low is None else f"[{d.low:+.2f}, {d.high:+.2f}]"
        unpaired = "; ".join(part for part in (
            f"{arm.label}: {' '.join(map(str, d.only_arm))}" if d.only_arm else "",
            f"{arm.baseline_label}: {' '.join(map(str, d.only_baseline))}" if d.only_baseline else "",
        ) if part)
        body.append([
            f"{arm.label} − {arm.baseline_label}", d.n, _signed(d.mean),
            "" if d.std is None else f"{d.std:.2f}",
            ci, "" if arm.arm_mean is None else f"{arm.arm_mean:.2f}",
            "" if arm.baseline_mean is None else f"{arm.baseline_mean:.2f}",
            " ".join(map(str, d.seeds)), unpaired or "—", d.verdict,
        ])
    return body


_ARM_HEADER = ["difference", "n", "mean", "std", "95 % CI", "arm", "baseline", "paired seeds",
               "unpaired seeds (not used)", "verdict"]


def render_compare(comparisons: Sequence[Comparison]) -> str:
    """Markdown, per section: each smoothing strategy minus TMA, then each row's gain over ``supervised``."""
    by_section: dict[Any, list[Comparison]] = {}
    for comp in comparisons:
        by_section.setdefault((comp.section, comp.labels, comp.stat), []).append(comp)
    out = []
    for (section, labels, stat), comps in by_section.items():
        names = ", ".join(comp.algorithm for comp in comps)
        out += [
            f"## {_inline(names)}, {labels} labels — {_inline(section_title(section))}",
            "",
            f"Statistic: {STAT_DESCRIPTIONS.get(stat, stat)} (`{stat}`). Paired by seed; "
            "95 % interval: mean ± t(0.975, n-1) · std / √n.",
            "",
            "### Smoothing strategy minus TMA",
            "",
        ]
        arms = [arm for comp in comps for arm in comp.arms]
        out += md_table(_ARM_HEADER, _arm_rows(arms)) + [""] if arms else []
        for comp in comps:
            if comp.baseline is None:
                out += [f"- {comp.algorithm}: no TMA runs in this section, nothing to compare against."]
            elif not comp.arms:
                out += [f"- {comp.algorithm}: only the baseline `{comp.baseline}` was run here."]
        if out[-1] != "":
            out.append("")
        out += [f"### Gain over `{SUPERVISED}` (same data, budget, profile, model, steps, smoothing)", ""]
        gains = [arm for comp in comps for arm in comp.over_supervised]
        out += md_table(_ARM_HEADER, _arm_rows(gains)) + [""] if gains else []
        missing = ", ".join(c.algorithm for c in comps if c.algorithm != SUPERVISED and not c.over_supervised)
        if missing:
            out += [f"- {missing}: no `{SUPERVISED}` runs with the same smoothing in this section; run "
                    f"`--alg {SUPERVISED}` with the same settings and seeds.", ""]
        if out[-1] != "":
            out.append("")
    return "\n".join(out)
