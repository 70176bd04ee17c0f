"""Command line: ``run`` (the default), ``leaderboard``, ``compare``, ``export``, ``plot``, ``sweep``, ``quickstart``,
``evaluate`` and ``export-weights``.

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

from ssl_bench.config import GROUPS, TEACHER_AXES, TEACHER_SETTINGS, RunConfig, flag_of, run_settings
from ssl_bench.errors import UserError
from ssl_bench.smoothing import is_plugin_reference

SUBCOMMANDS = ("run", "leaderboard", "compare", "export", "plot", "sweep", "quickstart", "evaluate", "export-weights")
# A range a-b longer than this stays a lazy ``range`` (``sweep --seeds 0-4294967295 --dry-run`` counts it).
LAZY_RANGE = 2**16
# The settings a sweep may grid over (comma lists; --seeds also a-b ranges), outermost loop first: all settings
# of seed 0 come before seed 1, so a sweep stopped half-way has one complete seed of the table.
GRID_FIELDS = ("seed", "dataset", "labels", "algorithm", *TEACHER_AXES)
# Settings given as repeated KEY=VALUE options (--alg-arg, --smooth-arg), read into a dict.
KEY_VALUE_FIELDS = ("alg_args", "smooth_args")


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
        if f.name in list_fields and meta["choices"] is not None:   # argparse cannot check the items of a list
            help_text += f"; each one of {', '.join(map(str, meta['choices']))}"
        if f.name in KEY_VALUE_FIELDS:
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
        if f.name in KEY_VALUE_FIELDS:
            repeated = sorted({k for k, _ in value if [key for key, _ in value].count(k) > 1})
            if repeated:   # the last would silently win
                raise UserError(f"{flag_of(f)} {', '.join(repeated)} given more than once; give each key once")
            value = dict(value)
        elif f.name in list_fields:
            if value is None:
                value = getattr(defaults, f.name)
            else:
                lists[f.name] = parse_values(f, value)
                value = lists[f.name][0]
                for item in lists[f.name] if f.metadata["choices"] is not None else ():
                    if f.name == "smooth" and item not in f.metadata["choices"] and is_plugin_reference(item):
                        continue   # a plug-in strategy: RunConfig.validate imports and checks it
                    if item not in f.metadata["choices"]:
                        raise UserError(f"{flag_of(f)} {item!r} is not valid"
                                        f"{suggestion(str(item), f.metadata['choices'], ALIASES.get(f.name))}; "
                                        f"choose from {list(f.metadata['choices'])}")
        values[f.name] = value
    return RunConfig(**values), lists


# -- run ------------------------------------------------------------------------------------------------------------

def _show_config(configs: Sequence[RunConfig]) -> int:
    """Print the effective settings of a run without training (no data needed for the built-in data sets)."""
    from ssl_bench.algorithm import build_algorithm, hyperparameters, setting_sources
    from ssl_bench.run.build import plan_teachers

    resolved = plan_teachers(configs)
    first = resolved[0]
    algorithm = build_algorithm(first.algorithm, first.alg_args, resolved_family(first))
    print(f"algorithm {algorithm.name} (targets from the {algorithm.targets_from}), dataset {first.dataset}")
    print("  " + describe_data(first, algorithm))
    print("  hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in hyperparameters(algorithm).items()))
    sources = setting_sources(algorithm, resolved_family(first), first.to_dict())
    if sources:
        print("  reference settings and their sources:\n" + "\n".join(f"    {line}" for line in sources))
    shared = {k: v for k, v in first.to_dict().items() if k not in TEACHER_SETTINGS}
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
    if args.config:
        base, axes = with_saved_config(args.config, base, axes, given_settings(args.argv))
    configs = teacher_grid(base, axes)
    for c in configs:
        c.validate()
    if args.dry_run:
        return _show_config(configs)
    preflight(configs, yes=args.yes)
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


def load_saved_config(path: str | os.PathLike) -> RunConfig:
    """The configuration saved in a run directory's config.json (the folder or the file itself)."""
    from pathlib import Path

    from ssl_bench.records import CONFIG_FILE, read_json

    file = Path(path) / CONFIG_FILE if Path(path).is_dir() else Path(path)
    try:
        data = read_json(file)
    except (OSError, ValueError) as exc:
        raise UserError(f"--config {path}: cannot read {file} ({type(exc).__name__}: {exc}); pass a run "
                        f"directory or its {CONFIG_FILE}") from None
    saved = data.get("config", data) if isinstance(data, dict) else None
    if not isinstance(saved, dict):
        raise UserError(f"--config {path}: {file} holds no run configuration (expected a JSON object with 'config')")
    return RunConfig.from_dict(saved)


