"""``ssl-bench quickstart``: the suite's point in one screen, on a laptop CPU, with no download.

Trains FixMatch and the supervised baseline (the same loop, augmentation, optimizer and teacher, labelled loss
only) on the embedded digits -- real scanned handwritten digits that ship inside scikit-learn -- with 20 labels
(2 per class), and prints both accuracies side by side with the gain. Both runs are ordinary runs: their
directories, records and metrics are in the results folder like any other. A finished run with the same settings
is reused (and said so); --fresh trains both again, in new directories.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
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
    parser.add_argument("--fresh", action="store_true",
                        help="train both again in new run directories, even where finished runs with the same "
                             "settings exist (default: reuse them, and say so)")
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
        reused = None if args.fresh else finished_run(config)
        if reused is not None:
            print(f"{algorithm}: reusing the finished run {reused} (trained {_minutes(reused)}; --fresh trains "
                  "again)", flush=True)
        else:
            print(f"training {algorithm} ({args.steps} steps) ...", flush=True)
        record, run_dir = train(config, resume=not args.fresh, progress=not args.no_progress, quiet=True,
                                command=f"ssl-bench quickstart --steps {args.steps} --seed {args.seed}")
        outcome[algorithm] = {**record["results"], "run_dir": run_dir, "reused": reused is not None,
                              "wall_seconds": record.get("wall_seconds") or 0.0}
    print(format_table(outcome, args.steps, args.seed, time.perf_counter() - started))
    return 0


def finished_run(config: RunConfig) -> Path | None:
    """The latest finished run directory with ``config``'s identifying settings, or None."""
    from ssl_bench.records import RunRecord, RunStatus
    from ssl_bench.run.build import plan_teachers
    from ssl_bench.run.rundirs import matching_run_dir, run_base_name

    resolved = plan_teachers([config])[0]
    found = matching_run_dir(Path(config.results_dir), run_base_name(resolved), resolved)
    record = RunRecord.read_if_present(found) if found is not None else None
    return found if record is not None and record.status == RunStatus.FINISHED else None


def _minutes(run_dir: Path) -> str:
    from ssl_bench.records import RunRecord

    record = RunRecord.read_if_present(run_dir)
    seconds = getattr(record, "wall_seconds", None) if record is not None else None
    return f"in {seconds / 60:.1f} min" if seconds else "earlier"


def format_table(outcome: dict[str, dict[str, Any]], steps: int, seed: int, seconds: float) -> str:
    """Both accuracies (median of the last 20 evaluations) and the gain, teacher and student."""
    base, ssl = outcome["supervised"], outcome["fixmatch"]
    rows = [("supervised (labels only)", base), ("fixmatch", ssl)]
    reused = [name for name, r in outcome.items() if r.get("reused")]
    trained = sum(r.get("wall_seconds", 0.0) for r in outcome.values())
    took = (f"{seconds / 60:.1f} min" if not reused else
            f"reused {' and '.join(reused)}: trained in {trained / 60:.1f} min then, --fresh to train again")
    lines = [f"\nFixMatch vs the supervised baseline: embedded digits, {DEFAULTS['labels']} labels, {steps} steps, "
             f"seed {seed} ({took})",
             f"  {'':26}{'teacher top-1':>15}{'student top-1':>15}"]
    lines += [f"  {name:26}{r['teacher_median_last20']:>15.1f}{r['student_median_last20']:>15.1f}" for name, r in rows]
    gain_t = ssl["teacher_median_last20"] - base["teacher_median_last20"]
    gain_s = ssl["student_median_last20"] - base["student_median_last20"]
    lines.append(f"  {'gain from unlabelled data':26}{gain_t:>+15.1f}{gain_s:>+15.1f}")
    lines.append("  (median of the last 20 evaluations, %; runs in "
                 f"{ssl['run_dir'].parent}; one seed - `ssl-bench compare` pairs several)")
    return "\n".join(lines)
