"""Command line: ``run`` (the default), ``leaderboard``, ``compare``, ``plot`` and ``sweep``.

    python run_bench.py --alg fixmatch --smooth sts --labels 40 --profile cpu --dataset cifar10_subset
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ssl_bench.config import DEFAULT_M, DEFAULT_P, PROFILES, RunConfig
from ssl_bench.smoothing import BUFFER_POLICIES, GRANULARITIES, STRATEGIES

SUBCOMMANDS = ("run", "leaderboard", "compare", "plot", "sweep")


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value, e.g. threshold=0.9")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of one run (shared by ``run`` and ``sweep``). Defaults are printed by --help."""
    d = RunConfig()
    g = parser.add_argument_group("experiment")
    g.add_argument("--alg", default=d.algorithm, help="algorithm name (a file in algorithms/) or path/to/my_alg.py")
    g.add_argument("--alg-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="override one of the algorithm's hyper-parameters (repeatable)")
    g.add_argument("--smooth", default=d.smooth, choices=STRATEGIES, help="teacher smoothing strategy")
    g.add_argument("--p", type=float, default=DEFAULT_P, help="SE/STS preserving probability (paper Sec. 4.1: 0.5)")
    g.add_argument("--m", type=float, default=None,
                   help=f"TMA/STS momentum (default: the profile's; FixMatch's EMA {DEFAULT_M} for full/short)")
    g.add_argument("--granularity", default=d.granularity, choices=GRANULARITIES, help="SE/STS unit")
    g.add_argument("--buffers", default=d.buffers, choices=BUFFER_POLICIES,
                   help="teacher BatchNorm statistics: copied from the student or averaged")
    g.add_argument("--dataset", default=d.dataset,
                   help="cifar10, cifar100, digits (embedded), NAME for DATA_ROOT/NAME.npz, or path/to/data.npz")
    g.add_argument("--labels", type=int, default=d.labels, help="label budget N (N / classes per class)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the run (model init, batches, masks)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of the label split (default: --seed)")
    g.add_argument("--profile", default=d.profile, choices=list(PROFILES),
                   help="budget: " + "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()))
    g.add_argument("--model", default=None, help="wrn28_2, wrn28_8, wrn<depth>_<width>, tiny or timm:<name> "
                                                 "(default: the profile's, else the dataset's)")
    o = parser.add_argument_group("budget overrides (default: the profile's)")
    o.add_argument("--steps", type=int, default=None, help="training steps")
    o.add_argument("--eval-every", type=int, default=None, help="steps between evaluations")
    o.add_argument("--batch-size", type=int, default=None, help="labelled images per step")
    o.add_argument("--mu", type=int, default=None, help="unlabelled images per labelled image")
    o.add_argument("--lr", type=float, default=d.lr, help="initial learning rate (cosine decay, FixMatch)")
    o.add_argument("--weight-decay", type=float, default=None, help="default: 5e-4 (CIFAR-10), 1e-3 (CIFAR-100)")
    s = parser.add_argument_group("system")
    s.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    s.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d.amp, help="bf16 autocast")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="channels_last memory format")
    s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=d.compile, help="torch.compile the model")
    s.add_argument("--data-root", default=None, help="data folder (default: $SSL_BENCH_DATA, else ./datasets)")
    s.add_argument("--download", action="store_true", help="download a missing CIFAR (needs internet)")
    s.add_argument("--results-dir", default=d.results_dir, help="where run directories are created")
    s.add_argument("--log-every", type=int, default=d.log_every, help="steps between progress-bar updates")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        algorithm=args.alg, alg_args=dict(args.alg_arg), smooth=args.smooth, p=args.p, m=args.m,
        granularity=args.granularity, buffers=args.buffers, dataset=args.dataset, labels=args.labels,
        seed=args.seed, split_seed=args.split_seed, profile=args.profile, steps=args.steps,
        eval_every=args.eval_every, batch_size=args.batch_size, mu=args.mu, model=args.model, lr=args.lr,
        weight_decay=args.weight_decay, device=args.device, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile, data_root=args.data_root, download=args.download, results_dir=args.results_dir,
        log_every=args.log_every)


def _run(args: argparse.Namespace) -> int:
    from ssl_bench.train import train

    config = config_from_args(args)
    config.validate()
    if config.profile == "full":
        print("profile 'full' is the paper's protocol: 2^20 steps of 64 + 448 images through WRN-28-2/8 - "
              "GPU-hours to GPU-days (see benchmarks/bench_step.py). Pass --profile short|cpu|smoke for a scaled run.",
              file=sys.stderr)
    record, run_dir = train(config, resume=args.resume, stop_at=args.stop_at, progress=not args.no_progress,
                            sync_bn=args.sync_bn)
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun, rank 0 speaks for the run
        return 0
    res = record.get("results") or {}
    print(f"{record['status']}: {run_dir}")
    if res.get("teacher_median_last20") is not None:
        print(f"teacher top-1: median of last 20 evals {res['teacher_median_last20']:.2f} | best {res['teacher_best']:.2f}"
              f" | student median {res['student_median_last20']:.2f}  ({record['steps_done']}/{record['steps']} steps,"
              f" profile {record['profile']}, dataset {record['dataset']} [{record['dataset_kind']}])")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bench.py",
        description="ssl-bench: SSL algorithms x teacher smoothing (none / TMA / SE / STS) on CIFAR label budgets. "
                    "Without a sub-command, runs one experiment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    run = sub.add_parser("run", help="train one experiment (the default)",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(run)
    run.add_argument("--resume", action="store_true",
                     help="continue the latest unfinished run with the same settings instead of starting a new one")
    run.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop after this step (resume later)")
    run.add_argument("--sync-bn", action="store_true",
                     help="with torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    run.set_defaults(func=_run)

    from ssl_bench import leaderboard, plots, sweep

    leaderboard.add_subcommands(sub)
    plots.add_subcommands(sub)
    sweep.add_subcommands(sub, add_run_arguments)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        # Errors at the boundary are the user's to fix: print the message, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