def given_settings(argv: Sequence[str]) -> set[str]:
    """The ``RunConfig`` fields the ``run`` command line ``argv`` sets explicitly (its defaults left out)."""
    run = _subcommands(build_parser()).choices["run"]
    for action in run._actions:
        action.default = argparse.SUPPRESS
    return set(vars(run.parse_known_args(list(argv)[1:])[0])) & {f.name for f in run_settings()}


def with_saved_config(path: str | os.PathLike, base: RunConfig, axes: dict[str, list[Any]],
                      given: set[str]) -> tuple[RunConfig, dict[str, list[Any]]]:
    """``--config``: every identifying setting from the saved run, except those given on the command line (and
    ``--alg-arg`` merged into the saved ones); where and how this machine runs it (device, folders, logging)
    comes from this command line, as for any run."""
    from ssl_bench.run.build import plan_teachers
    from ssl_bench.run.rundirs import refuse_unnamed_plugin

    saved = load_saved_config(path)
    if "smooth" not in given:   # a saved configuration never decides what code runs
        refuse_unnamed_plugin(saved, frozenset(), f"--config {path}", "or pass a built-in strategy")
    # A saved value that is the default derived from other settings (the split seed from the seed, steps from the
    # profile, lr from the algorithm's reference...) is left to derive again: --seed 1 also moves the split.
    derived = {"split_seed", "m", "steps", "eval_every", "batch_size", "mu", "lr", "weight_decay", "model"}
    bare = dataclasses.replace(saved, **{k: None for k in derived})
    rederived = plan_teachers([bare])[0]
    saved = dataclasses.replace(saved, **{k: None for k in derived if getattr(saved, k) == getattr(rederived, k)})
    kept = {f.name: getattr(saved, f.name) for f in run_settings()
            if f.metadata["identifies"] and f.name not in given}
    for name in KEY_VALUE_FIELDS:   # given pairs are merged into the saved ones
        if name in given:
            kept[name] = {**getattr(saved, name), **getattr(base, name)}
    return dataclasses.replace(base, **kept), {k: v for k, v in axes.items() if k in given}


def preflight(configs: Sequence[RunConfig], *, yes: bool) -> None:
    """Refuse, before anything is created, what would waste days on this machine unless ``--yes`` says it is meant:
    the paper's ``full`` profile or ``--amp`` on a CPU. (Data, model name, device, packages and plug-ins are
    checked by the loop before any run directory exists.)"""
    from ssl_bench.run.build import resolve_device

    if yes:
        return
    for c in configs:
        if resolve_device(c.device).type != "cpu":
            continue
        if c.profile == "full":
            raise UserError("--profile full on a CPU: the paper's protocol is 2^20 steps through WRN-28-2/8, GPU-hours "
                            "to GPU-days on a GPU and weeks here (benchmarks/gpu_report.py); pass --profile "
                            "short|cpu|smoke for a scaled run, or --yes to run it anyway")
        if c.amp:
            raise UserError("--amp on a CPU: bfloat16 autocast is slower than float32 on most CPUs and changes the "
                            "numbers; drop --amp (it is meant for GPUs), or pass --yes to run it anyway")


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
    if not args.dry_run and args.executor != "slurm":   # slurm: the jobs run on the cluster's nodes, not here
        preflight([base], yes=args.yes)   # profile, amp and device are not grid axes: the base decides
    options = sweep.SweepOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(sweep.SweepOptions)})
    return sweep.run_sweep(base, grid, options)


