"""``run_bench.py sweep``: a grid of runs, executed here, through submitit locally, or as a SLURM job array.

    python run_bench.py sweep --alg fixmatch --smooth tma,sts --labels 40,250 --seeds 0,1,2 --profile cpu

The gridded options take comma-separated lists (``--seeds`` also ``0-4``); every other option is one run's
option (``run_bench.py run --help``) and applies to every run. The sweep

1. expands the grid into ``RunConfig`` objects (:func:`expand_grid`, pure);
2. plans: looks each one up in ``--results-dir`` with the training loop's own matching (same run name, same
   resolved configuration) and classes it finished (skipped), unfinished (resumed from its checkpoint) or new;
3. executes the rest, each as an ordinary ``train(config, resume=True)`` that writes its own run directory
   and record (the leaderboard picks them up): ``--executor local`` one after another in this process,
   ``submitit-local`` in submitit subprocesses, ``slurm`` as one SLURM job array;
4. prints a summary (run, status, teacher median of the last 20 evaluations). One failed run does not stop
   the others; any run not finished at the end makes the exit code 1.

Requeue: each job is a :class:`SweepJob`, a submitit ``Checkpointable``. On preemption or at the time
limit SLURM sends USR2, submitit calls ``SweepJob.checkpoint()``, which resubmits the same job; the new
attempt calls ``train(config, resume=True)`` again and continues the same run directory from its latest
checkpoint (written at every evaluation), so at most ``eval_every`` steps are recomputed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from ssl_bench import results as rec
from ssl_bench.config import RunConfig

# The training loop's own "same run" test, so the plan and train(resume=True) always agree.
from ssl_bench.train import matching_run_dir

EXECUTORS = ("local", "submitit-local", "slurm")
# Gridded RunConfig fields, outermost loop first: all settings of seed 0 come before seed 1, so a sweep
# stopped half-way has one complete seed of the table rather than all seeds of half of it.
GRID_ORDER = ("seed", "dataset", "labels", "algorithm", "smooth", "granularity", "p", "m")
# What each smoothing strategy reads (ssl_bench.smoothing.Smoother: "tma ignores p, se ignores m, none both;
# granularity only matters for se and sts"). A swept value a strategy ignores would only train the same run
# twice under another name, so the grid sets it to RunConfig's default (which also matches a plain
# `run_bench.py run --smooth tma`); tests/test_sweep.py checks this table against the smoothers themselves.
SMOOTHER_READS = {"none": (), "tma": ("m",), "se": ("p", "granularity"), "sts": ("p", "m", "granularity")}
# RunConfig field -> the sweep's option (the names of `run_bench.py run`; --seeds is --seed's plural).
GRID_FLAGS = {"algorithm": "--alg", "smooth": "--smooth", "granularity": "--granularity", "p": "--p",
              "m": "--m", "dataset": "--dataset", "labels": "--labels", "seed": "--seeds"}


# ----------------------------------------------------------------------------------------------------------
# Grid: list parsing and expansion (pure)
# ----------------------------------------------------------------------------------------------------------

def _algorithm(text: str) -> str:
    from ssl_bench.algorithm import available_algorithms

    if text.endswith(".py"):
        if not Path(text).is_file():
            raise ValueError(f"--alg {text!r}: no such file")
        return text
    names = available_algorithms()
    if text not in names:
        raise ValueError(f"--alg {text!r} is not an algorithm; valid choices: {names} or a path/to/file.py")
    return text


def _choice(axis: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from ssl_bench.smoothing import GRANULARITIES, STRATEGIES

        choices = list(STRATEGIES if axis == "smooth" else GRANULARITIES)
        if text not in choices:
            raise ValueError(f"{GRID_FLAGS[axis]} {text!r} is not valid; choose from {choices}")
        return text
    return parse


def _probability(axis: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{GRID_FLAGS[axis]} {text!r} is not a number; expected a value in [0, 1]") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{GRID_FLAGS[axis]} {text!r} is outside [0, 1]")
        return value
    return parse


def _dataset(text: str) -> str:
    return text   # checked when the plan loads it (the data root is another option)


def _integers(axis: str, minimum: int) -> Callable[[str], list[int]]:
    """One integer or an inclusive range ``a-b``; each >= ``minimum``."""
    def parse(text: str) -> list[int]:
        try:
            if re.fullmatch(r"\d+-\d+", text):
                lo, hi = (int(t) for t in text.split("-"))
                values = list(range(lo, hi + 1))
                if not values:
                    raise ValueError
            else:
                values = [int(text)]
        except ValueError:
            raise ValueError(f"{GRID_FLAGS[axis]} {text!r} is not an integer or a range a-b (a <= b)") from None
        bad = [v for v in values if v < minimum]
        if bad:
            raise ValueError(f"{GRID_FLAGS[axis]} {text!r}: {bad[0]} is below {minimum}")
        return values
    return parse


# RunConfig field -> parser of one element (returns a value, or a list of values for ranges)
ELEMENT_PARSERS: dict[str, Callable[[str], Any]] = {
    "algorithm": _algorithm, "smooth": _choice("smooth"), "granularity": _choice("granularity"),
    "p": _probability("p"), "m": _probability("m"), "dataset": _dataset,
    "labels": _integers("labels", 1), "seed": _integers("seed", 0),
}


def parse_list(axis: str, text: str | Sequence[Any]) -> list[Any]:
    """``"tma,sts"`` -> ``["tma", "sts"]``, each element checked; duplicates dropped, order kept.

    Raises ValueError naming the invalid element and the valid choices.
    """
    if axis not in ELEMENT_PARSERS:
        raise ValueError(f"{axis!r} cannot be swept; the grid axes are {list(GRID_ORDER)}")
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t) for t in text]
    flag = GRID_FLAGS[axis]
    if not items or any(t == "" for t in items):
        raise ValueError(f"{flag} {text!r}: empty element; expected a comma-separated list such as a,b,c")
    values: list[Any] = []
    for item in items:
        parsed = ELEMENT_PARSERS[axis](item)
        for value in (parsed if isinstance(parsed, list) else [parsed]):
            if value not in values:
                values.append(value)
    return values


def expand_grid(base: RunConfig, grid: Mapping[str, str | Sequence[Any]]) -> list[RunConfig]:
    """Every combination of the ``grid`` values over ``base``, one validated ``RunConfig`` each.

    ``grid`` maps RunConfig fields (``seed``, ``dataset``, ``labels``, ``algorithm``, ``smooth``,
    ``granularity``, ``p``, ``m``) to lists of values or comma-separated strings; a field left out keeps
    ``base``'s value. Order: ``GRID_ORDER``, the first field the outermost loop. ``p``, ``m`` and
    ``granularity`` are set to RunConfig's defaults for a strategy that ignores them (``SMOOTHER_READS``), and
    identical combinations appear once. Raises ValueError naming an invalid element or field.
    """
    defaults = RunConfig()
    unknown = sorted(set(grid) - set(GRID_ORDER))
    if unknown:
        raise ValueError(f"cannot sweep {unknown}; the grid axes are {list(GRID_ORDER)}")
    axes = {name: parse_list(name, grid[name]) if name in grid else [getattr(base, name)] for name in GRID_ORDER}
    configs: list[RunConfig] = []
    for values in itertools.product(*(axes[name] for name in GRID_ORDER)):
        config = dataclasses.replace(base, alg_args=dict(base.alg_args), **dict(zip(GRID_ORDER, values, strict=True)))
        ignored = {k: getattr(defaults, k) for k in ("p", "m", "granularity")
                   if k not in SMOOTHER_READS.get(config.smooth, ("p", "m", "granularity"))}
        config = dataclasses.replace(config, **ignored)
        config.validate()
        if config not in configs:
            configs.append(config)
    return configs


# ----------------------------------------------------------------------------------------------------------
# Plan: what is already in results_dir
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Planned:
    """One run of the sweep and what ``results_dir`` already holds for it."""

    config: RunConfig        # as given (what the job trains)
    resolved: RunConfig      # as train() saves it in config.json
    name: str                # run_base_name of the resolved configuration
    state: str               # "finished" (skipped) | "unfinished" (resumed) | "new"
    run_dir: Path | None     # the matching run directory, if any
    status: str | None = None  # its record's status: running | failed | finished (None: no record)
    detail: str = ""         # e.g. "failed at step 400/1500: DivergedError: ..."

    def find(self) -> Path | None:
        """The matching run directory now (after the sweep ran it)."""
        return matching_run_dir(Path(self.resolved.results_dir), self.name, self.resolved)


def resolve_config(config: RunConfig, _cache: dict[tuple[str, str | None], Any] | None = None) -> RunConfig:
    """The configuration as ``train`` saves it (profile and dataset defaults filled in), without training.

    Loads the data set (once per name and root with a cache) because its family picks the defaults.
    """
    from ssl_bench.data import load_dataset
    from ssl_bench.models import default_model

    cache = {} if _cache is None else _cache
    key = (config.dataset, config.data_root)
    if key not in cache:
        cache[key] = load_dataset(config.dataset, root=config.data_root, download=config.download).family
    family = cache[key]
    return config.resolved(family, default_model(family))


def plan_sweep(configs: Sequence[RunConfig]) -> list[Planned]:
    """Class each configuration by the latest run directory with the same resolved configuration.

    That is the lookup ``train(config, resume=True)`` does, so "finished" here is returned by train without
    training, and "unfinished" is continued from its checkpoint.
    """
    cache: dict[tuple[str, str | None], Any] = {}
    planned = []
    for config in configs:
        resolved = resolve_config(config, cache)
        p = Planned(config, resolved, rec.run_base_name(resolved), "new", None)
        p.run_dir = p.find()
        if p.run_dir is not None:
            record_path = p.run_dir / "record.json"
            record = rec.read_json(record_path) if record_path.exists() else {}
            p.status = record.get("status")
            p.state = "finished" if p.status == "finished" else "unfinished"
            if not record:
                p.detail = "no record.json"
            elif p.state == "unfinished":
                p.detail = f"{p.status} at step {record.get('steps_done')}/{record.get('steps')}"
                if record.get("error"):
                    p.detail += f": {record['error']}"
        planned.append(p)
    return planned


def format_plan(planned: Sequence[Planned], results_dir: str) -> str:
    counts = {s: sum(p.state == s for p in planned) for s in ("finished", "unfinished", "new")}
    lines = [f"sweep: {len(planned)} runs in {results_dir}: {counts['finished']} finished (skipped), "
             f"{counts['unfinished']} unfinished (resumed), {counts['new']} new"]
    width = max((len(p.name) for p in planned), default=0)
    for p in planned:
        where = f"  -> {p.run_dir.name}" if p.run_dir is not None and p.run_dir.name != p.name else ""
        detail = f"  ({p.detail})" if p.detail else ""
        lines.append(f"  {p.name:<{width}}  {p.state}{where}{detail}".rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# One run, as a (requeueable) job
# ----------------------------------------------------------------------------------------------------------

def run_argv(config: RunConfig) -> list[str]:
    """The ``run_bench.py run ...`` command line that trains exactly ``config`` (saved in its config.json)."""
    d = RunConfig()
    argv = ["run_bench.py", "run", "--alg", config.algorithm]
    for key, value in config.alg_args.items():
        argv += ["--alg-arg", f"{key}={value}"]
    always = {"smooth": "--smooth", "dataset": "--dataset", "labels": "--labels", "seed": "--seed",
              "profile": "--profile"}
    optional = {"p": "--p", "m": "--m", "granularity": "--granularity", "buffers": "--buffers",
                "split_seed": "--split-seed", "model": "--model", "steps": "--steps", "eval_every": "--eval-every",
                "batch_size": "--batch-size", "mu": "--mu", "lr": "--lr", "weight_decay": "--weight-decay",
                "device": "--device", "data_root": "--data-root", "results_dir": "--results-dir",
                "log_every": "--log-every"}
    for name, flag in always.items():
        argv += [flag, str(getattr(config, name))]
    for name, flag in optional.items():
        value = getattr(config, name)
        if value is not None and value != getattr(d, name):
            argv += [flag, str(value)]
    for name in ("amp", "channels_last", "compile"):
        if getattr(config, name) != getattr(d, name):
            flag = name.replace("_", "-")
            argv.append(f"--{flag}" if getattr(config, name) else f"--no-{flag}")
    if config.download:
        argv.append("--download")
    return argv


@contextlib.contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """Make the run record's ``command`` the single-run command, not the sweep's or submitit's."""
    saved = sys.argv
    sys.argv = [shlex.quote(a) for a in argv]
    try:
        yield
    finally:
        sys.argv = saved


