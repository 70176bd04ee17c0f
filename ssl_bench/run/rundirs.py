"""Run directories: their names, creating them (never reusing one), finding the run to resume, their locks.

A training writes one run directory per teacher (rank 0 only); the first holds the training's checkpoint, and
each directory's ``config.json`` names the training's teachers (``training.teachers``) so ``--resume`` and
``sweep`` find the whole training from any of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable, Iterator
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

# Run directories of one name (base, base-2, ...) a results folder may hold: the stated maximum of create_run_dir.
MAX_SAME_NAMED = 10_000


def run_base_name(config: Any) -> str:
    """Human-readable stem of a run directory: algorithm, smoothing, data, budget, seed and profile."""
    # The smoothing part names every setting the strategy reads that differs from its default, m from the
    # profile's: two teachers --m 0.99,0.999 on the cpu profile are tma and tma_m0.999 (SmoothingSpec.suffix).
    profile_m = PROFILES[config.profile].m if config.profile in PROFILES else None
    settings = {**config.to_dict(), **config.smooth_args, "m": profile_m if config.m is None else config.m}
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
    for k in range(1, MAX_SAME_NAMED + 1):
        path = results_dir / (base if k == 1 else f"{base}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise UserError(f"{MAX_SAME_NAMED} runs named {base!r} in {results_dir} already: move finished runs aside or "
                    "pass another --results-dir")


def find_runs(results_dir: Path, base: str) -> list[Path]:
    """Existing run directories for the same settings, oldest first."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    def numbered(name: str) -> bool:
        return name.startswith(base + "-") and name[len(base) + 1:].isdigit()

    # a symlinked run directory is never one: writing through it would write outside the results folder
    found = [p for p in results_dir.iterdir()
             if (p.name == base or numbered(p.name)) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def child_dir(results_dir: Path, name: Any, where: Path) -> Path:
    """``results_dir / name`` when ``name`` (read from the file ``where``) is a plain child name of the results
    folder: a non-empty string without separators, not ``.``/``..`` or hidden, and not a symlink. A results
    folder is data: a name in it never leads ssl-bench to write or read anywhere else."""
    plain = (isinstance(name, str) and name and not name.startswith(".") and "\0" not in name
             and not any(sep in name for sep in ("/", "\\", os.sep, os.altsep or "/")))
    path = Path(results_dir) / name if plain else None
    if path is None or path.is_symlink():
        raise UserError(f"{where} names the run directory {name!r}, which is not a plain folder inside "
                        f"{results_dir} (a name without '/', '..' or a symlink); move {where.parent} out of the "
                        "results folder (it was edited by hand or copied from elsewhere)")
    return path


def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's config.json, checked for the shape this module reads; one clear line otherwise."""
    path = run_dir / rec.CONFIG_FILE
    fix = f"move the run directory {run_dir} aside to start this run anew"
    try:
        data = rec.read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}: {exc}); {fix}") from None
    shared = data.get("training") if isinstance(data, dict) else None
    teachers = shared.get("teachers") if isinstance(shared, dict) else None
    if (not isinstance(data, dict) or not isinstance(data.get("config", {}), dict)
            or not (shared is None or (isinstance(teachers, dict) and teachers
                                       and all(isinstance(k, str) and k for k in teachers)))):
        raise UserError(f"{path} is not an ssl-bench run configuration (unexpected JSON structure); {fix}")
    for name in (teachers or {}).values():
        child_dir(run_dir.parent, name, path)
    return data


def plugin_files(configs: Iterable[RunConfig]) -> frozenset[str]:
    """The plug-in strategy files (resolved paths) that ``configs`` — the command line's — name: the only ones a
    saved configuration may name too (``saved_run_config``)."""
    return frozenset(str(Path(c.smooth).resolve()) for c in configs if c.smooth.endswith(".py"))


