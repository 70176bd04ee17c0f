"""THE training loop. It knows no single algorithm: it feeds batches to ``algorithm.loss``, steps the
optimizer, lets each smoother turn the student into its teacher, evaluates, and records.

One step, top to bottom:

    x, y      <- labelled batch, weak view                 (IndexStream over the split, on the device)
    u_1..u_k  <- the algorithm's unlabelled views          (weak / strong augmentation, on the device)
    losses    <- algorithm.loss(student, teacher, batch)
    optimizer step on losses.total, cosine learning rate
    smoother.update(teacher, student) for every teacher    (none / tma / se / sts)
    every eval_every steps: accuracy of every teacher and of the student, Figure-3 smoothness,
    metrics.csv, checkpoint, record.json

**One student, many teachers.** A training may serve several smoothing variants (``--smooth none,tma,se,sts``,
comma lists of ``--p``, ``--m``, ``--granularity``, ``--buffers``). When an algorithm's targets come from the
student (FixMatch, MixMatch, ...), the student's trajectory does not depend on the teacher, so each variant's
teacher is built exactly as a run with only that variant builds it (its own smoother, its own generator seeded
the same way) and its numbers are bit-identical to that run's. Each variant has an ordinary run directory and
record; the first variant's directory holds the one checkpoint of the training. An algorithm whose targets come
from the teacher (Mean Teacher) trains a different student per strategy and refuses a list.

**Files.** The pieces around the loop: ``state`` (what a training holds, its checkpoint), ``build`` (settings
-> a training), ``rundirs`` (finding and creating run directories, resume), ``writer`` (records, metrics.csv,
TensorBoard, the progress bar). Calls every rank must make (collectives) are marked where the loop makes them.

**Data parallel** (``torchrun --nproc_per_node N``): every rank runs this loop on ``batch_size / N`` labelled
images from its own streams (seeded per rank; rank 0's are the single-process streams), gradients and float
buffers are averaged with one all-reduce after ``backward`` (``ssl_bench.run.ranks``), the smoothers' generators
are seeded from the run seed so every rank draws the same masks, and only rank 0 evaluates and writes. A resume
with the same N continues every rank's streams exactly; with another N the new ranks' streams are re-seeded from
(seed, stream, rank, step): deterministic, but not the uninterrupted run (the record lists every stretch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_bench import records as rec
from ssl_bench.algorithm import Batch, check_losses, labeled_view_of
from ssl_bench.augment import strong_augment, weak_augment
from ssl_bench.config import RunConfig
from ssl_bench.errors import UserError
from ssl_bench.run.build import build_training, check_ranks_agree, plan_teachers, resolve_device
from ssl_bench.run.checkpoint import load_checkpoint
from ssl_bench.run.cuda_graphs import GraphedSteps
from ssl_bench.run.evaluate import (
    CorruptionPlan,
    accuracy,
    accuracy_and_calibration,
    evaluate_corruptions,
    mean_squared_difference,
    output_probabilities,
    parameter_vector,
    plan_corruptions,
    recompute_batch_norm,
)
from ssl_bench.run.ranks import join
from ssl_bench.run.rundirs import RunDirs, locked, open_run_dirs
from ssl_bench.run.sampling import IndexStream, to_device
from ssl_bench.run.state import LogWindow, RunInterrupted, Training, restore
from ssl_bench.run.writer import Reporter, require_tensorboard

# Images of the test set whose teacher outputs are compared between evaluations (Figure 3, right).
FIGURE3_BATCH = 256


# -- one step ----------------------------------------------------------------------------------------------------

def next_batch(training: Training, draw: Callable[[IndexStream, int], Tensor] | None = None) -> Batch:
    """Draw and augment one step's batch on the device.

    ``draw(stream, n)``: how ``n`` image indices of ``stream`` reach the device (default: drawn, then copied);
    ``--cuda-graphs`` passes its graph's static input buffers (ssl_bench/run/cuda_graphs.py).
    """
    c, s, flip = training.config, training.streams, training.dataset.hflip
    batch_size = training.ranks.per_rank(c.batch_size)
    # Indices are drawn on the CPU (cheap, the same on every device); pinned non-blocking copies keep the step
    # free of host-device syncs.
    draw = draw or (lambda stream, n: to_device(stream.next(n), training.device))
    labeled = draw(s.labeled, batch_size)
    x_images = training.x_train[labeled]
    x = training.prepare(strong_augment(x_images, s.augment, flip=flip, policy=c.strong_augment)
                         if labeled_view_of(training.algorithm) == "strong" else
                         weak_augment(x_images, s.augment, flip=flip))
    views: tuple[Tensor, ...] = ()
    unlabeled = labeled[:0]
    if training.algorithm.unlabeled_views:   # the supervised baseline draws no unlabelled images
        pool = training.x_train if training.x_unlabeled_pool is None else training.x_unlabeled_pool
        unlabeled = draw(s.unlabeled, batch_size * c.mu)
        u_images = pool[unlabeled]
        views = tuple(training.prepare(weak_augment(u_images, s.augment, flip=flip) if view == "weak" else
                                       strong_augment(u_images, s.augment, flip=flip, policy=c.strong_augment))
                      for view in training.algorithm.unlabeled_views)
    labeled_position, unlabeled_position = training.positions
    return Batch(x=x, y=training.y_train[labeled], u=views, progress=training.step / c.steps,
                 num_classes=training.dataset.num_classes, generator=s.algorithm,
                 x_index=labeled_position[labeled], u_index=unlabeled_position[unlabeled])


def training_step(training: Training, batch: Batch) -> dict[str, Tensor]:
    """One optimizer step and every teacher's smoother update; returns the step's logs as device tensors."""
    with torch.autocast(training.device.type, dtype=torch.bfloat16, enabled=training.config.amp):
        losses = training.algorithm.loss(training.train_model, training.teacher, batch)
    if training.step == 0:
        check_losses(losses, training.algorithm)
    training.optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    if training.ranks.enabled:   # data parallel (a collective): gradients and float buffers averaged over the ranks
        training.ranks.average_gradients_([m for m in (training.student, training.algorithm_module) if m is not None])
    training.optimizer.step()
    training.scheduler.step()
    for teacher in training.teachers:
        # step: this update's index (0 after the first optimizer step); schedules and swa read the progress
        teacher.smoother.update(teacher.model, training.student, step=training.step, total_steps=training.config.steps)
    training.step += 1
    # each weighted loss term too (supervised / unsupervised ...): device tensors, read only at log intervals
    logs = {"loss": losses.total.detach(), **{f"loss_{k}": v.detach() for k, v in losses.terms.items()}}
    for key, value in losses.logs.items():
        # Python numbers (a ramp-up weight) go to the device too, through a pinned non-blocking copy.
        logs[key] = (value.detach() if isinstance(value, Tensor)
                     else to_device(torch.tensor(float(value)), training.device))
    return logs


def recompute_teacher_statistics(training: Training) -> None:
    """SWA's BatchNorm recipe for every teacher with ``buffers=recompute`` (``recompute_batch_norm``): one pass
    over every training image (and a data set's extra unlabelled ones) in batches of a training step's labelled +
    unlabelled images, an identifying size. Called on every rank before an evaluation, so data-parallel ranks
    keep equal teachers (each rank holds every image)."""
    c = training.config
    pool = training.x_train if training.x_unlabeled_pool is None else training.x_unlabeled_pool
    for t in training.teachers:
        if t.config.smoothing().as_dict().get("buffers") == "recompute":
            recompute_batch_norm(t.model, pool, c.batch_size * (1 + c.mu), training.prepare)


def evaluate(training: Training) -> list[dict[str, Any]]:
    """Top-1 accuracy of every teacher and of the student, each teacher's calibration (ECE, NLL; free: the same
    logits as its top-1) and its Figure-3 quantities.

    Returns one row per teacher (the student's accuracy is shared) and advances the Figure-3 snapshots.
    """
    c = training.config
    figure3_inputs = training.prepare(training.x_test[:FIGURE3_BATCH])
    student_acc = accuracy(training.student, training.x_test, training.y_test, c.eval_batch_size, training.prepare)
    rows = []
    for t in training.teachers:
        ev = t.evaluations
        params, outputs = parameter_vector(t.model), output_probabilities(t.model, figure3_inputs)
        clean = accuracy_and_calibration(t.model, training.x_test, training.y_test, c.eval_batch_size,
                                         training.prepare)
        rows.append({"teacher_acc": clean["top1"], "student_acc": student_acc,
                     "teacher_ece": clean["ece"], "teacher_nll": clean["nll"],
                     "teacher_param_msd": mean_squared_difference(ev.params, params),
                     "teacher_output_msd": mean_squared_difference(ev.outputs, outputs)})
        ev.params, ev.outputs = params, outputs
    return rows


def evaluate_corruption_set(training: Training, plan: CorruptionPlan
                            ) -> dict[str, tuple[dict[tuple[str, int], float], dict[str, float]]]:
    """Every teacher's and the student's accuracy on each corrupted test cell, and their summaries, by key
    (``"student"`` for the student). Once, after the last step (``CorruptionPlan``)."""
    models = {"student": training.student, **{t.key: t.model for t in training.teachers}}
    return evaluate_corruptions(plan, models, training.x_test, training.y_test, training.config.eval_batch_size,
                                training.prepare)

# -- the loop ---------------------------------------------------------------------------------------------------

def train(config: RunConfig, *, resume: bool = False, stop_at: int | None = None, progress: bool = True,
          sync_bn: bool = False, command: str | None = None, quiet: bool = False) -> tuple[dict[str, Any], Path]:
    """Run (or resume) one experiment; returns its record and its directory (see ``train_teachers``)."""
    return train_teachers([config], resume=resume, stop_at=stop_at, progress=progress, sync_bn=sync_bn,
                          command=command, quiet=quiet)[0]


def train_teachers(configs: Sequence[RunConfig], *, resume: bool = False, stop_at: int | None = None,
                   progress: bool = True, sync_bn: bool = False, command: str | Sequence[str] | None = None,
                   quiet: bool = False) -> list[tuple[dict[str, Any], Path]]:
    """Train one student for every smoothing variant in ``configs``; returns each variant's record and directory.

    ``resume``: continue the latest unfinished training with the same identifying settings (or return the
    records of a finished one) instead of starting new directories. ``stop_at``: checkpoint and stop after this
    step (a preemptible job's time limit). ``command``: the command line saved in the records (default: this
    process's), or one per config. ``quiet``: no notice when ``resume`` finds nothing to resume (sweeps plan
    that).
    Under torchrun every rank calls this and gets rank 0's records.
    """
    if stop_at is not None and stop_at <= 0:
        raise UserError(f"--stop-at {stop_at} must be a positive step (the run checkpoints and stops after it)")
    command = command if command is not None else rec.command_line()
    first = configs[0]
    first.validate()
    if any(c.tensorboard for c in configs):   # pre-flight: every check that can fail comes before any directory
        require_tensorboard()
    with join(resolve_device(first.device)) as ranks:
        if ranks.enabled:   # each rank on its own device under torchrun
            configs = [dataclasses.replace(c, device=str(ranks.device)) for c in configs]
        training = build_training(configs, ranks, sync_bn=sync_bn)
        # checked (and the official files downloaded, if asked for) before any directory exists
        corruptions = ranks.from_main(lambda: plan_corruptions(first.corruptions, training.dataset.name,
                                                               training.y_test, first.data_root, first.download))
        if not isinstance(command, str):   # one command per config: keyed by its teacher, whatever order follows
            command = {plan_teachers([c])[0].teacher_key(): cmd for c, cmd in zip(configs, command, strict=True)}
        dirs = ranks.from_main(lambda: open_run_dirs(training, resume, command, quiet))
        training.teachers.sort(key=lambda t: dirs.keys.index(t.key))   # the directories' order, on every rank
        training.config = training.teachers[0].config
        if all(p is not None and p.status == rec.RunStatus.FINISHED for p in dirs.previous):
            return [(p.to_dict(), d) for p, d in zip(dirs.previous, dirs.dirs, strict=True)]
        with locked(dirs.dirs if ranks.is_main else []):
            return _train(training, dirs, command, stop_at=stop_at, progress=progress, corruptions=corruptions)


def _train(training: Training, dirs: RunDirs, command: str | dict[str, str], *, stop_at: int | None,
           progress: bool, corruptions: CorruptionPlan | None = None) -> list[tuple[dict[str, Any], Path]]:
    """The loop. Every rank runs it; ``# collective`` marks the calls every rank makes at the same step."""
    window = LogWindow()
    if dirs.has_checkpoint:
        window = restore(training, load_checkpoint(dirs.checkpoint), dirs.checkpoint)
    c, ranks = training.config, training.ranks
    last = min(c.steps, stop_at or c.steps)
    report = Reporter(training, dirs, command, progress)
    report.continue_window(window)
    report.save(window, rec.RunStatus.RUNNING)
    at_eval = True   # a resumed training already at its last step has nothing left to checkpoint
    try:
        training.student.train()
        for t in training.teachers:
            t.model.train()
        # --cuda-graphs: after warm-up, each step replays one captured CUDA graph (ssl_bench/run/cuda_graphs.py)
        step = GraphedSteps(training) if c.cuda_graphs else lambda: training_step(training, next_batch(training))
        while training.step < last:
            window.add(step())
            at_eval = training.step % c.eval_every == 0 or training.step == c.steps
            if at_eval or training.step % c.log_every == 0 or training.step == last:
                means = window.means_over_ranks(ranks, training.step)                        # collective
                report.progress(means, window.count)
            if at_eval:
                window = LogWindow()   # reset before the checkpoint is written
                report.reset_window()
                recompute_teacher_statistics(training)   # every rank (buffers=recompute teachers only)
                check_ranks_agree(training)                                                   # collective
                if ranks.is_main:   # the other ranks wait for rank 0 in the next step's all-reduce
                    report.evaluation(means, evaluate(training))
                report.save(window, rec.RunStatus.RUNNING, streams=ranks.gather(training.streams.state_dict()))
        done = training.step == c.steps
        if done and corruptions is not None:   # once, at the end (CorruptionPlan says why)
            # on every rank (the teachers are equal): no rank waits in a collective while rank 0 alone spends
            # minutes on CIFAR-10-C, which could outlast the process group's timeout; rank 0 records it
            report.corruption(corruptions.name, evaluate_corruption_set(training, corruptions))
        if not at_eval:   # stopped by --stop-at between evaluations: checkpoint the partial window too
            report.save(window, rec.RunStatus.RUNNING, streams=ranks.gather(training.streams.state_dict()))
        report.save(window, rec.RunStatus.FINISHED if done else rec.RunStatus.INTERRUPTED,
                    error=None if done else f"stopped at step {training.step} by --stop-at; continue with --resume")
    except KeyboardInterrupt:
        _save_quietly(report, window, rec.RunStatus.INTERRUPTED,
                      "interrupted (Ctrl-C); continue from the last checkpoint with --resume"
                      if dirs.checkpoint.exists() else
                      "interrupted (Ctrl-C) before its first checkpoint; --resume starts it again from step 0")
        raise RunInterrupted(dirs.dirs[0]) from None
    except SystemExit as exc:
        if not _exited_in_algorithm(exc, training):   # a signal handler's exit (submitit's requeue on USR2)
            _save_quietly(report, window, rec.RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        # sys.exit in the algorithm's own code ends the training early: a failure, never a success
        error = f"the algorithm's code called sys.exit({exc.code!r}) at step {training.step}"
        _save_quietly(report, window, rec.RunStatus.FAILED, error)
        raise RuntimeError(f"{error}; a loss must return its losses (raise an exception to fail a run)") from exc
    except BaseException as exc:
        _save_quietly(report, window, rec.RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        report.close()
    return ranks.from_main(lambda: [(r.to_dict(), d) for r, d in zip(report.records, dirs.dirs, strict=True)])


def _exited_in_algorithm(exc: SystemExit, training: Training) -> bool:
    """Whether ``sys.exit`` was called from the file that defines the training's algorithm (the innermost
    frame of the traceback: ``sys.exit`` itself has no Python frame)."""
    import inspect

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    try:
        source = inspect.getsourcefile(type(training.algorithm))
    except TypeError:
        return False
    return tb is not None and source is not None and Path(tb.tb_frame.f_code.co_filename).resolve() == Path(
        source).resolve()


def _save_quietly(report: Reporter, window: LogWindow, status: rec.RunStatus, error: str) -> None:
    """Record how a training ended, without hiding why it ended (a full disk may refuse this write too)."""
    try:
        report.save(window, status, error=error)
    except OSError:
        pass