class SweepJob(submitit.helpers.Checkpointable):
    """One run of a sweep: ``train(config, resume=True)``. Picklable; submitit runs it in a job.

    ``resume=True`` makes every attempt idempotent: a new run starts its directory, an interrupted one
    continues its latest checkpoint, a finished one returns its record without training.
    """

    def __init__(self, config: RunConfig, threads: int | None = None, progress: bool = False) -> None:
        self.config = config
        self.threads = threads
        self.progress = progress
        self.attempt = 0

    def __call__(self) -> dict[str, Any]:
        from ssl_bench.train import train

        self.attempt += 1
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        with _command_line(run_argv(self.config)):
            record, run_dir = train(self.config, resume=True, progress=self.progress)
        return {"run_dir": str(run_dir), "record": record, "attempt": self.attempt}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption / time-out (USR2): requeue the same job.

        Nothing to save here: the loop checkpoints at every evaluation, and the requeued attempt resumes
        from there (``resume=True`` finds the run by its configuration).
        """
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    name: str
    status: str              # finished | failed | running | submitted | error
    run_dir: Path | None
    record: dict[str, Any] | None
    error: str | None = None


def _outcome(planned: Planned, error: str | None = None, status: str | None = None) -> Outcome:
    """Read the run's record from disk after the fact (the same for every executor)."""
    run_dir = planned.find()
    record = None
    if run_dir is not None and (run_dir / "record.json").exists():
        record = rec.read_json(run_dir / "record.json")
    if status is None:
        status = record["status"] if record else "error"
    if error is None and record and record.get("error") and status != "finished":
        error = record["error"]
    return Outcome(planned.name, status, run_dir, record, error)


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def execute_local(todo: Sequence[Planned], progress: bool, threads: int | None) -> dict[int, str]:
    """One run after another in this process; returns errors by index (a failure never stops the sweep)."""
    errors: dict[int, str] = {}
    for i, p in enumerate(todo):
        print(f"[{i + 1}/{len(todo)}] {p.name} ({p.state})", flush=True)
        try:
            SweepJob(p.config, threads=threads, progress=progress)()
        except Exception as exc:  # noqa: BLE001 - reported in the summary; KeyboardInterrupt still stops the sweep
            errors[i] = f"{type(exc).__name__}: {exc}"
            print(f"  failed: {errors[i]}", file=sys.stderr, flush=True)
    return errors