def saved_run_config(run_dir: Path, plugins: frozenset[str] = frozenset()) -> RunConfig:
    """The ``RunConfig`` saved in a run directory's config.json; one line naming the file when it is not one.

    A results folder is data: a saved ``smooth`` that is a plug-in file is refused unless the command line names
    the same file (``plugins``, from :func:`plugin_files`), so nothing a results folder names is ever imported
    (a plug-in in ``./smoothers``, named by its name, is the user's and is allowed)."""
    path = run_dir / rec.CONFIG_FILE
    try:
        config = RunConfig.from_dict(saved_config(run_dir).get("config", {}))
    except UserError as exc:
        if str(path) in str(exc):
            raise
        raise UserError(f"{path}: {exc}; move the run directory {run_dir} aside to start this run anew") from None
    refuse_unnamed_plugin(config, plugins, str(path), f"or move {run_dir} out of the results folder")
    return config


def refuse_unnamed_plugin(config: RunConfig, plugins: frozenset[str], source: str, otherwise: str) -> None:
    """One line when a configuration read from ``source`` (a file) names a plug-in strategy file the command line
    does not (``plugins``): a results folder is data and never decides what code runs."""
    smooth = config.smooth
    if isinstance(smooth, str) and smooth.endswith(".py") and str(Path(smooth).resolve()) not in plugins:
        raise UserError(f"{source} names the plug-in strategy file {smooth!r}; ssl-bench imports a plug-in only "
                        f"when you name it: pass --smooth {smooth} on the command line (if you trust that file), "
                        f"{otherwise}")


def _training_identity(saved: dict[str, Any]) -> dict[str, Any]:
    """The settings of a saved ``config`` that every teacher of one training shares."""
    keys = [k for k in RunConfig().training_identity()]
    return {k: saved.get(k) for k in keys}


# What a run's numbers depend on beyond its settings: the content of its algorithm's file and of its data. A
# record carries both (ssl_bench.run.writer); a run whose file or data changed is another run.
CONTENT_FIELDS = ("algorithm_sha256", "dataset_fingerprint")


def plugin_sha256(cls: type) -> str | None:
    """sha256 of a plug-in algorithm's file (what its records carry); None for a built-in, whose file changes
    with ssl-bench releases (the record's commit says which ran; the leaderboard ignores it alike)."""
    from ssl_bench.algorithm import BUILTIN_PACKAGE, source_sha256

    if cls.__module__.startswith(BUILTIN_PACKAGE + "."):
        return None
    return source_sha256(object.__new__(cls))   # reads the class's file only, no instance state


def content_of(training: Training) -> dict[str, str | None]:
    """The content identity of a built training (``CONTENT_FIELDS``)."""
    return {"algorithm_sha256": plugin_sha256(type(training.algorithm)),
            "dataset_fingerprint": training.dataset.fingerprint}


def content_differences(run_dir: Path, content: dict[str, str | None] | None) -> list[str]:
    """How the record in ``run_dir`` differs from ``content`` (fields both know); [] without a readable record."""
    if not content:
        return []
    try:
        record = rec.RunRecord.read_if_present(run_dir)
    except (ValueError, OSError):
        return []   # an unreadable record: resuming rewrites it
    if record is None:
        return []
    return [f"{k} {str(getattr(record, k))[:12]}... there, {str(v)[:12]}... here" for k, v in content.items()
            if v is not None and getattr(record, k) is not None and getattr(record, k) != v]


def matching_run_dirs(results_dir: Path, base: str, config: RunConfig,
                      content: dict[str, str | None] | None = None) -> list[Path]:
    """Every existing directory of a run with the same identifying settings (``RunConfig.identity``) and, when
    ``content`` is given, the same algorithm file and data (``CONTENT_FIELDS``), newest first."""
    wanted = config.identity()
    found = []
    for path in reversed(find_runs(results_dir, base)):
        if not os.path.lexists(path / rec.CONFIG_FILE):   # failed before writing its config: nothing to resume
            continue
        saved = saved_config(path).get("config", {})
        if {k: saved.get(k) for k in wanted} == wanted and not content_differences(path, content):
            found.append(path)
    return found


def matching_run_dir(results_dir: Path, base: str, config: RunConfig,
                     content: dict[str, str | None] | None = None) -> Path | None:
    """The latest existing directory of a run with the same identifying settings (and content), if any."""
    found = matching_run_dirs(results_dir, base, config, content)
    return found[0] if found else None


