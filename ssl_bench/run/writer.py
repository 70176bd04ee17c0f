"""What a training leaves on disk (rank 0): each teacher's record.json and metrics.csv, the checkpoint,
TensorBoard event files, the progress bar."""

from __future__ import annotations

import csv
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import ssl_bench
from ssl_bench import records as rec
from ssl_bench.algorithm import hyperparameters, source_sha256
from ssl_bench.errors import MissingPackageError
from ssl_bench.plugins import file_sha256
from ssl_bench.run.checkpoint import save_checkpoint
from ssl_bench.run.rundirs import RunDirs
from ssl_bench.run.state import LogWindow, Teacher, Training, checkpoint_state
from ssl_bench.smoothing import plugin_file, strategy_class

METRIC_COLUMNS = ("step", "lr", "loss", "mask_rate", "teacher_acc", "student_acc", "teacher_ece", "teacher_nll",
                  "teacher_param_msd", "teacher_output_msd", "elapsed_s")
# Every --log-every steps: the training's step logs (the loss, each loss term, the mask rate...) averaged over the
# steps since the previous log row, and the learning rate. In the first teacher's directory (beside the
# checkpoint): the student's losses are the training's, shared by its teachers.
TRAIN_LOG_FILE = "train_log.csv"
TRAIN_LOG_COLUMNS = ("step", "lr", "loss", "mask_rate", "elapsed_s")
# At the end of training, in every teacher's directory: its and the student's top-1 on each corrupted test cell.
CORRUPTION_FILE = "corruption.csv"
CORRUPTION_COLUMNS = ("corruption", "severity", "teacher_acc", "student_acc")


def git_commit() -> str | None:
    """The commit of the ssl-bench checkout, with ``+dirty`` when it has uncommitted changes."""
    repo = Path(ssl_bench.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """The versions of the packages behind a number."""
    return {"ssl_bench": ssl_bench.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is empty), else the
    architecture."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """The device a run trained on, as the record names it. On a CPU also the vector instructions torch's kernels
    use (``torch.backends.cpu.get_cpu_capability()``: AVX2, AVX512, ...): two machines that differ in them sum
    floats in another order, so "same seed, same machine, same numbers" needs it to say which machine."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return (f"cpu:{cpu_model()} ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()}) "
            f"x{torch.get_num_threads()} threads")


def smoothing_sha256(strategy: str) -> str | None:
    """sha256 of a plug-in strategy's file (what its records carry); None for a built-in."""
    cls = strategy_class(strategy)
    return None if plugin_file(cls) is None else file_sha256(cls)


def new_record(training: Training, teacher: Teacher, run_dir: Path, command: str, started: str,
               shared: str | None) -> rec.RunRecord:
    """The record of one teacher's run, before its first evaluation."""
    c, d = teacher.config, training.dataset
    hp = hyperparameters(training.algorithm)
    return rec.RunRecord(
        run_id=run_dir.name, status=rec.RunStatus.RUNNING, error=None, algorithm=training.algorithm.name,
        alg_args=hp, settings=c.identity(),
        # the hyper-parameters changed with --alg-arg (the leaderboard decides "paper configuration" from alg_args)
        alg_overrides={k: hp[k] for k in c.alg_args}, targets_from=training.algorithm.targets_from,
        training=shared, teacher=teacher.key if shared else None,
        dataset=d.name, dataset_kind=d.kind, dataset_family=d.family, dataset_fingerprint=d.fingerprint,
        train_size=len(d.y_train), split_hash=training.split.hash, steps_done=training.step, hflip=d.hflip,
        algorithm_sha256=source_sha256(training.algorithm),
        smoothing=c.smoothing().to_record(), smoothing_sha256=smoothing_sha256(c.smooth),
        results=rec.summarize_evaluations(teacher.evaluations.rows) if teacher.evaluations.rows else None,
        versions=versions(), device=device_description(training.device), commit=git_commit(),
        command=command, started=started, finished=None, wall_seconds=None,
        data_parallel=[{"from_step": training.step, "world_size": training.ranks.world_size}])


