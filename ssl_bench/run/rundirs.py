"""Run directories: their names, creating them (never reusing one), finding the run to resume, their locks.

A training writes one run directory per teacher (rank 0 only); the first holds the training's checkpoint, and
each directory's ``config.json`` names the training's teachers (``training.teachers``) so ``--resume`` and
``sweep`` find the whole training from any of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench import records as rec
from ssl_bench.algorithm import registered_name
from ssl_bench.config import PROFILES, RunConfig
from ssl_bench.data.imagefolder import PREFIX as IMAGEFOLDER_PREFIX  # run directory names of imagefolder:PATH
from ssl_bench.data.imagefolder import short_name as imagefolder_short_name
from ssl_bench.errors import UserError
from ssl_bench.run.checkpoint import CHECKPOINT_NAME
from ssl_bench.run.lock import RunLock
from ssl_bench.run.state import Training
from ssl_bench.smoothing import SmoothingSpec


def run_base_name(config: Any) -> str:
    """Human-readable stem of a run directory: algorithm, smoothing, data, budget, seed and profile."""
    # The smoothing part names every setting the strategy reads that differs from its default, m from the
    # profile's: two teachers --m 0.99,0.999 on the cpu profile are tma and tma_m0.999 (SmoothingSpec.suffix).
    profile_m = PROFILES[config.profile].m if config.profile in PROFILES else None
    settings = {**config.to_dict(), "m": profile_m if config.m is None else config.m}
    smooth = SmoothingSpec.of(config.smooth, settings).suffix(defaults={"m": profile_m})
    dataset = Path(config.dataset).stem if config.dataset.endswith(".npz") else config.dataset
    if dataset.startswith(IMAGEFOLDER_PREFIX):  # imagefolder:PATH[@SIZE] holds a path: not a directory name
        dataset = imagefolder_short_name(dataset)
    algorithm = registered_name(config.algorithm)   # issue 26: the registered name, not the file's
    return f"{algorithm}-{smooth}-{dataset}-{config.labels}-s{config.seed}-{config.profile}"


def create_run_dir(results_dir: Path, base: str) -> Path:
    """Create a new, empty run directory ``base``, ``base-2``, ``base-3``, ...; never reuse an existing one.

    ``os.mkdir`` is atomic, so two runs that start at the same moment get different directories.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        path = results_dir / (base if k == 1 else f"{base}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise UserError(f"more than 10000 runs named {base!r} in {results_dir}: move finished runs aside or pass "
                    "another --results-dir")


def find_runs(results_dir: Path, base: str) -> list[Path]:
    """Existing run directories for the same settings, oldest first."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    def numbered(name: str) -> bool:
        return name.startswith(base + "-") and name[len(base) + 1:].isdigit()

    found = [p for p in results_dir.iterdir() if p.is_dir() and (p.name == base or numbered(p.name))]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's config.json, checked for the shape this module reads; one clear line otherwise."""
    path = run_dir / rec.CONFIG_FILE
    fix = f"move the run directory {run_dir} aside to start this run anew"
    try:
        data = rec.read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}: {exc}); {fix}") from None
    shared = data.get("training") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or not isinstance(data.get("config", {}), dict)
            or not (shared is None or (isinstance(shared, dict) and isinstance(shared.get("teachers"), dict)))):
        raise UserError(f"{path} is not an ssl-bench run configuration (unexpected JSON structure); {fix}")
    return data


def matching_run_dirs(results_dir: Path, base: str, config: RunConfig) -> list[Path]:
    """Every existing directory of a run with the same identifying settings (``RunConfig.identity``), newest first."""
    wanted = config.identity()
    found = []
    for path in reversed(find_runs(results_dir, base)):
        if not (path / rec.CONFIG_FILE).exists():   # a run that failed before writing its config: nothing to resume
            continue
        saved = saved_config(path).get("config", {})
        if {k: saved.get(k) for k in wanted} == wanted:
            found.append(path)
    return found


def matching_run_dir(results_dir: Path, base: str, config: RunConfig) -> Path | None:
    """The latest existing directory of a run with the same identifying settings, if any."""
    found = matching_run_dirs(results_dir, base, config)
    return found[0] if found else None


def training_of(run_dir: Path) -> dict[str, str]:
    """The teachers (key -> run directory name) of the training a run directory belongs to, lead first."""
    saved = saved_config(run_dir)
    if saved.get("training"):
        return dict(saved["training"]["teachers"])
    return {RunConfig.from_dict(saved["config"]).teacher_key(): run_dir.name}


def _closest_difference(results_dir: Path, config: RunConfig) -> str:
    """Why no run matched, for the message of a ``--resume`` with nothing to resume: the run in ``results_dir``
    whose identifying settings differ least from ``config``, and how."""
    wanted = config.identity()
    best: tuple[int, str] | None = None
    for path in sorted(results_dir.iterdir()) if results_dir.is_dir() else []:
        try:
            saved = saved_config(path).get("config", {}) if (path / rec.CONFIG_FILE).is_file() else None
        except ValueError:
            continue
        if saved is None:
            continue
        diff = [f"{k} {saved.get(k)!r} there, {v!r} here" for k, v in wanted.items() if saved.get(k) != v]
        if best is None or len(diff) < best[0]:
            best = (len(diff), f"the closest, {path.name}, differs in {'; '.join(diff[:4])}"
                               + ("; ..." if len(diff) > 4 else ""))
    return best[1] if best else f"no runs in {results_dir}"


