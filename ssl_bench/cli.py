"""Command line: ``run`` (the default), ``leaderboard``, ``compare``, ``plot``, ``sweep`` and ``quickstart``.

    ssl-bench --alg fixmatch --smooth sts --labels 40            (or: python run_bench.py ...)

Every run option is generated from the field table ``ssl_bench.config.RunConfig``: its flag, type, default,
help and valid values are declared there once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import signal
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch

from ssl_bench.config import GROUPS, TEACHER_AXES, RunConfig, flag_of, run_settings
from ssl_bench.errors import UserError

SUBCOMMANDS = ("run", "leaderboard", "compare", "plot", "sweep", "quickstart")
# A range a-b longer than this stays a lazy ``range`` (``sweep --seeds 0-4294967295 --dry-run`` counts it).
LAZY_RANGE = 2**16
# The settings a sweep may grid over (comma lists; --seeds also a-b ranges), outermost loop first: all settings
# of seed 0 come before seed 1, so a sweep stopped half-way has one complete seed of the table.
GRID_FIELDS = ("seed", "dataset", "labels", "algorithm", *TEACHER_AXES)


# -- the field table as argparse options ----------------------------------------------------------------------------

def _value_type(f: dataclasses.Field) -> type:
    """int, float, bool or str, from the field's annotation (``"int | None"`` -> int)."""
    first = str(f.type).split("|")[0].strip()
    return {"int": int, "float": float, "bool": bool}.get(first, str)


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value, e.g. threshold=0.9")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def parse_values(f: dataclasses.Field, text: str) -> list[Any]:
    """``"tma,sts"`` -> ``["tma", "sts"]`` for the field ``f`` (ints also ``a-b`` ranges); order kept, no duplicates.

    Raises ValueError naming the flag, the element and what was expected.
    """
    kind, flag = _value_type(f), flag_of(f)
    whole = re.fullmatch(r"\s*(\d+)-(\d+)\s*", str(text)) if kind is int else None
    if whole and int(whole[2]) - int(whole[1]) >= LAZY_RANGE:   # one long range stays lazy (a sweep counts it)
        if int(whole[1]) > int(whole[2]):
            raise UserError(f"{flag} {text!r} is not a valid range a-b (a <= b)")
        return range(int(whole[1]), int(whole[2]) + 1)   # type: ignore[return-value]  # a Sequence, unique
    values: list[Any] = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            raise UserError(f"{flag} {text!r}: empty element; expected a comma-separated list such as a,b,c")
        try:
            if kind is int and re.fullmatch(r"\d+-\d+", item):
                lo, hi = (int(t) for t in item.split("-"))
                if lo > hi:
                    raise ValueError
                if hi - lo >= LAZY_RANGE:
                    raise UserError(f"{flag} {text!r}: the range {item} is long; give it alone (e.g. {flag} "
                                    f"{item}), not inside a list")
                parsed: list[Any] = list(range(lo, hi + 1))
            else:
                parsed = [kind(item)]
        except ValueError:
            raise UserError(f"{flag} {item!r} is not a valid {kind.__name__}"
                            f"{' or range a-b (a <= b)' if kind is int else ''}") from None
        values += parsed
    return list(dict.fromkeys(values))   # linear de-duplication, order kept


def add_setting_arguments(parser: argparse.ArgumentParser, list_fields: Collection[str] = ()) -> None:
    """One option per ``RunConfig`` field, in groups; fields in ``list_fields`` take comma-separated lists."""
    defaults = RunConfig()
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in run_settings():
        meta, default = f.metadata, getattr(defaults, f.name)
        kind, group = _value_type(f), groups[meta["group"]]
        help_text = meta["help"] + (" (comma list)" if f.name in list_fields and "comma" not in meta["help"] else "")
        if f.name == "alg_args":
            group.add_argument(flag_of(f), dest=f.name, action="append", type=_key_value, default=[],
                               metavar="KEY=VALUE", help=help_text)
        elif kind is bool:
            group.add_argument(flag_of(f), dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                               help=help_text)
        elif f.name in list_fields:
            group.add_argument(flag_of(f), dest=f.name, default=None, metavar=f.name.upper() + "[,...]",
                               help=help_text + (f" (default: {default})" if default is not None else ""))
        else:
            group.add_argument(flag_of(f), dest=f.name, type=kind, default=default, choices=meta["choices"],
                               help=help_text)


