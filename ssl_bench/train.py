"""THE training loop. It knows no single algorithm: it feeds batches to ``algorithm.loss``, steps the
optimizer, lets the smoother turn the student into the teacher, evaluates, and records.

One step, top to bottom:

    x, y      <- labelled batch, weak view                 (IndexStream over the split, on the device)
    u_1..u_k  <- the algorithm's unlabelled views          (weak / strong augmentation, on the device)
    losses    <- algorithm.loss(student, teacher, batch)
    optimizer step on losses.total, cosine learning rate
    smoother.update(teacher, student)                      (none / tma / se / sts)
    every eval_every steps: accuracy of teacher and student, Figure-3 smoothness, metrics.csv,
    checkpoint, record.json

Under ``torchrun --nproc_per_node N`` every rank runs this loop on batch_size / N images; the ranks meet
only in the ``ddp.*`` calls (see ssl_bench/distributed.py). Only rank 0 evaluates and writes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ssl_bench import results as rec
from ssl_bench.algorithm import Batch, build_algorithm, check_losses, hyperparameters, set_requires_grad
from ssl_bench.augment import normalize, strong_augment, weak_augment
from ssl_bench.checkpoint import (
    CHECKPOINT_NAME,
    check_identity,
    global_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_global_rng_state,
    shapes,
)
from ssl_bench.config import RunConfig, cosine_lr_factor
from ssl_bench.data import ImageDataset, LabelSplit, load_dataset, make_split
from ssl_bench.distributed import SINGLE_PROCESS, DataParallel, from_env
from ssl_bench.evaluate import accuracy, mean_squared_difference, output_probabilities, parameter_vector
from ssl_bench.functional import to_device
from ssl_bench.models import build_model, default_model
from ssl_bench.sampling import IndexStream, rank_seed
from ssl_bench.smoothing import build_smoother

METRIC_COLUMNS = ("step", "lr", "loss", "mask_rate", "teacher_acc", "student_acc",
                  "teacher_param_msd", "teacher_output_msd", "elapsed_s")
# Images of the test set whose teacher outputs are compared between evaluations (Figure 3, right).
FIGURE3_BATCH = 256
AUGMENTERS = {"weak": weak_augment, "strong": strong_augment}


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the run is recorded as failed, never as a number."""