# -- the parser -----------------------------------------------------------------------------------------------------

class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (``off``/``on`` for switches, ``not set`` for None), unless
    the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.default is None or action.default == []:
            shown = "not set"
        elif action.default is True or action.default is False:
            shown = "on" if action.default else "off"
        else:
            shown = str(action.default)
        return f"{text} (default: {shown.replace('%', '%%')})"


# Other names of a value in the field, with what it is called here (the message of a near miss says it).
ALIASES: dict[str, dict[str, str]] = {
    "smooth": {"ema": "tma", "mean_teacher": "tma"},   # an EMA of the weights is the paper's TMA
}


def suggestion(value: str, choices: Sequence[str], aliases: dict[str, str] | None = None) -> str:
    """`` (did you mean 'tma'?)`` for a near miss or a known other name of a choice, else ``""``."""
    import difflib

    if aliases and value.lower() in aliases:
        return f" ({value!r} is called {aliases[value.lower()]!r} here)"
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _innermost(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command that ``parsed`` came from."""
    while (action := _subcommands(parser)) is not None:
        name = getattr(parsed, action.dest, None) if action.dest != argparse.SUPPRESS else None
        if name not in action.choices:
            break
        parser = action.choices[name]
    return parser


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    action = _subcommands(parser)
    for child in dict.fromkeys(action.choices.values()) if action is not None else ():
        yield from _every_parser(child)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped choice and a mistyped flag (sub-commands inherit it)."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            hint = suggestion(str(value), list(action.choices), ALIASES.get(action.dest))
            choices = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint} (choose from {choices})")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = _innermost(self, parsed)   # the sub-command's parser: its usage, its flags
            flags = [o for a in parser._actions for o in a.option_strings]
            hints = [suggestion(e.split("=")[0], flags) for e in extras if e.startswith("-")]
            parser.error(f"unrecognized arguments: {' '.join(extras)}{''.join(h for h in hints if h)}")
        return parsed


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``prog``: the name shown by --help (default: the name that was typed)."""
    prog = prog or os.path.basename(sys.argv[0] or "ssl-bench")
    parser = _ArgumentParser(
        prog=prog, formatter_class=_HelpFormatter,
        description="ssl-bench: SSL algorithms x teacher smoothing (none / TMA / SE / STS) on CIFAR label budgets. "
                    "Without a sub-command, runs one experiment.")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    run = sub.add_parser("run", help="train one experiment (the default)", formatter_class=_HelpFormatter,
                         description="Train one student; comma lists of the teacher options train one teacher per "
                                     "combination from the same student (see README: one student, many teachers).")
    add_setting_arguments(run, TEACHER_AXES)
    r = run.add_argument_group("this invocation")
    r.add_argument("--config", metavar="RUN_DIR|CONFIG_JSON",
                   help="re-run a saved configuration: its identifying settings, overridden by the options given "
                        "here (default: none)")
    r.add_argument("--resume", action="store_true",
                   help="continue the latest unfinished run with the same identifying settings")
    r.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop after this step (resume later)")
    r.add_argument("--sync-bn", action="store_true",
                   help="with torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--yes", action="store_true",
                   help="run what is refused on a CPU otherwise: --profile full (weeks) or --amp (slower there)")
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
    sweep.add_argument("--yes", action="store_true",
                       help="run what is refused on a CPU otherwise: --profile full (weeks) or --amp (slower there)")
    sweep.set_defaults(func=_sweep)

    from ssl_bench import quickstart
    from ssl_bench.report import cli as report_cli
    from ssl_bench.report import plots

    report_cli.add_subcommands(sub)
    plots.add_subcommands(sub)
    quickstart.add_subcommand(sub)
    from ssl_bench.run import evaluate_checkpoint

    evaluate_checkpoint.add_subcommands(sub)
    for p in _every_parser(parser):   # every sub-command's help shows its defaults the same way
        p.formatter_class = _HelpFormatter
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
    args.argv = argv   # what was typed: --config keeps the saved settings that it does not name
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
