"""``ssl-bench quickstart``: the suite's point in one screen, on a laptop CPU, with no download.

Trains FixMatch and the supervised baseline (the same loop, augmentation, optimizer and teacher, labelled loss
only) on the embedded digits -- real scanned handwritten digits that ship inside scikit-learn -- with 20 labels
(2 per class), and prints both accuracies side by side with the gain. Both runs are ordinary runs: their
directories, records and metrics are in the results folder like any other.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ssl_bench.config import RunConfig
from ssl_bench.records import DEFAULT_RESULTS_DIR

ALGORITHMS = ("supervised", "fixmatch")
DEFAULTS = {"dataset": "digits", "labels": 20, "profile": "cpu", "smooth": "tma"}
DEFAULT_STEPS = 1024


def add_subcommand(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="FixMatch vs the supervised baseline on real digits in a few CPU minutes",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps of each run")
    parser.add_argument("--seed", type=int, default=0, help="seed of both runs (the same split and initialisation)")
    parser.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                        help=f"where the two run directories are created (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    from ssl_bench.run.loop import train

    outcome: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for algorithm in ALGORITHMS:
        # The profile evaluates every 32 steps; a shortened run evaluates more often, so that the median of the
        # last 20 evaluations still covers the end of training, not its first steps.
        config = RunConfig(algorithm=algorithm, steps=args.steps, seed=args.seed, results_dir=args.results_dir,
                           device=args.device, eval_every=min(32, max(1, args.steps // 32)), **DEFAULTS)
        print(f"training {algorithm} ({args.steps} steps) ...", flush=True)
        record, run_dir = train(config, resume=True, progress=not args.no_progress, quiet=True,
                                command=f"ssl-bench quickstart --steps {args.steps} --seed {args.seed}")
        outcome[algorithm] = {**record["results"], "run_dir": run_dir}
    print(format_table(outcome, args.steps, args.seed, time.perf_counter() - started))
    return 0


def format_table(outcome: dict[str, dict[str, Any]], steps: int, seed: int, seconds: float) -> str:
    """Both accuracies (median of the last 20 evaluations) and the gain, teacher and student."""
    base, ssl = outcome["supervised"], outcome["fixmatch"]
    rows = [("supervised (labels only)", base), ("fixmatch", ssl)]
    lines = [f"\nFixMatch vs the supervised baseline: embedded digits, {DEFAULTS['labels']} labels, {steps} steps, "
             f"seed {seed} ({seconds / 60:.1f} min)",
             f"  {'':26}{'teacher top-1':>15}{'student top-1':>15}"]
    lines += [f"  {name:26}{r['teacher_median_last20']:>15.1f}{r['student_median_last20']:>15.1f}" for name, r in rows]
    gain_t = ssl["teacher_median_last20"] - base["teacher_median_last20"]
    gain_s = ssl["student_median_last20"] - base["student_median_last20"]
    lines.append(f"  {'gain from unlabelled data':26}{gain_t:>+15.1f}{gain_s:>+15.1f}")
    lines.append("  (median of the last 20 evaluations, %; runs in "
                 f"{ssl['run_dir'].parent}; one seed - `ssl-bench compare` pairs several)")
    return "\n".join(lines)