@dataclass
class Run:
    """Everything a training run holds, built once by ``build_run`` (tests use it directly)."""

    config: RunConfig
    dataset: ImageDataset
    split: LabelSplit
    algorithm: Any
    algorithm_module: nn.Module | None
    student: nn.Module
    teacher: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    smoother: Any
    labeled: IndexStream
    unlabeled: IndexStream
    augment_generator: torch.Generator
    device: torch.device
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    train_model: nn.Module | None = None   # the student as the loss sees it (compiled with --compile)
    ddp: DataParallel = SINGLE_PROCESS     # this process's data-parallel rank (set by DataParallel.setup)
    step: int = 0

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 NCHW images -> the model's float input."""
        x = normalize(images, self.dataset.mean, self.dataset.std)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this run."""
        c = self.config
        return {"algorithm": self.algorithm.name, "alg_args": hyperparameters(self.algorithm), "model": c.model,
                "dataset_fingerprint": self.dataset.fingerprint, "split_hash": self.split.hash,
                "smooth": c.smooth, "p": c.p, "m": c.m, "granularity": c.granularity, "buffers": c.buffers,
                "steps": c.steps, "batch_size": c.batch_size, "mu": c.mu, "seed": c.seed, "lr": c.lr,
                "weight_decay": c.weight_decay, "shapes": shapes(self.student.state_dict())}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def _to_nchw(images: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)


def _optimizer(params_decay: list[Tensor], params_no_decay: list[Tensor], c: RunConfig) -> torch.optim.SGD:
    # Weight decay on conv / linear kernels only, as the official FixMatch (its L2 term sums the 'kernel'
    # variables), not on biases and BatchNorm affine parameters.
    groups = [{"params": params_decay, "weight_decay": c.weight_decay},
              {"params": params_no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=True)


def build_run(config: RunConfig) -> Run:
    """Resolve the configuration and build data, split, models, optimizer and smoother, seeded."""
    config.validate()
    algorithm = build_algorithm(config.algorithm, config.alg_args)
    dataset = load_dataset(config.dataset, root=config.data_root, download=config.download)
    c = config.resolved(dataset.family, default_model(dataset.family))
    split = make_split(dataset.y_train, c.labels, dataset.num_classes, c.split_seed)
    device = resolve_device(c.device)

    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    random.seed(c.seed)

    student = build_model(c.model, dataset.num_classes).to(device)
    if c.channels_last:
        student = student.to(memory_format=torch.channels_last)
    # The teacher starts as an exact copy of the student (the official SE code sends its first copy
    # through the random gate, which leaves most teacher tensors at their random initialisation).
    teacher = copy.deepcopy(student)
    set_requires_grad(teacher, False)

    algorithm_module = algorithm.setup(student, dataset.num_classes) if hasattr(algorithm, "setup") else None
    if algorithm_module is not None:
        algorithm_module.to(device)
    trainable = [p for p in student.parameters()]
    if algorithm_module is not None:
        trainable += [p for p in algorithm_module.parameters()]
    optimizer = _optimizer([p for p in trainable if p.dim() > 1], [p for p in trainable if p.dim() <= 1], c)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: cosine_lr_factor(k, c.steps))

    smoother = build_smoother(c.smooth, p=c.p, m=c.m, granularity=c.granularity, buffers=c.buffers,
                              generator=torch.Generator(device).manual_seed(rank_seed(c.seed, "smoother")))
    augment_generator = torch.Generator(device).manual_seed(rank_seed(c.seed, "augment"))
    return Run(config=c, dataset=dataset, split=split, algorithm=algorithm, algorithm_module=algorithm_module,
               student=student, teacher=teacher, optimizer=optimizer, scheduler=scheduler, smoother=smoother,
               labeled=IndexStream(split.labeled, rank_seed(c.seed, "labeled")),
               unlabeled=IndexStream(split.unlabeled, rank_seed(c.seed, "unlabeled")),
               augment_generator=augment_generator, device=device,
               x_train=_to_nchw(dataset.x_train, device), y_train=torch.from_numpy(dataset.y_train).to(device),
               x_test=_to_nchw(dataset.x_test, device), y_test=torch.from_numpy(dataset.y_test).to(device),
               # torch.compile wraps the same parameters, so the smoother and the checkpoints see the plain module.
               train_model=torch.compile(student) if c.compile else student)


def next_batch(run: Run) -> Batch:
    """Draw and augment one step's batch on the device."""
    c = run.config
    batch_size = c.batch_size // run.ddp.world_size   # this rank's share of the global batch
    # Indices are drawn on the CPU (cheap, the same on every device); pinned non-blocking copies keep the step sync-free.
    labeled = to_device(run.labeled.next(batch_size), run.device)
    unlabeled = to_device(run.unlabeled.next(batch_size * c.mu), run.device)
    g = run.augment_generator
    x = run.prepare(weak_augment(run.x_train[labeled], g))
    u_images = run.x_train[unlabeled]
    views = tuple(run.prepare(AUGMENTERS[view](u_images, g)) for view in run.algorithm.unlabeled_views)
    return Batch(x=x, y=run.y_train[labeled], u=views, progress=run.step / c.steps,
                 num_classes=run.dataset.num_classes)