def settings_from_args(args: argparse.Namespace,
                       list_fields: Collection[str] = ()) -> tuple[RunConfig, dict[str, list[Any]]]:
    """The base configuration and, for each list field given on the command line, its list of values."""
    defaults = RunConfig()
    values: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    if getattr(args, "seeds", None) is not None:   # sweep's second spelling of --seed: both given, one would be lost
        if args.seed is not None:
            raise UserError(f"--seed {args.seed} and --seeds {args.seeds} both given; give the seeds once")
        args = argparse.Namespace(**{**vars(args), "seed": args.seeds})
    for f in run_settings():
        value = getattr(args, f.name)
        if f.name == "alg_args":
            repeated = sorted({k for k, _ in value if [key for key, _ in value].count(k) > 1})
            if repeated:   # the last would silently win
                raise UserError(f"--alg-arg {', '.join(repeated)} given more than once; give each key once")
            value = dict(value)
        elif f.name in list_fields:
            if value is None:
                value = getattr(defaults, f.name)
            else:
                lists[f.name] = parse_values(f, value)
                value = lists[f.name][0]
        values[f.name] = value
    return RunConfig(**values), lists


# -- run ------------------------------------------------------------------------------------------------------------

def _show_config(configs: Sequence[RunConfig]) -> int:
    """Print the effective settings of a run without training (no data needed for the built-in data sets)."""
    from ssl_bench.algorithm import build_algorithm, hyperparameters
    from ssl_bench.run.build import plan_teachers

    resolved = plan_teachers(configs)
    first = resolved[0]
    algorithm = build_algorithm(first.algorithm, first.alg_args, resolved_family(first))
    print(f"algorithm {algorithm.name} (targets from the {algorithm.targets_from}), dataset {first.dataset}")
    print("  " + describe_data(first, algorithm))
    print("  hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in hyperparameters(algorithm).items()))
    shared = {k: v for k, v in first.to_dict().items() if k not in TEACHER_AXES}
    print("  training: " + ", ".join(f"{k}={v}" for k, v in shared.items()))
    for v in resolved:
        print(f"  teacher: {v.teacher_key()}")
    return 0


def describe_data(config: RunConfig, algorithm: object) -> str:
    """One line: the data set's declared family, size and flips, which reference entry of the algorithm applies and
    where the family's default model comes from (every source named)."""
    import inspect
    from pathlib import Path

    from ssl_bench.data.registry import DATASETS, NO_FAMILY_MODEL, family

    fam = family(resolved_family(config))
    spec = DATASETS.get(config.dataset)
    shape = f"{spec.image_size} px, {'mirrored' if spec.hflip else 'no flips'}, " if spec else ""
    reference = getattr(type(algorithm), "reference", {})
    source = inspect.getsourcefile(type(algorithm))
    where = f"{Path(source).parent.name}/{Path(source).name}" if source else type(algorithm).__name__
    if fam is None:
        return (f"data: {shape}no declared family: reference['*'] of {where}; default model {NO_FAMILY_MODEL} "
                "(ssl_bench/data/registry.py)")
    entry = f"reference['{fam.name}'] over reference['*']" if fam.name in reference else \
        f"reference['*'] (no '{fam.name}' entry)"
    return (f"data: {shape}family {fam.name}: {entry} of {where}, sources in its comments; default model "
            f"{fam.default_model}: {fam.model_source}")


def resolved_family(config: RunConfig) -> str | None:
    """The family the data set declares (registry entry or npz member; never its name): ssl_bench.data.registry."""
    from ssl_bench.data.registry import family_of

    return family_of(config.dataset, config.data_root)


def _run(args: argparse.Namespace) -> int:
    from ssl_bench.run.build import teacher_grid
    from ssl_bench.run.loop import train_teachers

    base, axes = settings_from_args(args, TEACHER_AXES)
    configs = teacher_grid(base, axes)
    for c in configs:
        c.validate()
    if args.dry_run:
        return _show_config(configs)
    if base.profile == "full":
        print("profile 'full' is the paper's protocol: 2^20 steps through WRN-28-2/8 - GPU-hours to GPU-days "
              "(see benchmarks/gpu_report.py). Pass --profile short|cpu|smoke for a scaled run.", file=sys.stderr)
    outcomes = train_teachers(configs, resume=args.resume, stop_at=args.stop_at, progress=not args.no_progress,
                              sync_bn=args.sync_bn)
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun, rank 0 speaks for the run
        return 0
    for record, run_dir in outcomes:
        res = record.get("results") or {}
        print(f"{record['status']}: {run_dir}")
        if res.get("teacher_median_last20") is not None:
            print(f"  teacher top-1: median of last 20 evals {res['teacher_median_last20']:.2f} | best "
                  f"{res['teacher_best']:.2f} | student median {res['student_median_last20']:.2f}  "
                  f"({record['steps_done']}/{record['settings']['steps']} steps, profile "
                  f"{record['settings']['profile']}, dataset {record['dataset']} [{record['dataset_kind']}])")
    return 0


# -- sweep ----------------------------------------------------------------------------------------------------------

def add_option_arguments(parser: argparse.ArgumentParser, options: type) -> None:
    """One option per field of the dataclass ``options`` (declared with ``config.setting``), in its groups."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(options):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag, kind = flag_of(f), _value_type(f)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action="store_true", help=meta["help"])
        elif isinstance(default, list):
            group.add_argument(flag, dest=f.name, action="append", default=default, metavar="LINE", help=meta["help"])
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=default, choices=meta["choices"],
                               help=meta["help"])


def _sweep(args: argparse.Namespace) -> int:
    from ssl_bench.run import sweep

    base, grid = settings_from_args(args, GRID_FIELDS)
    options = sweep.SweepOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(sweep.SweepOptions)})
    return sweep.run_sweep(base, grid, options)


# -- the parser -----------------------------------------------------------------------------------------------------

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Print a default only where it says something (not None / False / [], not already explained)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``prog``: the name shown by --help (default: the name that was typed)."""
    prog = prog or os.path.basename(sys.argv[0] or "ssl-bench")
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=_HelpFormatter,
        description="ssl-bench: SSL algorithms x teacher smoothing (none / TMA / SE / STS) on CIFAR label budgets. "
                    "Without a sub-command, runs one experiment.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    run = sub.add_parser("run", help="train one experiment (the default)", formatter_class=_HelpFormatter,
                         description="Train one student; comma lists of the teacher options train one teacher per "
                                     "combination from the same student (see README: one student, many teachers).")
    add_setting_arguments(run, TEACHER_AXES)
    r = run.add_argument_group("this invocation")
    r.add_argument("--resume", action="store_true",
                   help="continue the latest unfinished run with the same identifying settings")
    r.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop after this step (resume later)")
    r.add_argument("--sync-bn", action="store_true",
                   help="with torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--dry-run", "--show-config", dest="dry_run", action="store_true",
                   help="print the effective settings (the algorithm's reference, the profile's budget) and stop")
    run.set_defaults(func=_run)

    sweep = sub.add_parser("sweep", formatter_class=_HelpFormatter,
                           help="run a grid of experiments (comma lists), skipping finished ones",
                           description="Every combination of the list options is one run; runs that differ only "
                                       "in the teacher options share one training when the algorithm allows it.")
    add_setting_arguments(sweep, GRID_FIELDS)
    sweep.add_argument("--seeds", dest="seeds", default=None, help="alias of --seed: seeds, e.g. 0,1,2 or 0-4")
    from ssl_bench.run.sweep import SweepOptions

    add_option_arguments(sweep, SweepOptions)
    sweep.set_defaults(func=_sweep)

    from ssl_bench import quickstart
    from ssl_bench.report import cli as report_cli
    from ssl_bench.report import plots

    report_cli.add_subcommands(sub)
    plots.add_subcommands(sub)
    quickstart.add_subcommand(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can cause and fix: ``UserError`` (bad values and files, a diverged run, a held lock,
    a missing optional package) and the machine's ``OSError`` (a full disk, a missing folder): one line each.
    Anything else is a bug (ssl-bench's or a plug-in's, e.g. a shape mistake in a loss) and keeps its traceback."""
    return (UserError, OSError)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    args = build_parser(prog).parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return args.func(args)
    except KeyboardInterrupt as exc:
        print(str(exc) if str(exc) else "interrupted", file=sys.stderr)
        return 130
    except torch.OutOfMemoryError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        print(f"error: out of memory ({first}): lower --batch-size or --eval-batch-size, or use a device with "
              "more memory, then start it again (a run that had started is recorded as failed)", file=sys.stderr)
        return 2
    except _user_errors() as exc:
        # A failure the user can fix: the message names the value or file and the fix; a bug keeps its traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM (a plain `kill`, a scheduler's stop) ends it like Ctrl-C: the run is
    recorded as interrupted. The previous handler is restored afterwards (no lasting process-wide change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