def slurm_parameters(*, timeout_min: int, partition: str | None = None, gpus_per_node: int = 1,
                     cpus_per_task: int = 8, mem_gb: float | None = None, array_parallelism: int = 64,
                     job_name: str = "ssl-bench", account: str | None = None, qos: str | None = None,
                     constraint: str | None = None, setup: Sequence[str] = ()) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` for one run per job: 1 node, 1 task, 1 GPU (or none)."""
    if gpus_per_node not in (0, 1):
        raise ValueError(f"--gpus-per-node {gpus_per_node}: a sweep job trains one run in one process on one GPU "
                         "(0 or 1); data-parallel runs go through torchrun (README), not through the sweep yet")
    params: dict[str, Any] = dict(timeout_min=timeout_min, gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task,
                                  nodes=1, tasks_per_node=1, name=job_name, slurm_array_parallelism=array_parallelism)
    optional = {"slurm_partition": partition, "mem_gb": mem_gb, "slurm_account": account, "slurm_qos": qos,
                "slurm_constraint": constraint, "slurm_setup": list(setup) or None}
    params.update({k: v for k, v in optional.items() if v})
    return params


def make_executor(kind: str, log_dir: Path, *, timeout_min: int, max_num_timeout: int,
                  **slurm: Any) -> submitit.Executor:
    """A submitit executor: ``submitit-local`` (subprocesses on this machine) or ``slurm`` (a job array).

    ``max_num_timeout``: how often a job may be requeued after reaching its time limit (preemptions are free).
    ``slurm``: the keywords of :func:`slurm_parameters`.
    """
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=log_dir, max_num_timeout=max_num_timeout)
        executor.update_parameters(timeout_min=timeout_min)
        return executor
    if kind != "slurm":
        raise ValueError(f"--executor {kind!r} has no submitit executor; choose from {list(EXECUTORS)}")
    try:
        executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
    except RuntimeError as exc:   # submitit: 'Could not detect "srun", are you indeed on a slurm cluster?'
        raise ValueError(f"--executor slurm: {exc} Use --executor local or submitit-local on this machine.") from None
    executor.update_parameters(**slurm_parameters(timeout_min=timeout_min, **slurm))
    return executor


def execute_submitit_local(todo: Sequence[Planned], executor: submitit.Executor, parallel: int,
                           threads: int | None, poll_s: float = 0.2) -> dict[int, str]:
    """Run the jobs through submitit's LocalExecutor, at most ``parallel`` at a time; wait for all."""
    errors: dict[int, str] = {}
    pending = list(enumerate(todo))
    running: list[tuple[int, Any]] = []
    while pending or running:
        while pending and len(running) < parallel:
            i, p = pending.pop(0)
            job = executor.submit(SweepJob(p.config, threads=threads))
            print(f"[{i + 1}/{len(todo)}] {p.name} ({p.state}): submitit job {job.job_id}", flush=True)
            running.append((i, job))
        still = []
        for i, job in running:
            if not job.done():
                still.append((i, job))
                continue
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - reported in the summary
                errors[i] = _last_line(exc)
                print(f"  {todo[i].name} failed: {errors[i]} (log: {job.paths.stderr})", file=sys.stderr, flush=True)
        running = still
        if running:
            time.sleep(poll_s)
    return errors


def submit_slurm(todo: Sequence[Planned], executor: submitit.Executor, threads: int | None) -> list[Any]:
    """Submit every run as one SLURM job array; returns the jobs."""
    with executor.batch():
        jobs = [executor.submit(SweepJob(p.config, threads=threads)) for p in todo]
    return jobs


def wait_jobs(todo: Sequence[Planned], jobs: Sequence[Any]) -> dict[int, str]:
    errors: dict[int, str] = {}
    for i, job in enumerate(jobs):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            errors[i] = _last_line(exc)
    return errors


def format_summary(outcomes: Sequence[Outcome]) -> str:
    header = ("run", "status", "steps", "teacher med20", "student med20")
    rows = []
    for o in outcomes:
        r = o.record or {}
        res = r.get("results") or {}
        med = res.get("teacher_median_last20")
        smed = res.get("student_median_last20")
        rows.append((o.run_dir.name if o.run_dir is not None else o.name, o.status,
                     f"{r.get('steps_done')}/{r.get('steps')}" if r else "-",
                     f"{med:.2f}" if med is not None else "-", f"{smed:.2f}" if smed is not None else "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    problems = [o for o in outcomes if o.status != "finished"]
    if problems:
        lines.append(f"\n{len(problems)} of {len(outcomes)} runs did not finish:")
        lines += [f"  {o.run_dir.name if o.run_dir else o.name}: {o.status}"
                  f"{': ' + o.error if o.error else ''}" for o in problems]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def _list_type(axis: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return parse_list(axis, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = f"{axis} list"
    return parse


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Print a default only where it says something (not None / False / [], not already explained)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_subcommands(subparsers: Any, add_run_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``sweep``: one run's options (``add_run_arguments``), with the gridded ones taking lists."""
    d = RunConfig()
    parser = subparsers.add_parser(
        "sweep", help="run a grid of experiments (comma-separated lists), skipping finished ones",
        description=__doc__.split("\n\n")[0] + " Gridded options take comma-separated lists; the sweep "
                    "runs every combination, skips finished runs and resumes unfinished ones.",
        formatter_class=_HelpFormatter,
        conflict_handler="resolve")   # the list options below replace add_run_arguments' single-value ones
    add_run_arguments(parser)
    g = parser.add_argument_group("grid (comma-separated lists; every combination is one run)")
    g.add_argument("--alg", default=d.algorithm, metavar="ALGS", type=_list_type("algorithm"), help="algorithms, e.g. fixmatch")
    g.add_argument("--smooth", default=d.smooth, metavar="STRATEGIES", type=_list_type("smooth"), help="smoothing strategies, e.g. tma,sts")
    g.add_argument("--granularity", default=d.granularity, metavar="UNITS", type=_list_type("granularity"), help="SE/STS units")
    g.add_argument("--p", default=str(d.p), metavar="PS", type=_list_type("p"), help="SE/STS preserving probabilities")
    g.add_argument("--m", default=None if d.m is None else str(d.m), type=_list_type("m"), metavar="MS",
                   help="TMA/STS momenta (default: the profile's)")
    g.add_argument("--dataset", default=d.dataset, metavar="DATASETS", type=_list_type("dataset"), help="data sets")
    g.add_argument("--labels", default=str(d.labels), metavar="BUDGETS", type=_list_type("labels"), help="label budgets, e.g. 40,250,4000")
    g.add_argument("--seeds", "--seed", dest="seed", default=str(d.seed), metavar="SEEDS", type=_list_type("seed"),
                   help="seeds, e.g. 0,1,2 or 0-4")
    e = parser.add_argument_group("execution")
    e.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="local: one run after another in this process; submitit-local: submitit subprocesses on "
                        "this machine; slurm: one SLURM job array (requeued on preemption / time-out)")
    e.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    e.add_argument("--skip-failed", action="store_true",
                   help="do not resume runs whose record says failed (e.g. diverged); without it they are resumed")
    e.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per run (default: untouched locally; --cpus-per-task on SLURM; "
                        "cores / --parallel with submitit-local)")
    e.add_argument("--parallel", type=int, default=1, help="submitit-local: runs at the same time")
    e.add_argument("--log-dir", default=None, help="submitit logs and pickles (default: <results-dir>/_submitit)")
    e.add_argument("--timeout-min", type=int, default=24 * 60,
                   help="time limit of one job attempt; at the limit the job checkpoints and requeues itself")
    e.add_argument("--max-num-timeout", type=int, default=30,
                   help="requeues after time-outs before a job gives up (preemptions do not count)")
    s = parser.add_argument_group("slurm (--executor slurm)")
    s.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    s.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per run: 1, or 0 for CPU jobs")
    s.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores per run (data augmentation runs on the GPU)")
    s.add_argument("--mem-gb", type=float, default=None, help="memory per job (default: the cluster's)")
    s.add_argument("--slurm-array-parallelism", type=int, default=64, help="jobs of the array running at once")
    s.add_argument("--account", default=None, help="SLURM account")
    s.add_argument("--qos", default=None, help="SLURM quality of service")
    s.add_argument("--constraint", default=None, help="SLURM node constraint, e.g. a100")
    s.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="shell line run before each job, e.g. 'source .venv/bin/activate' (repeatable)")
    s.add_argument("--job-name", default="ssl-bench", help="SLURM job name")
    s.add_argument("--wait", action="store_true",
                   help="slurm: wait for the jobs and print the summary; without it: submit and return")
    parser.set_defaults(func=handle_sweep)


def grid_from_args(args: argparse.Namespace) -> tuple[RunConfig, dict[str, list[Any]]]:
    """The base configuration (one run's options) and the grid lists from parsed ``sweep`` arguments."""
    from ssl_bench.cli import config_from_args

    lists = {name: getattr(args, "alg" if name == "algorithm" else name) for name in GRID_ORDER}
    single = argparse.Namespace(**vars(args))
    for name, values in lists.items():
        setattr(single, "alg" if name == "algorithm" else name, values[0] if values is not None else None)
    # an option left at None (e.g. --m: the profile's) is not an axis; the base keeps None
    return config_from_args(single), {name: values for name, values in lists.items() if values is not None}


def handle_sweep(args: argparse.Namespace) -> int:
    base, grid = grid_from_args(args)
    configs = expand_grid(base, grid)
    for name in ("threads", "parallel", "timeout_min", "cpus_per_task", "slurm_array_parallelism"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} {value} must be a positive integer")
    log_dir = Path(args.log_dir or Path(base.results_dir) / "_submitit").absolute()
    executor = None
    if args.executor != "local":
        # jobs may start in another folder: absolute paths (results_dir / data_root are ignored by run matching)
        configs = [dataclasses.replace(c, results_dir=os.path.abspath(c.results_dir),
                                       data_root=os.path.abspath(c.data_root) if c.data_root else None)
                   for c in configs]
        if not args.dry_run:   # fail before planning if there is no SLURM here
            executor = make_executor(
                args.executor, log_dir, timeout_min=args.timeout_min, max_num_timeout=args.max_num_timeout,
                **({} if args.executor == "submitit-local" else dict(
                    partition=args.partition, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                    mem_gb=args.mem_gb, array_parallelism=args.slurm_array_parallelism, job_name=args.job_name,
                    account=args.account, qos=args.qos, constraint=args.constraint, setup=args.slurm_setup)))
    planned = plan_sweep(configs)
    print(format_plan(planned, base.results_dir), flush=True)
    skipped = [p for p in planned if args.skip_failed and p.status == "failed"]
    todo = [p for p in planned if p.state != "finished" and p not in skipped]
    if args.dry_run:
        return 0
    errors: dict[int, str] = {}
    if todo and args.executor == "local":
        errors = execute_local(todo, progress=not args.no_progress, threads=args.threads)
    elif todo and args.executor == "submitit-local":
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
        errors = execute_submitit_local(todo, executor, args.parallel, threads)
    elif todo:
        jobs = submit_slurm(todo, executor, threads=args.threads or args.cpus_per_task)
        ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
        print(f"submitted {len(jobs)} runs as SLURM job array {', '.join(ids)}; logs in {log_dir}")
        if not args.wait:
            print("Run the same sweep command again to see which runs finished (it skips them and resumes the "
                  "rest), or `run_bench.py leaderboard` for the table.")
            return 0
        errors = wait_jobs(todo, jobs)
    failed = {id(todo[i]): message for i, message in errors.items()}
    outcomes = [_outcome(p, status="failed (skipped)") if p in skipped else _outcome(p, error=failed.get(id(p)))
                for p in planned]
    print(format_summary(outcomes))
    return 0 if all(o.status == "finished" for o in outcomes) else 1