def require_tensorboard() -> type:
    """TensorBoard's ``SummaryWriter`` (an optional dependency), or one line saying how to install it. Called
    before any run directory exists (the loop's pre-flight), so a missing package leaves nothing behind."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingPackageError("--tensorboard needs the tensorboard package: pip install 'ssl-bench[tensorboard]' "
                                  "(or drop --tensorboard; metrics.csv has the same numbers)") from None
    return SummaryWriter


def _tensorboard_writer(run_dir: Path) -> Any:
    """A TensorBoard writer for ``run_dir``."""
    return require_tensorboard()(log_dir=str(run_dir / "tensorboard"))


def _read_train_log(path: Path, up_to_step: int) -> list[dict[str, float]]:
    """The log rows of a resumed training up to its checkpoint's step (later ones are logged again)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
    for row in rows:
        row["step"] = int(row["step"])
    return [row for row in rows if row["step"] <= up_to_step]


class Reporter:
    """Rank 0's writer of everything a training leaves on disk: records, metrics.csv, checkpoint, TensorBoard."""

    def __init__(self, training: Training, dirs: RunDirs, command: str | dict[str, str], progress: bool) -> None:
        self.training, self.dirs = training, dirs
        self.active = training.ranks.is_main
        previous = [p for p in dirs.previous if p is not None]
        started = previous[0].started if previous and previous[0].started else rec.now_iso()
        rows = training.teachers[0].evaluations.rows   # restored before the reporter starts: the clock continues
        self.t0 = time.perf_counter() - (rows[-1]["elapsed_s"] if rows else 0.0)
        shared = dirs.dirs[0].name if len(dirs.dirs) > 1 else None
        self.records = [new_record(training, t, d, command[t.key] if isinstance(command, dict) else command, started,
                                   shared)
                        for t, d in zip(training.teachers, dirs.dirs, strict=True)]
        for record, p in zip(self.records, dirs.previous, strict=True):
            if p is not None and p.data_parallel:   # every stretch of steps and its world size
                last = p.data_parallel[-1]
                record.data_parallel = list(p.data_parallel) + (
                    [] if last.get("world_size") == training.ranks.world_size else record.data_parallel)
        tensorboard = training.config.tensorboard and self.active
        self.writers = [_tensorboard_writer(d) for d in dirs.dirs] if tensorboard else []
        self.bar = tqdm(total=training.config.steps, initial=training.step, desc=dirs.dirs[0].name, dynamic_ncols=True,
                        unit="step", disable=not (progress and self.active))
        self.train_log = _read_train_log(dirs.dirs[0] / TRAIN_LOG_FILE, training.step) if self.active else []
        self._logged = (0, {})   # (steps, means) of the window at the previous log row since the last evaluation
        self.corruption_rows: dict[str, list[dict[str, Any]]] = {}   # teacher key -> corruption.csv rows

    def progress(self, means: dict[str, float], window_steps: int) -> None:
        """A log row (``train_log.csv``, TensorBoard ``train/*``) and the progress bar, every --log-every steps.

        ``means`` average the window since the last evaluation over its ``window_steps`` steps; the row holds the
        mean over the steps since the previous row, recovered from the two running means (no extra device work)."""
        training = self.training
        before_steps, before = self._logged if window_steps > self._logged[0] else (0, {})
        steps = window_steps - before_steps
        interval = {k: round((v * window_steps - before.get(k, 0.0) * before_steps) / steps, 6)
                    for k, v in means.items()}
        self._logged = (window_steps, means)
        if self.active:
            row = {"step": training.step, "lr": training.scheduler.get_last_lr()[0], **interval,
                   "elapsed_s": round(time.perf_counter() - self.t0, 3)}
            self.train_log.append(row)
            for writer in self.writers[:1]:   # the training's losses: the first teacher's event files
                for key, value in row.items():
                    if key not in ("step", "elapsed_s"):
                        writer.add_scalar(f"train/{key}", value, training.step)
        first = training.teachers[0]
        last = first.evaluations.rows
        # Named in full: the bar shows the training loss and mask rate since the last row, and the last evaluated
        # top-1 of the first teacher (its key) and of the student.
        self.bar.set_postfix({"train loss": f"{interval.get('loss', float('nan')):.3f}",
                              **({"mask": f"{interval['mask_rate']:.2f}"} if "mask_rate" in interval else {}),
                              f"{first.key} top-1": f"{last[-1]['teacher_acc']:.1f}" if last else "-",
                              "student top-1": f"{last[-1]['student_acc']:.1f}" if last else "-"})
        self.bar.update(training.step - self.bar.n)

    def reset_window(self) -> None:
        """The loop started a new window (after an evaluation)."""
        self._logged = (0, {})

    def continue_window(self, window: LogWindow) -> None:
        """A resumed training's restored window was logged up to its checkpoint's step (a log row is written at
        every checkpoint): the next row starts after it. Rounded as ``LogWindow.means_over_ranks`` rounds (on
        one process these are the numbers the uninterrupted run had; under torchrun rank 0's own)."""
        if window.count:
            self._logged = (window.count, {k: round(v.item() / window.count, 6) for k, v in window.sums.items()})

    def evaluation(self, means: dict[str, float], rows: list[dict[str, Any]]) -> None:
        training = self.training
        lr = training.scheduler.get_last_lr()[0]
        elapsed = round(time.perf_counter() - self.t0, 3)
        for t, row in zip(training.teachers, rows, strict=True):
            t.evaluations.rows.append({"step": training.step, "lr": lr, **means, **row, "elapsed_s": elapsed})
        for writer, t in zip(self.writers, training.teachers, strict=False):   # no writers without --tensorboard
            for key, value in t.evaluations.rows[-1].items():
                if key != "step" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, training.step)
            writer.flush()

    def corruption(self, name: str, results: dict[str, tuple[dict[tuple[str, int], float], dict[str, float]]]
                   ) -> None:
        """The end-of-training corruption evaluation (``evaluate_corruption_set``) into every teacher's record:
        ``record.corruption`` = {set, step, teacher: summary, student: summary}, ``results.teacher_corruption_mean``
        and ``results.student_corruption_mean`` (the leaderboard's ``--stat corruption``), and corruption.csv."""
        student_cells, student = results["student"]
        for t, record in zip(self.training.teachers, self.records, strict=True):
            cells, summary = results[t.key]
            record.corruption = {"set": name, "step": self.training.step, "teacher": summary, "student": student}
            self.corruption_rows[t.key] = [
                {"corruption": c, "severity": s, "teacher_acc": round(acc, 4),
                 "student_acc": round(student_cells[(c, s)], 4)} for (c, s), acc in cells.items()]

    def save(self, window: LogWindow, status: rec.RunStatus, error: str | None = None,
             streams: list[dict[str, Any]] | None = None) -> None:
        """Every teacher's metrics.csv and record, and the checkpoint when ``streams`` (every rank's stream
        states, gathered by the loop) is given. Rank 0 writes; the other ranks return at once."""
        if not self.active:
            return
        if streams is not None:
            save_checkpoint(self.dirs.checkpoint, checkpoint_state(self.training, window, streams))
        wall = round(time.perf_counter() - self.t0, 1)
        for t, d, record in zip(self.training.teachers, self.dirs.dirs, self.records, strict=True):
            record.status, record.error, record.steps_done = status, error, self.training.step
            record.results = rec.summarize_evaluations(t.evaluations.rows) if t.evaluations.rows else None
            if record.corruption is not None and record.results is not None:
                record.results |= {f"{who}_corruption_mean": record.corruption[who]["mean"]
                                   for who in ("teacher", "student")}
            record.finished = rec.now_iso() if status != rec.RunStatus.RUNNING else None
            record.wall_seconds = wall if status == rec.RunStatus.FINISHED else None
            try:
                rec.atomic_write_csv(d / rec.METRICS_FILE, t.evaluations.rows, METRIC_COLUMNS)
                if t.key in self.corruption_rows:
                    rec.atomic_write_csv(d / CORRUPTION_FILE, self.corruption_rows[t.key], CORRUPTION_COLUMNS)
                if d == self.dirs.dirs[0] and self.train_log:
                    rec.atomic_write_csv(d / TRAIN_LOG_FILE, self.train_log, TRAIN_LOG_COLUMNS)
                record.write(d)
            except OSError as exc:   # a full disk, a folder gone read-only: say what is kept and how to go on
                kept = (f"the last checkpoint {self.dirs.checkpoint} is kept" if self.dirs.checkpoint.exists()
                        else "no checkpoint was written yet")
                raise OSError(exc.errno, f"cannot write the run files in {d} ({exc.strerror or exc}); {kept}: free "
                                         "space or fix the folder, then continue with --resume") from None

    def close(self) -> None:
        self.bar.close()
        for writer in self.writers:
            writer.close()


