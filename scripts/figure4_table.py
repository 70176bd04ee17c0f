"""The README's Figure-4 table: every teacher of the (p, m) grid beside the reference TMA and the supervised
baseline, on three statistics, each paired by seed with a 95 % t-interval.

    python scripts/figure4_table.py --results-dir results/figure4 --dataset digits --labels 20

Reads the records only (``ssl_bench.report``); prints Markdown.
"""

from __future__ import annotations

import argparse

from ssl_bench.report.compare import compare
from ssl_bench.report.leaderboard import build_leaderboard

STATS = (("last", "top-1, final teacher"), ("corruption", "synthetic-c mean top-1"), ("ece", "ECE"))


def _fmt(d) -> str:
    if d.mean is None:
        return "—"
    digits = 3 if abs(d.mean) < 0.1 and d.low is not None and abs(d.high - d.low) < 0.5 else 2
    interval = f" [{d.low:+.{digits}f}, {d.high:+.{digits}f}]" if d.low is not None else ""
    return f"{d.mean:+.{digits}f}{interval}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results/figure4")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--alg", default="fixmatch")
    args = parser.parse_args()
    columns: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, float]] = {}
    base_label = None
    for stat, _ in STATS:
        (comparison,) = [c for c in compare(args.results_dir, alg=args.alg, dataset=args.dataset,
                                            labels=args.labels, stat=stat) if c.algorithm == args.alg]
        base_label = comparison.baseline
        for arm in comparison.arms:
            columns.setdefault(arm.label, {})[stat] = _fmt(arm.diff)
        board = build_leaderboard(args.results_dir, stat=stat, dataset=args.dataset)
        for section in board.sections:
            for row in section.rows:
                if args.labels in row.cells:
                    values.setdefault(row.label, {})[stat] = row.cells[args.labels].mean
    header = ["teacher", *(f"{name} (mean of 3 seeds)" for _, name in STATS[:2]), "ECE",
              *(f"{name}: minus {base_label}, 95 % CI" for _, name in STATS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    # the leaderboard's order (supervised, then the strategies as it sorts them), the reference first
    ordered = [label for label in values if label.startswith("supervised")] + [base_label] + [
        label for label in values if label in columns]
    for label in ordered:
        v = values[label]
        cells = [f"{v.get('last', float('nan')):.1f}", f"{v.get('corruption', float('nan')):.1f}",
                 f"{v.get('ece', float('nan')):.3f}"]
        cells += ["reference" if label == base_label else columns.get(label, {}).get(stat, "—") for stat, _ in STATS]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
