"""The paired gain of an algorithm over the supervised baseline at every evaluation of its runs.

    python scripts/gain_curve.py --results-dir results --dataset cifar10_subset --labels 250 --profile cpu

For each seed that both arms ran (same dataset, labels, profile, steps, teacher), the difference of the teacher's
top-1 at each evaluation step, then the mean over seeds and its 95 % t-interval (``ssl_bench.report.stats``),
every ``--every`` steps. It reads records and metrics.csv only. Within one run the learning rate follows the
cosine schedule of the run's full length, so the value at step k is not the value of a k-step run: it says
whether the gap opens or closes as training goes on, not what a shorter budget would give.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench.records import RunRecord, RunStatus  # noqa: E402
from ssl_bench.report.stats import paired_difference  # noqa: E402


def teacher_curves(results_dir: Path, algorithm: str, dataset: str, labels: int, profile: str,
                   teacher: str) -> dict[int, dict[int, float]]:
    """seed -> {step: teacher top-1} of every finished run of ``algorithm`` with that teacher key."""
    curves: dict[int, dict[int, float]] = {}
    for path in sorted(results_dir.glob("*/record.json")):
        record = RunRecord.read(path.parent)
        if (record.algorithm, record.dataset, record.labels, record.profile) != (algorithm, dataset, labels,
                                                                                 profile):
            continue
        key = record.teacher or f"{record.smooth}-m{record.m}-{record.buffers}"
        if record.status is not RunStatus.FINISHED or key != teacher:
            continue
        with open(path.parent / "metrics.csv", newline="") as f:
            curves[record.seed] = {int(r["step"]): float(r["teacher_acc"]) for r in csv.DictReader(f)}
    return curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--alg", default="fixmatch")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--labels", type=int, required=True)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--teacher", default="tma-m0.99-copy", help="teacher key, e.g. tma-m0.999-copy")
    parser.add_argument("--every", type=int, default=1024, help="print every this many steps")
    args = parser.parse_args(argv)
    root = Path(args.results_dir)
    arm = teacher_curves(root, args.alg, args.dataset, args.labels, args.profile, args.teacher)
    base = teacher_curves(root, "supervised", args.dataset, args.labels, args.profile, args.teacher)
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        print(f"no seed with both {args.alg} and supervised runs", file=sys.stderr)
        return 2
    steps = sorted(set.intersection(*(set(arm[s]) & set(base[s]) for s in seeds)))
    print(f"{args.alg} - supervised, {args.dataset}, {args.labels} labels, profile {args.profile}, teacher "
          f"{args.teacher}, seeds {seeds} (teacher top-1, %)")
    print("| step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean gain | 95 % CI |")
    print("|---" * (len(seeds) + 3) + "|")
    for step in steps:
        if step % args.every and step != steps[-1]:
            continue
        d = paired_difference({s: arm[s][step] for s in seeds}, {s: base[s][step] for s in seeds})
        ci = f"[{d.low:+.1f}, {d.high:+.1f}]" if d.low is not None else "undefined"
        print(f"| {step} | " + " | ".join(f"{arm[s][step] - base[s][step]:+.1f}" for s in seeds)
              + f" | {d.mean:+.2f} | {ci} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