def training_step(run: Run, batch: Batch) -> dict[str, Tensor]:
    """One optimizer step and one smoother update; returns the step's logs as device tensors (no sync)."""
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.config.amp)
    with autocast:
        losses = run.algorithm.loss(run.train_model, run.teacher, batch)
    if run.step == 0:
        check_losses(losses, run.algorithm)
    run.optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    run.ddp.average_gradients_and_buffers(run)   # data parallel: one all-reduce (no-op in a single process)
    run.optimizer.step()
    run.scheduler.step()
    run.smoother.update(run.teacher, run.student)
    run.step += 1
    logs = {"loss": losses.total.detach()}
    for key, value in losses.logs.items():
        # Python numbers (a ramp-up weight) go to the device too (the log window is all-reduced there under nccl),
        # through a pinned non-blocking copy so the step stays free of host-device syncs.
        logs[key] = value.detach() if isinstance(value, Tensor) else to_device(torch.tensor(float(value)), run.device)
    return logs


def checkpoint_state(run: Run, history: list[dict[str, Any]], snapshots: dict[str, Tensor | None],
                     window: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": run.step,
        "identity": run.identity(),
        "config": run.config.to_dict(),
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict(),
        "algorithm_module": run.algorithm_module.state_dict() if run.algorithm_module is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "smoother": run.smoother.state_dict(),
        "labeled_stream": run.labeled.state_dict(),
        "unlabeled_stream": run.unlabeled.state_dict(),
        "augment_generator": run.augment_generator.get_state(),
        "global_rng": global_rng_state(),
        "history": history,
        "snapshots": snapshots,
        "log_window": window,   # the partial sums of the logs since the last evaluation
    }