def training_of(run_dir: Path, plugins: frozenset[str] = frozenset()) -> dict[str, str]:
    """The teachers (key -> run directory name) of the training a run directory belongs to, lead first.

    Every teacher folder must be a plain folder beside ``run_dir`` whose config.json has the same training
    settings (algorithm, data, budget, ...) as ``run_dir``'s own: a config that names a folder of another
    training, or of another algorithm, is refused, so nothing but what the command line names is ever run.
    """
    saved = saved_config(run_dir)
    if not saved.get("training"):
        return {saved_run_config(run_dir, plugins).teacher_key(): run_dir.name}
    teachers = dict(saved["training"]["teachers"])
    where = run_dir / rec.CONFIG_FILE
    if run_dir.name not in teachers.values():
        raise UserError(f"{where}: its training's teachers {sorted(teachers.values())} do not include its own "
                        f"folder {run_dir.name!r}; move {run_dir} out of the results folder")
    own = _training_identity(saved.get("config", {}))
    for name in teachers.values():
        member = child_dir(run_dir.parent, name, where)
        other = _training_identity(saved_config(member).get("config", {})) if name != run_dir.name else own
        diff = sorted(k for k in own if own[k] != other[k])
        if diff:
            raise UserError(f"{where} names the teacher folder {name!r}, whose config.json is of another training "
                            f"(it differs in {diff}); move {run_dir} and {member} out of the results folder")
    return teachers


def _closest_difference(results_dir: Path, config: RunConfig, content: dict[str, str | None] | None = None) -> str:
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
        diff += content_differences(path, content) if not diff else []
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


def _finished_elsewhere(training: Training, results_dir: Path, content: dict[str, str | None]) -> RunDirs | None:
    """Each teacher's finished run, when every one has one (its numbers are those this training would give)."""
    dirs, records = [], []
    for t in training.teachers:
        found = matching_run_dir(results_dir, run_base_name(t.config), t.config, content)
        record = rec.RunRecord.read_if_present(found) if found is not None else None
        if record is None or record.status != rec.RunStatus.FINISHED:
            return None
        dirs.append(found)
        records.append(record)
    return RunDirs(dirs, records, False, [t.key for t in training.teachers])


def _find_training(training: Training, results_dir: Path,
                   content: dict[str, str | None]) -> tuple[dict[str, str] | None, list[dict[str, str]]]:
    """The saved training with exactly this run's teachers (in any order; an unfinished one first), and the
    unfinished trainings that hold some of them but not exactly them."""
    keys = {t.key for t in training.teachers}
    same, other = [], []
    for t in training.teachers:
        for path in matching_run_dirs(results_dir, run_base_name(t.config), t.config, content):
            teachers = training_of(path, plugin_files(t.config for t in training.teachers))
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
        content = content_of(training)
        teachers, others = _find_training(training, results_dir, content)
        if teachers is not None:
            dirs = [results_dir / name for name in teachers.values()]
            previous = [rec.RunRecord.read_if_present(d) for d in dirs]
            # the saved order (the first teacher's directory holds the checkpoint); every rank adopts it
            return RunDirs(dirs, previous, (dirs[0] / CHECKPOINT_NAME).exists(), list(teachers))
        finished = _finished_elsewhere(training, results_dir, content)
        if finished is not None:   # every teacher asked for already finished, e.g. in a larger shared training
            return finished
        if others:
            raise UserError(f"--resume: an unfinished training holds the teachers {list(others[0])} (in "
                            f"{results_dir / next(iter(others[0].values()))}); this command asks for "
                            f"{[t.key for t in training.teachers]}. Resume with exactly those smoothing settings, or "
                            "drop --resume to start a new training")
        if not quiet:   # the user asked to continue a run: starting another (perhaps of 2^20 steps) would surprise
            raise UserError(f"--resume: nothing to resume with these settings "
                            f"({_closest_difference(results_dir, training.teachers[0].config, content)}); drop "
                            "--resume to start a new run, or fix the settings (or restore the file that changed)")
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
            except OSError as exc:   # permissions, or a read-only mount (EROFS is no PermissionError)
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                raise OSError(exc.errno, f"run directory {d} is not writable ({exc.strerror}: {exc.filename}); make "
                                         "it writable (or copy it into a folder you own) and --resume again") from None
        yield


