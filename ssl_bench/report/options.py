"""The options of the report commands (leaderboard, compare, plot), each declared once."""

from __future__ import annotations

import argparse

from ssl_bench.records import DEFAULT_RESULTS_DIR
from ssl_bench.report.leaderboard import STATS


def positive_int(text: str) -> int:
    """argparse type: a positive integer, or an error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_results_dir(parser: argparse.ArgumentParser, what: str = "folder of run directories") -> None:
    parser.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"{what} (default: {DEFAULT_RESULTS_DIR})")


def add_stat(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stat", choices=tuple(STATS), default="median",
                        help="median: teacher top-1, median of the last 20 evaluations (the official FixMatch "
                             "protocol); best: the best evaluation (USB/TorchSSL); last: the final one; ece, nll: "
                             "the final teacher's calibration; corruption: its mean top-1 on the corrupted test "
                             "set (--corruptions)")


def add_selection(parser: argparse.ArgumentParser, *, alg_required: bool, profile_help: str) -> None:
    """--alg, --dataset, --labels and --profile: which runs a comparison or a figure is about."""
    parser.add_argument("--alg", required=alg_required,
                        help="algorithm name, e.g. fixmatch" + ("" if alg_required else
                                                                " (default: every algorithm run)"))
    parser.add_argument("--dataset", required=True, help="dataset name as in the records, e.g. cifar10_subset")
    parser.add_argument("--labels", required=True, type=positive_int, help="label budget, e.g. 40")
    parser.add_argument("--profile", help=profile_help)