def restore(run: Run, state: dict[str, Any], path: Path
            ) -> tuple[list[dict[str, Any]], dict[str, Tensor | None], dict[str, Any]]:
    """Load a checkpoint into ``run``; a checkpoint of another run is refused before anything is loaded."""
    check_identity(state["identity"], run.identity(), path)
    run.student.load_state_dict(state["student"])
    run.teacher.load_state_dict(state["teacher"])
    if run.algorithm_module is not None:
        run.algorithm_module.load_state_dict(state["algorithm_module"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.smoother.load_state_dict(state["smoother"])
    run.labeled.load_state_dict(state["labeled_stream"])
    run.unlabeled.load_state_dict(state["unlabeled_stream"])
    run.augment_generator.set_state(state["augment_generator"])
    set_global_rng_state(state["global_rng"])
    run.step = int(state["step"])
    snapshots = {k: (v.to(run.device) if v is not None else None) for k, v in state["snapshots"].items()}
    window = {"sums": {k: v.to(run.device) for k, v in state["log_window"]["sums"].items()},
              "count": state["log_window"]["count"]}
    return list(state["history"]), snapshots, window


def base_record(run: Run, run_dir: Path, started: str) -> dict[str, Any]:
    c, d = run.config, run.dataset
    return {
        "schema": rec.SCHEMA_VERSION, "run_id": run_dir.name, "status": "running", "error": None,
        "algorithm": run.algorithm.name, "alg_args": hyperparameters(run.algorithm),
        # the hyper-parameters changed with --alg-arg: the leaderboard gives them a row of their own
        "alg_overrides": {k: hyperparameters(run.algorithm)[k] for k in c.alg_args},
        "targets_from": run.algorithm.targets_from,
        "smooth": c.smooth, "granularity": c.granularity, "p": c.p, "m": c.m, "buffers": c.buffers,
        "dataset": d.name, "dataset_kind": d.kind, "dataset_family": d.family, "dataset_fingerprint": d.fingerprint,
        "labels": c.labels, "seed": c.seed, "split_seed": c.split_seed, "split_hash": run.split.hash,
        "profile": c.profile, "steps": c.steps, "steps_done": run.step, "model": c.model,
        "batch_size": c.batch_size, "mu": c.mu, "eval_every": c.eval_every,
        "results": None, "versions": rec.versions(), "device": rec.device_description(run.device),
        "commit": rec.git_commit(), "command": rec.command_line(), "started": started, "finished": None,
        "wall_seconds": None,
    }


def matching_run_dir(results_dir: Path, base: str, config: RunConfig) -> Path | None:
    """The latest existing directory of a run with exactly this configuration, if any."""
    ignore = {"device", "results_dir", "data_root", "download"}
    wanted = {k: v for k, v in config.to_dict().items() if k not in ignore}
    for path in reversed(rec.find_runs(results_dir, base)):
        cfg_path = path / "config.json"
        if not cfg_path.exists():
            continue
        saved = rec.read_json(cfg_path).get("config", {})
        if {k: v for k, v in saved.items() if k not in ignore} == wanted:
            return path
    return None


def _open_run_dir(run: Run, base: str, resume: bool) -> tuple[Path, dict[str, Any] | None, bool]:
    """The run directory (rank 0 only): the run to resume, its record and whether it has a checkpoint, or a new one."""
    c = run.config
    run_dir = matching_run_dir(Path(c.results_dir), base, c) if resume else None
    if run_dir is not None:
        # A run killed between writing config.json and its first record has no record yet: start it over there.
        record_path = run_dir / "record.json"
        previous = rec.read_json(record_path) if record_path.exists() else None
        return run_dir, previous, (run_dir / CHECKPOINT_NAME).exists()
    run_dir = rec.create_run_dir(Path(c.results_dir), base)
    rec.atomic_write_json(run_dir / "config.json", {"config": c.to_dict(), "command": rec.command_line()})
    run.split.save(run_dir / "split.json")
    return run_dir, None, False


def train(config: RunConfig, *, resume: bool = False, stop_at: int | None = None,
          progress: bool = True, sync_bn: bool = False) -> tuple[dict[str, Any], Path]:
    """Run (or resume) one experiment; returns its record and its directory.

    ``resume``: continue the latest unfinished run with the same configuration (or return the record
    of a finished one) instead of starting a new directory. ``stop_at``: checkpoint and stop after
    this step (a preemptible job's time limit, or a test of exact resumption). Under torchrun every
    rank calls this and gets the same record; ``sync_bn``: SyncBatchNorm across the ranks (GPUs only).
    """
    config.validate()
    with from_env(resolve_device(config.device), sync_bn=sync_bn) as ddp:
        if ddp.enabled:
            config = config_with(config, device=str(ddp.device))   # each rank on its own GPU under torchrun
        return _train(config, ddp, resume=resume, stop_at=stop_at, progress=progress)


def _train(config: RunConfig, ddp: DataParallel, *, resume: bool, stop_at: int | None,
           progress: bool) -> tuple[dict[str, Any], Path]:
    run = build_run(config)
    ddp.setup(run)   # per-rank batch, SyncBN, this rank's data streams, rank 0's weights on every rank
    c = run.config
    base = rec.run_base_name(c)
    # Rank 0 finds or creates the run directory (only rank 0 writes); every rank learns its name.
    run_dir, previous, has_checkpoint = ddp.from_main(lambda: _open_run_dir(run, base, resume))
    history: list[dict[str, Any]] = []
    snapshots: dict[str, Tensor | None] = {"params": None, "outputs": None}
    window: dict[str, Any] = {"sums": {}, "count": 0}
    if previous is not None and previous["status"] == "finished":
        return previous, run_dir
    if has_checkpoint:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)
        history, snapshots, window = restore(run, state, run_dir / CHECKPOINT_NAME)
        ddp.restore_rank_state(run, state)
    started = previous["started"] if previous is not None else rec.now_iso()

    record = base_record(run, run_dir, started)
    record["data_parallel"] = ddp.record_segments(previous, run.step)
    record["results"] = rec.summarize_evaluations(history) if history else None
    if ddp.is_main:
        rec.atomic_write_json(run_dir / "record.json", record)
    t0 = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    figure3_inputs = run.prepare(run.x_test[:FIGURE3_BATCH])

    def evaluate_and_save(logs: dict[str, float], rank_states: dict[str, Any]) -> None:
        params = parameter_vector(run.teacher)
        outputs = output_probabilities(run.teacher, figure3_inputs)
        row = {"step": run.step, "lr": run.scheduler.get_last_lr()[0], **logs,
               "teacher_acc": accuracy(run.teacher, run.x_test, run.y_test, c.eval_batch_size, run.prepare),
               "student_acc": accuracy(run.student, run.x_test, run.y_test, c.eval_batch_size, run.prepare),
               "teacher_param_msd": mean_squared_difference(snapshots["params"], params),
               "teacher_output_msd": mean_squared_difference(snapshots["outputs"], outputs),
               "elapsed_s": round(time.perf_counter() - t0, 3)}
        snapshots.update(params=params, outputs=outputs)
        history.append(row)
        rec.atomic_write_csv(run_dir / "metrics.csv", history, METRIC_COLUMNS)
        save_checkpoint(run_dir / CHECKPOINT_NAME, {**checkpoint_state(run, history, snapshots, window), **rank_states})
        record.update(steps_done=run.step, results=rec.summarize_evaluations(history))
        rec.atomic_write_json(run_dir / "record.json", record)

    bar = tqdm(total=c.steps, initial=run.step, disable=not (progress and ddp.is_main), desc=base,
               dynamic_ncols=True)
    try:
        run.student.train()
        run.teacher.train()
        while run.step < c.steps:
            logs = training_step(run, next_batch(run))
            sums = window["sums"]
            for key, value in logs.items():
                sums[key] = sums[key] + value.float() if key in sums else value.float()
            window["count"] += 1
            at_eval = run.step % c.eval_every == 0 or run.step == c.steps
            if at_eval or run.step % c.log_every == 0 or run.step == stop_at:
                window["sums"] = ddp.mean_over_ranks(window["sums"])  # every rank: the same numbers, the same verdict
                means = {k: v.item() / window["count"] for k, v in window["sums"].items()}  # the only host sync
                if not all(math.isfinite(v) for v in means.values()):
                    raise DivergedError(f"loss is not finite at step {run.step} ({means}); the run diverged. "
                                        "Lower --lr, or check the algorithm's loss; the last good checkpoint is kept.")
                bar.set_postfix(loss=f"{means['loss']:.3f}", mask=f"{means.get('mask_rate', float('nan')):.2f}",
                                acc=f"{history[-1]['teacher_acc']:.1f}" if history else "-")
                if at_eval:
                    window = {"sums": {}, "count": 0}  # reset before the checkpoint is written
                    ddp.check_in_sync(run)
                    rank_states = ddp.gather_rank_states(run)
                    if ddp.is_main:   # the other ranks wait for rank 0 in the next step's all-reduce
                        evaluate_and_save({k: round(v, 6) for k, v in means.items()}, rank_states)
                bar.update(run.step - bar.n)
            if stop_at is not None and run.step >= stop_at and run.step < c.steps:
                if not at_eval:
                    rank_states = ddp.gather_rank_states(run)
                    if ddp.is_main:
                        save_checkpoint(run_dir / CHECKPOINT_NAME,
                                        {**checkpoint_state(run, history, snapshots, window), **rank_states})
                        record.update(steps_done=run.step)
                        rec.atomic_write_json(run_dir / "record.json", record)
                return ddp.from_main(lambda: record), run_dir
    except BaseException as exc:
        if ddp.is_main:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", steps_done=run.step,
                          finished=rec.now_iso())
            rec.atomic_write_json(run_dir / "record.json", record)
        raise
    finally:
        bar.close()
    record.update(status="finished", finished=rec.now_iso(), steps_done=run.step,
                  wall_seconds=round(time.perf_counter() - t0, 1), results=rec.summarize_evaluations(history))
    if ddp.is_main:
        rec.atomic_write_json(run_dir / "record.json", record)
    return ddp.from_main(lambda: record), run_dir   # every rank returns rank 0's record


def config_with(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of ``config`` with some fields changed (sweeps, tests)."""
    return dataclasses.replace(config, **changes)
