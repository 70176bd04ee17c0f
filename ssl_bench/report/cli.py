"""The ``leaderboard`` and ``compare`` commands: argument parsing and printing, nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssl_bench.records import RECORD_FILE, atomic_write_bytes
from ssl_bench.report.compare import compare
from ssl_bench.report.export import EXPORT_FORMATS, comparison_rows, render_rows, run_rows
from ssl_bench.report.leaderboard import LeaderboardError, build_leaderboard, load_runs
from ssl_bench.report.options import add_results_dir, add_selection, add_stat
from ssl_bench.report.render import FORMATS, LEADERBOARD_FILE, render, render_compare, write_leaderboard


def leaderboard_main(args: argparse.Namespace) -> int:
    try:
        board = build_leaderboard(args.results_dir, stat=args.stat, profile=args.profile,
                                  dataset=args.dataset)
        print(render(board, args.format), end="")
        if args.format != "markdown" and board.problems:
            for p in board.problems:
                print(f"warning: skipped {p.path}: {p.reason}", file=sys.stderr)
        if args.write:   # only when asked: a checkout's committed results/LEADERBOARD.md never changes by itself
            unfiltered = board if args.profile is None and args.dataset is None and args.format == "markdown" else None
            path = write_leaderboard(args.results_dir, stat=args.stat, board=unfiltered)
            print(f"wrote {path}", file=sys.stderr)
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def compare_main(args: argparse.Namespace) -> int:
    try:
        comparisons = compare(args.results_dir, alg=args.alg, dataset=args.dataset, labels=args.labels,
                              profile=args.profile, stat=args.stat)
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "markdown":
        print(render_compare(comparisons), end="")
    else:
        print(render_rows(comparison_rows(comparisons), args.format), end="")
    return 0


def export_main(args: argparse.Namespace) -> int:
    try:
        runs, problems = load_runs(args.results_dir)
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"warning: skipped {p.path}: {p.reason}", file=sys.stderr)
    text = render_rows(run_rows(runs), args.format)
    if args.out is None:
        print(text, end="")
    else:
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
        print(f"wrote {len(runs)} runs to {args.out}", file=sys.stderr)
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``leaderboard``, ``compare`` and ``export`` to the CLI's sub-parsers; each sets ``func(args) -> int``."""
    lb = subparsers.add_parser(
        "leaderboard",
        help=f"Table-6-style leaderboard derived from <results-dir>/*/{RECORD_FILE}",
        description="Print the leaderboard derived from the run records; with --write also (re)write "
        f"<results-dir>/{LEADERBOARD_FILE} atomically (the committed one: --results-dir results --write).",
    )
    add_results_dir(lb)
    lb.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default: markdown)")
    add_stat(lb)
    lb.add_argument("--profile", help="only this profile's sections (default: all, best budget first)")
    lb.add_argument("--dataset", help="only this dataset's sections (default: all)")
    lb.add_argument("--write", action=argparse.BooleanOptionalAction, default=False,   # --no-write: the old opt-out
                    help=f"also (re)write <results-dir>/{LEADERBOARD_FILE}, the unfiltered markdown board "
                    "(default: print only)")
    lb.set_defaults(func=leaderboard_main)

    cp = subparsers.add_parser(
        "compare",
        help="paired differences over seeds with 95 %% t-intervals: each strategy minus TMA, each "
        "algorithm minus supervised",
        description="For one dataset and label budget, per section (profile, dataset, model, steps): every "
        "smoothing strategy minus TMA, and every algorithm's gain over the supervised baseline with the same "
        "smoothing, paired by seed.",
    )
    add_selection(cp, alg_required=False, profile_help="only this profile (default: every section that has the runs)")
    add_stat(cp)
    add_results_dir(cp)
    cp.add_argument("--format", choices=("markdown", *EXPORT_FORMATS), default="markdown",
                    help="markdown tables, or long form for pandas: one row per paired difference")
    cp.set_defaults(func=compare_main)

    ex = subparsers.add_parser(
        "export", help="every run record as long-form CSV or JSON (one row per run) for pandas",
        description="One row per run of <results-dir>: run id, status, training and teacher, every identifying "
        "setting (record.settings), the data and machine it ran on, and every statistic (record.results).")
    add_results_dir(ex)
    ex.add_argument("--format", choices=EXPORT_FORMATS, default="csv", help="csv (lists as JSON cells) or json")
    ex.add_argument("--out", help="write to this file (atomically) instead of standard output")
    ex.set_defaults(func=export_main)
