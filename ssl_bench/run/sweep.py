"""``sweep``: a grid of runs, grouped into trainings, executed here, through submitit locally, or as a SLURM array.

    ssl-bench sweep --alg fixmatch --smooth tma,sts --labels 40,250 --seeds 0-2 --profile cpu --dataset digits

This module takes plain values (a base ``RunConfig`` and the grid's lists; the command line is ``ssl_bench.cli``).
The sweep

1. expands the grid into one ``RunConfig`` per run (:func:`expand_grid`, pure, linear in the grid size);
2. groups the runs into **trainings** (:func:`group_trainings`): runs that differ only in the teacher settings
   (``--smooth``, ``--p``, ``--m``, ``--granularity``, ``--buffers``) share one training when the algorithm's
   targets come from the student; an algorithm whose targets come from the teacher (Mean Teacher) gets one
   training per run;
3. plans: looks each training up in the results folder with the loop's own matching and classes it finished
   (skipped), unfinished (resumed from its checkpoint; ``stale`` when its process died) or new;
4. executes the rest, each as an ordinary ``train_teachers(configs, resume=True)``: ``local`` one after another
   in this process, ``submitit-local`` in submitit subprocesses, ``slurm`` as one job array (submitit is imported
   only for those two: ``pip install 'ssl-bench[cluster]'``);
5. prints a summary. One failed training does not stop the others; anything unfinished makes the exit code 1.

Requeue: each job is a submitit ``Checkpointable``; on preemption or at the time limit it requeues itself and
the new attempt resumes the same directories from the latest checkpoint (written at every evaluation).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench import records as rec
from ssl_bench.config import TEACHER_SETTINGS, RunConfig, config_to_argv, run_settings, setting
from ssl_bench.errors import MissingPackageError, UserError
from ssl_bench.run.build import check_smooth_args, plan_teachers
from ssl_bench.run.rundirs import (
    matching_run_dir,
    plugin_files,
    plugin_sha256,
    run_base_name,
    saved_run_config,
    training_of,
)

EXECUTORS = ("local", "submitit-local", "slurm")
# The most runs one sweep plans: each is looked up in the results folder and held in memory as a RunConfig.
MAX_SWEEP_RUNS = 100_000


def _key(config: RunConfig) -> tuple:
    """A configuration as a hashable value (for de-duplication and caches; cheaper than ``asdict``)."""
    return tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v
                 for v in (getattr(config, f.name) for f in run_settings()))


EXECUTION, SLURM = "execution", "slurm (--executor slurm)"


def _option(default: Any = None, *, help: str, group: str = EXECUTION, minimum: int | None = None,
            choices: tuple[str, ...] | None = None, factory: Any = None) -> Any:
    # A sweep option declared once: the command line (ssl_bench.cli.add_option_arguments) and validate read it.
    return setting(default, help=help, group=group, identifies=False, minimum=minimum, choices=choices,
                   factory=factory)


@dataclass
class SweepOptions:
    """How a sweep runs (everything but the runs' own settings); one declaration per option."""

    executor: str = _option("local", choices=EXECUTORS,
                            help="local: one training after another in this process; submitit-local: submitit "
                                 "subprocesses on this machine; slurm: one SLURM job array (requeued on preemption "
                                 "/ time-out)")
    dry_run: bool = _option(False, help="print the plan (trainings and their teachers) and stop")
    skip_failed: bool = _option(False, help="do not resume trainings whose record says failed (e.g. diverged)")
    threads: int | None = _option(None, minimum=1, help="torch CPU threads per training")
    parallel: int = _option(1, minimum=1, help="submitit-local: trainings at the same time")
    log_dir: str | None = _option(None, help="submitit logs and pickles (default: <results-dir>/_submitit)")
    timeout_min: int = _option(24 * 60, minimum=1,
                               help="time limit of one job attempt; at the limit the job checkpoints and requeues "
                                    "itself")
    max_num_timeout: int = _option(30, minimum=0,
                                   help="requeues after time-outs before a job gives up (preemptions do not count)")
    no_progress: bool = _option(False, help="no progress bars")
    partition: str | None = _option(None, group=SLURM, help="SLURM partition")
    gpus_per_node: int = _option(1, group=SLURM, choices=None, minimum=0,
                                 help="GPUs per training: 1, or 0 for CPU jobs")
    cpus_per_task: int = _option(8, group=SLURM, minimum=1, help="CPU cores per training")
    mem_gb: float | None = _option(None, group=SLURM, help="memory per job")
    slurm_array_parallelism: int = _option(64, group=SLURM, minimum=1, help="jobs of the array running at once")
    account: str | None = _option(None, group=SLURM, help="SLURM account")
    qos: str | None = _option(None, group=SLURM, help="SLURM quality of service")
    constraint: str | None = _option(None, group=SLURM, help="SLURM node constraint, e.g. a100")
    slurm_setup: list[str] = _option(group=SLURM, factory=list,
                                     help="shell line run before each job, e.g. 'source .venv/bin/activate' "
                                          "(repeatable)")
    job_name: str = _option("ssl-bench", group=SLURM, help="SLURM job name")
    wait: bool = _option(False, group=SLURM, help="slurm: wait for the jobs and print the summary")

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = "--" + f.name.replace("_", "-")
            if meta["choices"] is not None and value not in meta["choices"]:
                raise UserError(f"{flag} {value!r} is unknown; choose from {list(meta['choices'])}")
            if meta["minimum"] is not None and value is not None and value < meta["minimum"]:
                raise UserError(f"{flag} {value} must be an integer >= {meta['minimum']}")
        if self.gpus_per_node not in (0, 1):
            raise UserError(f"--gpus-per-node {self.gpus_per_node}: a sweep job trains in one process on one GPU "
                            "(0 or 1); data-parallel runs go through torchrun (README)")


# -- grid and trainings (pure) --------------------------------------------------------------------------------------

def expand_grid(base: RunConfig, grid: Mapping[str, Sequence[Any]]) -> list[RunConfig]:
    """Every combination of the ``grid`` lists over ``base``, validated, duplicates dropped (linear time).

    The first grid field in ``RunConfig`` order after ``seed`` is the outermost loop but one: ``seed`` is always
    outermost, so a sweep stopped half-way has complete seeds.
    """
    known = [f.name for f in run_settings()]   # a list: the order must not depend on the process's hash seed
    unknown = sorted(set(grid) - set(known))
    if unknown:
        raise UserError(f"cannot sweep {unknown}; sweepable settings are the run options {sorted(known)}")
    order = sorted(grid, key=lambda name: (name != "seed", known.index(name)))
    seen: dict[tuple, RunConfig] = {}
    for values in itertools.product(*(grid[name] for name in order)):
        config = dataclasses.replace(base, alg_args=dict(base.alg_args), **dict(zip(order, values, strict=True)))
        # validated; settings its strategy ignores -> defaults; --smooth-arg is checked over the whole grid below
        config = plan_teachers([config], resolve=False, check_args=False)[0]
        seen.setdefault(_key(config), config)
    planned = list(seen.values())
    check_smooth_args(base.smooth_args, {n for c in planned for n in c.smooth_args}, planned)
    return planned


@functools.cache
def _algorithm_sha256(algorithm: str) -> str | None:
    """sha256 of the plug-in file the sweep names (what its runs' records carry); None for a built-in."""
    from ssl_bench.algorithm import load_algorithm_class

    return plugin_sha256(load_algorithm_class(algorithm))


@functools.cache
def _targets_from(algorithm: str) -> str:
    from ssl_bench.algorithm import load_algorithm_class

    return load_algorithm_class(algorithm).targets_from


def group_trainings(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """Group runs that may share one student: same settings but the teacher axes, targets from the student."""
    groups: dict[str, list[RunConfig]] = {}
    for c in configs:
        key = json.dumps(c.training_identity(), sort_keys=True)
        if _targets_from(c.algorithm) == "teacher":
            key += json.dumps({a: getattr(c, a) for a in TEACHER_SETTINGS})
        groups.setdefault(key, []).append(c)
    return list(groups.values())


# -- plan: what the results folder already holds ---------------------------------------------------------------------

@dataclass
class Planned:
    """One training of the sweep and what the results folder holds for it."""

    configs: list[RunConfig]         # the teachers still to train, as given
    resolved: list[RunConfig]        # the same, as the loop saves them
    name: str                        # run name of its first teacher
    runs: list[RunConfig] = dataclasses.field(default_factory=list)   # every run of the group (resolved)
    state: str = "new"               # finished (skipped) | unfinished (resumed) | new
    status: str | None = None        # the first teacher's record status (running/stale/failed/... or None)
    detail: str = ""


def plan_sweep(trainings: Sequence[Sequence[RunConfig]]) -> list[Planned]:
    """Class each training by what the results folder holds for its teachers (the loop's own lookup).

    A teacher whose run already finished (separately or in another training) is dropped. A teacher whose run is
    unfinished is resumed with the whole training it belongs to (that training's own teachers, read from its
    config.json); the rest form a new training. A group with nothing left is finished.
    """
    planned: list[Planned] = []
    cache: dict[tuple, RunConfig] = {}   # grids repeat their settings but the seeds: resolve each once
    # the plug-in strategy files this sweep names: the only ones a saved training's teachers may name
    plugins = plugin_files(c for configs in trainings for c in configs)

    def resolve(c: RunConfig) -> RunConfig:
        key = _key(dataclasses.replace(c, seed=0, split_seed=None))
        if key not in cache:
            cache[key] = plan_teachers([dataclasses.replace(c, seed=0, split_seed=None)])[0]
        return dataclasses.replace(cache[key], seed=c.seed, split_seed=c.seed if c.split_seed is None else c.split_seed)

    for configs in trainings:
        resolved = [resolve(c) for c in configs]
        new, saved = [], {}   # saved: lead directory -> (its teachers' configs, status detail)
        for config, c in zip(configs, resolved, strict=True):
            results_dir = Path(c.results_dir)
            run_dir = matching_run_dir(results_dir, run_base_name(c), c,
                                       {"algorithm_sha256": _algorithm_sha256(c.algorithm)})
            record, detail = None, ""
            if run_dir is not None:
                try:
                    record = rec.RunRecord.read_if_present(run_dir)
                except (ValueError, OSError) as exc:
                    detail = f"record unreadable: {exc}"
            if record is not None and record.status == rec.RunStatus.FINISHED:
                continue
            if run_dir is None:
                new.append((config, c))
                continue
            teachers = training_of(run_dir, plugins)
            lead = results_dir / next(iter(teachers.values()))
            if lead not in saved:
                # the saved training's own teachers; what does not identify a run (folders, device, output
                # options) is this sweep's, e.g. a results folder that was moved
                here = {f.name: getattr(c, f.name) for f in run_settings() if not f.metadata["identifies"]}
                members = [dataclasses.replace(saved_run_config(results_dir / name, plugins), **here)
                           for name in teachers.values()]
                if record is not None:
                    status = record.effective_status(run_dir).value
                    detail = f"{status} at step {record.steps_done}/{record.steps}" + (
                        f": {record.error}" if record.error else "")
                saved[lead] = (members, record.effective_status(run_dir).value if record else None, detail)
        for lead, (members, status, detail) in saved.items():
            planned.append(Planned(members, members, lead.name, runs=resolved, state="unfinished", status=status,
                                   detail=detail))
        if new:
            planned.append(Planned([n[0] for n in new], [n[1] for n in new], run_base_name(new[0][1]),
                                   runs=resolved))
        if not new and not saved:
            planned.append(Planned(list(configs), resolved, run_base_name(resolved[0]), runs=resolved,
                                   state="finished", status=rec.RunStatus.FINISHED.value))
    return planned


def _all_runs(planned: Sequence[Planned]) -> list[RunConfig]:
    """Every run of the sweep once (the trainings of one group share their group's list of runs)."""
    return list({id(c): c for p in planned for c in p.runs}.values())


def format_plan(planned: Sequence[Planned], results_dir: str) -> str:
    counts = {s: sum(p.state == s for p in planned) for s in ("finished", "unfinished", "new")}
    runs = len(_all_runs(planned))
    lines = [f"sweep: {runs} runs in {len(planned)} trainings in {results_dir}: {counts['finished']} finished "
             f"(skipped), {counts['unfinished']} unfinished (resumed), {counts['new']} new"]
    for p in planned:
        detail = f"  ({p.detail})" if p.detail else ""
        lines.append(f"  {p.name}  {p.state}{detail}")
        if len(p.configs) > 1:
            lines.append("      teachers: " + ", ".join(c.teacher_key() for c in p.resolved))
    return "\n".join(lines)


# -- one training, as a (requeueable) job ----------------------------------------------------------------------------

class TrainingJob:
    """One training of a sweep: ``train_teachers(configs, resume=True)``; picklable (submitit runs it in a job).

    It has submitit's ``checkpoint`` method (submitit checks for the method, so no submitit base class is
    needed and submitit is imported only when a job is requeued).

    ``resume=True`` makes every attempt idempotent: a new training starts its directories, an interrupted one
    continues its latest checkpoint, a finished one returns its records without training.
    """

    def __init__(self, configs: list[RunConfig], threads: int | None = None, progress: bool = False) -> None:
        self.configs, self.threads, self.progress = configs, threads, progress

    def __call__(self) -> list[str]:
        from ssl_bench.run.loop import train_teachers

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        # Each record gets the single-run command of its teacher: it reproduces that record number for number
        # (a teacher's numbers do not depend on the others), whatever set of teachers this training serves.
        commands = [shlex.join(["python", "run_bench.py", "run", *config_to_argv(c)]) for c in self.configs]
        outcomes = train_teachers(self.configs, resume=True, progress=self.progress, command=commands, quiet=True)
        return [str(run_dir) for _, run_dir in outcomes]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption / time-out (USR2): requeue the same job; the loop resumes."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise MissingPackageError("--executor submitit-local/slurm needs submitit: pip install 'ssl-bench[cluster]' "
                          "(or use --executor local)") from None
    return submitit


def make_executor(options: SweepOptions, log_dir: Path) -> Any:
    """A submitit executor: ``submitit-local`` (subprocesses on this machine) or ``slurm`` (a job array)."""
    submitit = _submitit()
    if options.executor == "submitit-local":
        executor = submitit.LocalExecutor(folder=log_dir, max_num_timeout=options.max_num_timeout)
        executor.update_parameters(timeout_min=options.timeout_min)
        return executor
    try:
        executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm", slurm_max_num_timeout=options.max_num_timeout)
    except RuntimeError as exc:   # submitit: 'Could not detect "srun", are you indeed on a slurm cluster?'
        raise UserError(f"--executor slurm: {exc} Use --executor local or submitit-local on this machine.") from None
    params: dict[str, Any] = dict(timeout_min=options.timeout_min, gpus_per_node=options.gpus_per_node,
                                  cpus_per_task=options.cpus_per_task, nodes=1, tasks_per_node=1,
                                  name=options.job_name, slurm_array_parallelism=options.slurm_array_parallelism)
    optional = {"slurm_partition": options.partition, "mem_gb": options.mem_gb, "slurm_account": options.account,
                "slurm_qos": options.qos, "slurm_constraint": options.constraint,
                "slurm_setup": list(options.slurm_setup) or None}
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor


def execute(todo: Sequence[Planned], options: SweepOptions, executor: Any) -> dict[int, str]:
    """Run the trainings; returns error lines by index (a failure never stops the others)."""
    errors: dict[int, str] = {}
    if options.executor == "local":
        for i, p in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] {p.name} ({p.state})", flush=True)
            try:
                TrainingJob(p.configs, threads=options.threads, progress=not options.no_progress)()
            except Exception as exc:  # noqa: BLE001 - reported in the summary; Ctrl-C still stops the sweep
                errors[i] = f"{type(exc).__name__}: {exc}"
                print(f"  failed: {errors[i]}", file=sys.stderr, flush=True)
        return errors
    threads = options.threads or (max(1, (os.cpu_count() or 1) // options.parallel)
                                  if options.executor == "submitit-local" else options.cpus_per_task)
    if options.executor == "slurm":
        with executor.batch():
            jobs = [executor.submit(TrainingJob(p.configs, threads=threads)) for p in todo]
        print(f"submitted {len(jobs)} trainings as a SLURM job array; logs in {executor.folder}", flush=True)
        if not options.wait:
            return {}
    else:
        jobs = []
        for i, p in enumerate(todo):   # at most `parallel` at a time
            while sum(not j.done() for j in jobs) >= options.parallel:
                time.sleep(0.2)
            jobs.append(executor.submit(TrainingJob(p.configs, threads=threads)))
            print(f"[{i + 1}/{len(todo)}] {p.name} ({p.state}): submitit job {jobs[-1].job_id}", flush=True)
    for i, job in enumerate(jobs):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            lines = str(exc).strip().splitlines()
            errors[i] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return errors


def format_summary(planned: Sequence[Planned], errors: Mapping[int, str]) -> tuple[str, bool]:
    """One line per run (every teacher of every training) and whether all finished."""
    rows, all_finished = [], True
    for c in _all_runs(planned):
        run_dir = matching_run_dir(Path(c.results_dir), run_base_name(c), c,
                                   {"algorithm_sha256": _algorithm_sha256(c.algorithm)})
        try:
            record = rec.RunRecord.read(run_dir) if run_dir is not None else None
        except (ValueError, OSError):
            record = None
        status = record.effective_status(run_dir).value if record is not None else "missing"
        all_finished &= status == rec.RunStatus.FINISHED
        med = (record.results or {}).get("teacher_median_last20") if record is not None else None
        rows.append(f"  {run_dir.name if run_dir else run_base_name(c)}  {status}"
                    + (f"  teacher med20 {med:.2f}" if med is not None else ""))
    lines = ["summary:", *rows]
    unfinished = sum("  finished" not in row for row in rows)
    if unfinished:
        lines.append(f"{unfinished} of {len(rows)} runs did not finish")
    lines += [f"  error: {message}" for message in errors.values()]
    return "\n".join(lines), all_finished


def run_sweep(base: RunConfig, grid: Mapping[str, Sequence[Any]], options: SweepOptions) -> int:
    """Expand, group, plan and execute a sweep; returns the exit code (0 when every run finished)."""
    options.validate()
    count = math.prod(len(values) for values in grid.values())   # before anything is expanded (lazy ranges)
    if count > MAX_SWEEP_RUNS:
        line = (f"sweep: {count} runs in the grid ({' x '.join(f'{len(v)} {k}' for k, v in grid.items())}), over "
                f"the {MAX_SWEEP_RUNS} one sweep plans; split it into smaller sweeps (e.g. --seeds 0-99)")
        if options.dry_run:
            print(line, flush=True)
            return 0
        raise UserError(line)
    configs = expand_grid(base, grid)
    if options.executor != "local":
        # jobs may start in another folder: absolute paths (results_dir / data_root do not identify a run)
        configs = [dataclasses.replace(c, results_dir=os.path.abspath(c.results_dir),
                                       data_root=os.path.abspath(c.data_root) if c.data_root else None)
                   for c in configs]
    log_dir = Path(options.log_dir or Path(base.results_dir) / "_submitit").absolute()
    executor = make_executor(options, log_dir) if options.executor != "local" and not options.dry_run else None
    planned = plan_sweep(group_trainings(configs))
    print(format_plan(planned, base.results_dir), flush=True)
    todo = [p for p in planned if p.state != "finished" and not (options.skip_failed and p.status == "failed")]
    if options.dry_run:
        return 0
    errors = execute(todo, options, executor) if todo else {}
    if options.executor == "slurm" and not options.wait:
        print("Run the same sweep again to see which runs finished (it skips them and resumes the rest).")
        return 0
    summary, all_finished = format_summary(planned, errors)
    print(summary)
    return 0 if all_finished else 1