@dataclass
class RunDirs:
    """Where a training writes: one run directory per teacher; the first holds the checkpoint."""

    dirs: list[Path]
    previous: list[rec.RunRecord | None]   # each teacher's record before this attempt (resume), else None
    has_checkpoint: bool
    keys: list[str]                        # the teachers in the order of ``dirs`` (a resumed training's order)

    @property
    def checkpoint(self) -> Path:
        return self.dirs[0] / CHECKPOINT_NAME


def _finished_elsewhere(training: Training, results_dir: Path) -> RunDirs | None:
    """Each teacher's finished run, when every one has one (its numbers are those this training would give)."""
    dirs, records = [], []
    for t in training.teachers:
        found = matching_run_dir(results_dir, run_base_name(t.config), t.config)
        record = rec.RunRecord.read_if_present(found) if found is not None else None
        if record is None or record.status != rec.RunStatus.FINISHED:
            return None
        dirs.append(found)
        records.append(record)
    return RunDirs(dirs, records, False, [t.key for t in training.teachers])


def _find_training(training: Training, results_dir: Path) -> tuple[dict[str, str] | None, list[dict[str, str]]]:
    """The saved training with exactly this run's teachers (in any order; an unfinished one first), and the
    unfinished trainings that hold some of them but not exactly them."""
    keys = {t.key for t in training.teachers}
    same, other = [], []
    for t in training.teachers:
        for path in matching_run_dirs(results_dir, run_base_name(t.config), t.config):
            teachers = training_of(path)
            lead = rec.RunRecord.read_if_present(results_dir / next(iter(teachers.values())))
            unfinished = lead is None or lead.status != rec.RunStatus.FINISHED
            if set(teachers) == keys:
                same.append((not unfinished, teachers))    # unfinished first, then the newest
            elif unfinished:
                other.append(teachers)
    same.sort(key=lambda x: x[0])
    return (same[0][1] if same else None), other


def open_run_dirs(training: Training, resume: bool, command: str | dict[str, str], quiet: bool = False) -> RunDirs:
    """The directories to resume (``resume`` and a saved training with the same teachers), or new ones; never
    reuses another run's directory. ``command``: one for every teacher, or one per teacher key."""
    results_dir = Path(training.config.results_dir)
    if resume:
        teachers, others = _find_training(training, results_dir)
        if teachers is not None:
            dirs = [results_dir / name for name in teachers.values()]
            previous = [rec.RunRecord.read_if_present(d) for d in dirs]
            # the saved order (the first teacher's directory holds the checkpoint); every rank adopts it
            return RunDirs(dirs, previous, (dirs[0] / CHECKPOINT_NAME).exists(), list(teachers))
        finished = _finished_elsewhere(training, results_dir)
        if finished is not None:   # every teacher asked for already finished, e.g. in a larger shared training
            return finished
        if others:
            raise UserError(f"--resume: an unfinished training holds the teachers {list(others[0])} (in "
                            f"{results_dir / next(iter(others[0].values()))}); this command asks for "
                            f"{[t.key for t in training.teachers]}. Resume with exactly those smoothing settings, or "
                            "drop --resume to start a new training")
        if not quiet:   # the user asked to continue a run: starting another (perhaps of 2^20 steps) would surprise
            raise UserError(f"--resume: nothing to resume with these settings "
                            f"({_closest_difference(results_dir, training.teachers[0].config)}); drop --resume to "
                            "start a new run, or fix the settings")
    keys = [t.key for t in training.teachers]
    commands = [command[k] if isinstance(command, dict) else command for k in keys]
    dirs: list[Path] = []
    try:
        dirs += [create_run_dir(results_dir, run_base_name(t.config)) for t in training.teachers]
        shared = {"teachers": {k: d.name for k, d in zip(keys, dirs, strict=True)}} if len(dirs) > 1 else None
        for t, d, cmd in zip(training.teachers, dirs, commands, strict=True):
            rec.atomic_write_json(d / rec.CONFIG_FILE, {"config": t.config.to_dict(), "command": cmd,
                                                        "training": shared})
            training.split.save(d / "split.json")
    except OSError as exc:
        for d in dirs:   # never leave a half-made run behind: it would block the next --resume
            shutil.rmtree(d, ignore_errors=True)
        raise OSError(exc.errno, f"--results-dir {str(results_dir)!r}: cannot create a run there "
                                 f"({exc.strerror or exc}: {exc.filename}); pass a writable folder with free space "
                                 "to --results-dir") from None
    return RunDirs(dirs, [None] * len(dirs), False, keys)



@contextlib.contextmanager
def locked(dirs: list[Path]) -> Iterator[None]:
    """Hold every run directory's lock: a second process resuming the same run is refused."""
    with contextlib.ExitStack() as stack:
        for d in dirs:
            try:
                stack.enter_context(RunLock(d))
            except PermissionError as exc:
                raise OSError(exc.errno, f"run directory {d} is not writable ({exc.strerror}: {exc.filename}); make "
                                         "it writable (or copy it into a folder you own) and --resume again") from None
        yield


