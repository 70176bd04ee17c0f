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

**Data parallel** (``torchrun --nproc_per_node N``): every rank runs this loop on ``batch_size / N`` labelled
images from its own streams (seeded per rank; rank 0's are the single-process streams), gradients and float
buffers are averaged with one all-reduce after ``backward`` (``ssl_bench.ranks``), the smoothers' generators
are seeded from the run seed so every rank draws the same masks, and only rank 0 evaluates and writes. A resume
with the same N continues every rank's streams exactly; with another N the new ranks' streams are re-seeded from
(seed, stream, rank, step): deterministic, but not the uninterrupted run (the record lists every stretch).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ssl_bench import results as rec
from ssl_bench.algorithm import (
    Algorithm,
    Batch,
    build_algorithm,
    check_losses,
    hyperparameters,
    loop_settings,
    set_requires_grad,
    setup_algorithm,
    source_sha256,
)
from ssl_bench.augment import normalize, strong_augment, weak_augment
from ssl_bench.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_identity,
    load_checkpoint,
    save_checkpoint,
    shapes,
)
from ssl_bench.config import TEACHER_AXES, RunConfig, cosine_lr_factor
from ssl_bench.data import ImageDataset, LabelSplit, load_dataset, make_split
from ssl_bench.data.npz import family_of
from ssl_bench.evaluate import accuracy, mean_squared_difference, output_probabilities, parameter_vector
from ssl_bench.lock import RunLock
from ssl_bench.models import build_model, default_model
from ssl_bench.ranks import SINGLE_PROCESS, Ranks, join
from ssl_bench.sampling import IndexStream, rank_seed, to_device
from ssl_bench.smoothing import STRATEGY_PARAMETERS, Smoother, build_smoother

METRIC_COLUMNS = ("step", "lr", "loss", "mask_rate", "teacher_acc", "student_acc",
                  "teacher_param_msd", "teacher_output_msd", "elapsed_s")
# Images of the test set whose teacher outputs are compared between evaluations (Figure 3, right).
FIGURE3_BATCH = 256


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the run is recorded as failed, never as a number."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training: the run is recorded as interrupted; ``run_dir`` resumes it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"interrupted: {run_dir} is recorded as interrupted; continue it with --resume")
        self.run_dir = run_dir


# -- the state of a training ----------------------------------------------------------------------------------------

@dataclass
class Streams:
    """This rank's random streams: labelled and unlabelled indices, augmentation draws, the algorithm's draws."""

    labeled: IndexStream
    unlabeled: IndexStream
    augment: torch.Generator
    algorithm: torch.Generator

    @classmethod
    def seeded(cls, split: LabelSplit, seed: int, device: torch.device, rank: int = 0,
               step: int | None = None) -> Streams:
        """Fresh streams for ``rank`` (``step``: re-seeded for a resume with another world size)."""
        def s(stream: str) -> int:
            base = rank_seed(seed, stream, rank)
            return base if step is None else int(np.random.SeedSequence([base, step]).generate_state(1)[0])
        return cls(IndexStream(split.labeled, s("labeled")), IndexStream(split.unlabeled, s("unlabeled")),
                   torch.Generator(device).manual_seed(s("augment")),
                   torch.Generator(device).manual_seed(s("algorithm")))

    def state_dict(self) -> dict[str, Any]:
        return {"labeled": self.labeled.state_dict(), "unlabeled": self.unlabeled.state_dict(),
                "augment": self.augment.get_state(), "algorithm": self.algorithm.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labeled.load_state_dict(state["labeled"])
        self.unlabeled.load_state_dict(state["unlabeled"])
        self.augment.set_state(state["augment"])
        self.algorithm.set_state(state["algorithm"])


@dataclass
class Evaluations:
    """One teacher's evaluation rows and the Figure-3 snapshots of its previous evaluation."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    params: Tensor | None = None
    outputs: Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "params": self.params, "outputs": self.outputs}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.rows = list(state["rows"])
        self.params = state["params"].to(device) if state["params"] is not None else None
        self.outputs = state["outputs"].to(device) if state["outputs"] is not None else None


@dataclass
class Teacher:
    """One smoothed teacher of a training: its settings (a resolved single-variant config), model and smoother."""

    config: RunConfig
    model: nn.Module
    smoother: Smoother
    evaluations: Evaluations = field(default_factory=Evaluations)

    @property
    def key(self) -> str:
        return self.config.teacher_key()


class LogWindow:
    """Running sums of the step logs (device tensors) since the last evaluation; read at log intervals only."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, logs: dict[str, Tensor]) -> None:
        for key, value in logs.items():
            self.sums[key] = self.sums[key] + value.float() if key in self.sums else value.float()
        self.count += 1

    def means(self, ranks: Ranks, step: int) -> dict[str, float]:
        """The window's means over its steps and the ranks (the loop's only host sync); diverged -> error."""
        keys = sorted(self.sums)
        if keys:
            stacked = torch.stack([self.sums[k] for k in keys])
            ranks.all_reduce_mean_([stacked])   # every rank: the same numbers, the same verdict
            self.sums = dict(zip(keys, stacked.unbind(), strict=True))
        means = {k: round(v.item() / max(self.count, 1), 6) for k, v in self.sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise DivergedError(f"the loss is not finite at step {step} ({means}): the run diverged. Lower --lr or "
                                "check the algorithm's loss; the record keeps the evaluations made so far.")
        return means

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = int(state["count"])


@dataclass
class Run:
    """Everything a training holds, built once by ``build_run`` (tests and benchmarks use it directly)."""

    config: RunConfig                # the training's settings (the first teacher's variant)
    dataset: ImageDataset
    split: LabelSplit
    algorithm: Algorithm             # a registered algorithm (ssl_bench.algorithm)
    algorithm_module: nn.Module | None
    student: nn.Module
    teachers: list[Teacher]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    streams: Streams
    ranks: Ranks
    device: torch.device
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    train_model: nn.Module           # the student as the loss sees it (compiled with --compile)
    step: int = 0
    # Training-set index -> position in the split's labelled / unlabelled set (-1: not in it), for Batch.x_index
    # and Batch.u_index.
    positions: tuple[Tensor, Tensor] | None = None

    @property
    def teacher(self) -> nn.Module:
        """The teacher passed to ``algorithm.loss`` (the only one when the targets come from the teacher)."""
        return self.teachers[0].model

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 NCHW images -> the model's float input."""
        x = normalize(images, self.dataset.mean, self.dataset.std)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this training."""
        return {**self.config.training_identity(), "alg_args": hyperparameters(self.algorithm),
                "dataset_fingerprint": self.dataset.fingerprint, "split_hash": self.split.hash,
                "teachers": [t.key for t in self.teachers], "shapes": shapes(self.student.state_dict())}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def build_optimizer(params_decay: list[Tensor], params_no_decay: list[Tensor], lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on conv / linear kernels only, as google-research/fixmatch
    (its L2 term sums the variables named 'kernel'), not on biases and BatchNorm affine parameters."""
    groups = [{"params": params_decay, "weight_decay": weight_decay},
              {"params": params_no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def teacher_variants(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """Check that ``configs`` can share one training and drop duplicates (keeping the order).

    They must agree on every setting but the smoothing axes. A setting a strategy does not read is set to its
    default first (``tma`` with two values of ``p`` is one teacher, not two).
    """
    defaults = RunConfig()
    unique: list[RunConfig] = []
    for c in configs:
        c.validate()
        ignored = {k: getattr(defaults, k) for k in TEACHER_AXES
                   if k != "smooth" and k not in STRATEGY_PARAMETERS[c.smooth]}
        c = dataclasses.replace(c, **ignored)
        if c not in unique:
            unique.append(c)
    first = unique[0].training_identity()
    for c in unique[1:]:
        diff = sorted(k for k, v in c.training_identity().items() if first.get(k) != v)
        if diff:
            raise ValueError(f"teachers of one training must share every setting but {list(TEACHER_AXES)}; "
                             f"these differ: {diff}. Run them as separate trainings (or use `sweep`).")
    return unique


def resolve_without_data(configs: Sequence[RunConfig]) -> list[RunConfig]:
    """The settings as ``build_run`` resolves them (profile, dataset family and algorithm reference defaults),
    without loading any data: the family of a built-in or npz data set follows from its name."""
    return _resolve(configs)[1]


def _resolve(configs: Sequence[RunConfig]) -> tuple[Algorithm, list[RunConfig]]:
    """The built algorithm and the resolved, de-duplicated teacher configurations."""
    c = configs[0]
    family = family_of(Path(c.dataset).stem)
    algorithm = build_algorithm(c.algorithm, c.alg_args, family)
    if len(configs) > 1 and algorithm.targets_from == "teacher":
        raise ValueError(f"--alg {c.algorithm} takes its targets from the teacher, so each smoothing variant "
                         "trains a different student and cannot share one training: run one --smooth/--p/--m at a "
                         "time (`ssl-bench sweep` plans separate trainings for it)")
    settings = loop_settings(algorithm, family)
    resolved = [x.resolved(family, default_model(family), settings) for x in configs]
    # the same teacher twice (e.g. --m left to the profile and given as the profile's value) is one teacher
    unique: dict[str, RunConfig] = {}
    for x in resolved:
        unique.setdefault(x.teacher_key(), x)
    return algorithm, list(unique.values())


def build_run(configs: RunConfig | Sequence[RunConfig], ranks: Ranks = SINGLE_PROCESS,
              sync_bn: bool = False) -> Run:
    """Resolve the settings and build data, split, student, teachers, optimizer and streams, seeded.

    ``configs``: one run, or several smoothing variants of one training (see the module docstring).
    """
    variants = teacher_variants([configs] if isinstance(configs, RunConfig) else list(configs))
    # The algorithm first (cheap checks of its name and hyper-parameters), then the data.
    algorithm, variants = _resolve(variants)
    c = variants[0]
    dataset = load_dataset(c.dataset, root=c.data_root, download=c.download)
    split = make_split(dataset.y_train, c.labels, dataset.num_classes, c.split_seed)
    device = ranks.device or resolve_device(c.device)
    ranks.per_rank(c.batch_size)

    # Model initialisation is the only draw from torch's global generator; seeded here, then never used again.
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        torch.manual_seed(c.seed)
        student = build_model(c.model, dataset.num_classes)
        algorithm_module = setup_algorithm(algorithm, student, dataset.num_classes,
                                           num_labeled=len(split.labeled), num_unlabeled=len(split.unlabeled))
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(f"--sync-bn: torch's SyncBatchNorm runs on GPUs only and this run is on {device}; drop "
                             "--sync-bn (the ranks' running statistics are then averaged after every step)")
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    student = student.to(device)
    if c.channels_last:
        student = student.to(memory_format=torch.channels_last)
    if algorithm_module is not None:
        algorithm_module.to(device)

    teachers = []
    for v in variants:
        # Each teacher starts as an exact copy of the student (the official SE code sends its first copy
        # through the random gate, which leaves most teacher tensors at their random initialisation).
        model = copy.deepcopy(student)
        set_requires_grad(model, False)
        smoother = build_smoother(v.smooth, p=v.p, m=v.m, granularity=v.granularity, buffers=v.buffers,
                                  generator=torch.Generator(device).manual_seed(rank_seed(v.seed, "smoother")))
        teachers.append(Teacher(v, model, smoother))

    trainable = list(student.parameters()) + (list(algorithm_module.parameters()) if algorithm_module else [])
    optimizer = build_optimizer([p for p in trainable if p.dim() > 1], [p for p in trainable if p.dim() <= 1],
                                c.lr, c.momentum, c.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: cosine_lr_factor(k, c.steps))

    def to_nchw(images: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)

    run = Run(config=c, dataset=dataset, split=split, algorithm=algorithm, algorithm_module=algorithm_module,
              student=student, teachers=teachers, optimizer=optimizer, scheduler=scheduler,
              streams=Streams.seeded(split, c.seed, device, ranks.rank), ranks=ranks, device=device,
              x_train=to_nchw(dataset.x_train), y_train=torch.from_numpy(dataset.y_train).to(device),
              x_test=to_nchw(dataset.x_test), y_test=torch.from_numpy(dataset.y_test).to(device),
              # torch.compile wraps the same parameters: smoothers and checkpoints see the plain module.
              train_model=torch.compile(student) if c.compile else student,
              positions=(_positions(split.labeled, len(dataset.y_train), device),
                         _positions(split.unlabeled, len(dataset.y_train), device)))
    ranks.broadcast_(_states(run))   # every rank starts from rank 0's weights
    return run


def _positions(indices: np.ndarray, num_train: int, device: torch.device) -> Tensor:
    position = torch.full((num_train,), -1, dtype=torch.long)
    position[torch.as_tensor(np.asarray(indices), dtype=torch.long)] = torch.arange(len(indices))
    return position.to(device)


def check_ranks_agree(run: Run) -> None:
    """Fail loudly (on every rank) unless every rank holds the same student, teachers and algorithm module."""
    named = {f"student.{k}": v for k, v in run.student.state_dict().items()}
    for t in run.teachers:
        named.update({f"teacher[{t.key}].{k}": v for k, v in t.model.state_dict().items()})
    if run.algorithm_module is not None:
        named.update({f"algorithm_module.{k}": v for k, v in run.algorithm_module.state_dict().items()})
    found = run.ranks.first_difference(named)
    if found is not None:
        raise RuntimeError(f"data-parallel ranks diverged by step {run.step}: rank {found[0]} differs from rank 0, "
                           f"first in {found[1]}. Does the algorithm give some parameters a gradient on some ranks "
                           "only (data-dependent branches)? Every rank must produce gradients for the same parameters.")


def _states(run: Run) -> list[Tensor]:
    modules = [run.student, *(t.model for t in run.teachers), run.algorithm_module]
    return [t for m in modules if m is not None for t in m.state_dict().values()]


# -- one step ----------------------------------------------------------------------------------------------------

def next_batch(run: Run) -> Batch:
    """Draw and augment one step's batch on the device."""
    c, s, flip = run.config, run.streams, run.dataset.hflip
    batch_size = run.ranks.per_rank(c.batch_size)
    # Indices are drawn on the CPU (cheap, the same on every device); pinned non-blocking copies keep the step
    # free of host-device syncs.
    labeled = to_device(s.labeled.next(batch_size), run.device)
    x = run.prepare(weak_augment(run.x_train[labeled], s.augment, flip=flip))
    views: tuple[Tensor, ...] = ()
    unlabeled = labeled[:0]
    if run.algorithm.unlabeled_views:   # the supervised baseline draws no unlabelled images
        unlabeled = to_device(s.unlabeled.next(batch_size * c.mu), run.device)
        u_images = run.x_train[unlabeled]
        views = tuple(run.prepare(weak_augment(u_images, s.augment, flip=flip) if view == "weak" else
                                  strong_augment(u_images, s.augment, flip=flip, policy=c.strong_augment))
                      for view in run.algorithm.unlabeled_views)
    labeled_position, unlabeled_position = run.positions
    return Batch(x=x, y=run.y_train[labeled], u=views, progress=run.step / c.steps,
                 num_classes=run.dataset.num_classes, generator=s.algorithm,
                 x_index=labeled_position[labeled], u_index=unlabeled_position[unlabeled])


def training_step(run: Run, batch: Batch) -> dict[str, Tensor]:
    """One optimizer step and every teacher's smoother update; returns the step's logs as device tensors."""
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.config.amp):
        losses = run.algorithm.loss(run.train_model, run.teacher, batch)
    if run.step == 0:
        check_losses(losses, run.algorithm)
    run.optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    if run.ranks.enabled:   # data parallel: every gradient and float buffer becomes its mean over the ranks
        modules = [m for m in (run.student, run.algorithm_module, *(t.model for t in run.teachers)) if m is not None]
        params = list({id(p): p for m in modules for p in m.parameters() if p.requires_grad}.values())
        unused = [p for p in params if p.grad is None]
        for p in unused:    # a parameter without a gradient here contributes zeros to the mean ...
            p.grad = torch.zeros_like(p)
        run.ranks.all_reduce_mean_([p.grad for p in params] + [b for m in modules for b in m.buffers()
                                                                 if b.is_floating_point()])
        for p in unused:    # ... and, unused on every rank, keeps grad=None (SGD skips it, as in one process)
            if not p.grad.any():
                p.grad = None
    run.optimizer.step()
    run.scheduler.step()
    for teacher in run.teachers:
        teacher.smoother.update(teacher.model, run.student)
    run.step += 1
    logs = {"loss": losses.total.detach()}
    for key, value in losses.logs.items():
        # Python numbers (a ramp-up weight) go to the device too, through a pinned non-blocking copy.
        logs[key] = value.detach() if isinstance(value, Tensor) else to_device(torch.tensor(float(value)), run.device)
    return logs


def evaluate(run: Run) -> list[dict[str, Any]]:
    """Top-1 accuracy of every teacher and of the student, and each teacher's Figure-3 quantities.

    Returns one row per teacher (the student's accuracy is shared) and advances the Figure-3 snapshots.
    """
    c = run.config
    figure3_inputs = run.prepare(run.x_test[:FIGURE3_BATCH])
    student_acc = accuracy(run.student, run.x_test, run.y_test, c.eval_batch_size, run.prepare)
    rows = []
    for t in run.teachers:
        ev = t.evaluations
        params, outputs = parameter_vector(t.model), output_probabilities(t.model, figure3_inputs)
        rows.append({"teacher_acc": accuracy(t.model, run.x_test, run.y_test, c.eval_batch_size, run.prepare),
                     "student_acc": student_acc,
                     "teacher_param_msd": mean_squared_difference(ev.params, params),
                     "teacher_output_msd": mean_squared_difference(ev.outputs, outputs)})
        ev.params, ev.outputs = params, outputs
    return rows


# -- checkpoints ------------------------------------------------------------------------------------------------

def checkpoint_state(run: Run, window: LogWindow) -> dict[str, Any]:
    """Everything that determines the rest of the training, as tensors and plain types (weights_only loads)."""
    return {
        "step": run.step,
        "identity": run.identity(),
        "config": run.config.to_dict(),
        "student": run.student.state_dict(),
        "algorithm_module": run.algorithm_module.state_dict() if run.algorithm_module is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "teachers": {t.key: {"model": t.model.state_dict(), "smoother": t.smoother.state_dict(),
                             "evaluations": t.evaluations.state_dict()} for t in run.teachers},
        "streams": run.ranks.gather(run.streams.state_dict()),   # every rank's, in rank order (a collective)
        "log_window": window.state_dict(),   # the partial sums of the logs since the last evaluation
    }


def restore(run: Run, state: dict[str, Any], path: Path) -> LogWindow:
    """Load a checkpoint into ``run``; a checkpoint of another training is refused before anything is loaded.

    With the world size it was saved with, every rank continues its own streams exactly; with another one,
    the ranks' streams are re-seeded from (seed, stream, rank, step).
    """
    check_identity(state["identity"], run.identity(), path)
    try:
        return _load_state(run, state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} has another layout than this ssl-bench writes ({type(exc).__name__}: "
                              f"{exc}); delete it to restart the run from step 0 (--resume keeps its directory), "
                              "or resume with the ssl-bench version that wrote it") from None


def _load_state(run: Run, state: dict[str, Any]) -> LogWindow:
    run.student.load_state_dict(state["student"])
    if run.algorithm_module is not None:
        run.algorithm_module.load_state_dict(state["algorithm_module"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    for t in run.teachers:
        saved = state["teachers"][t.key]
        t.model.load_state_dict(saved["model"])
        t.smoother.load_state_dict(saved["smoother"])
        t.evaluations.load_state_dict(saved["evaluations"], run.device)
    run.step = int(state["step"])
    if len(state["streams"]) == run.ranks.world_size:
        run.streams.load_state_dict(state["streams"][run.ranks.rank])
    else:
        run.streams = Streams.seeded(run.split, run.config.seed, run.device, run.ranks.rank, step=run.step)
    window = LogWindow()
    window.load_state_dict(state["log_window"], run.device)
    return window


# -- run directories and records (rank 0) ---------------------------------------------------------------------------

def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's config.json, checked for the shape this module reads; one clear line otherwise."""
    path = run_dir / rec.CONFIG_FILE
    fix = f"move the run directory {run_dir} aside to start this run anew"
    try:
        data = rec.read_json(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}: {exc}); {fix}") from None
    training = data.get("training") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or not isinstance(data.get("config", {}), dict)
            or not (training is None or (isinstance(training, dict) and isinstance(training.get("teachers"), dict)))):
        raise ValueError(f"{path} is not an ssl-bench run configuration (unexpected JSON structure); {fix}")
    return data


def matching_run_dirs(results_dir: Path, base: str, config: RunConfig) -> list[Path]:
    """Every existing directory of a run with the same identifying settings (``RunConfig.identity``), newest first."""
    wanted = config.identity()
    found = []
    for path in reversed(rec.find_runs(results_dir, base)):
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


def _finished_elsewhere(run: Run, results_dir: Path) -> RunDirs | None:
    """Each teacher's finished run, when every one has one (its numbers are those this training would give)."""
    dirs, records = [], []
    for t in run.teachers:
        found = matching_run_dir(results_dir, rec.run_base_name(t.config), t.config)
        record = rec.RunRecord.read_if_present(found) if found is not None else None
        if record is None or record.status != rec.RunStatus.FINISHED:
            return None
        dirs.append(found)
        records.append(record)
    return RunDirs(dirs, records, False, [t.key for t in run.teachers])


def _find_training(run: Run, results_dir: Path) -> tuple[dict[str, str] | None, list[dict[str, str]]]:
    """The saved training with exactly this run's teachers (in any order; an unfinished one first), and the
    unfinished trainings that hold some of them but not exactly them."""
    keys = {t.key for t in run.teachers}
    same, other = [], []
    for t in run.teachers:
        for path in matching_run_dirs(results_dir, rec.run_base_name(t.config), t.config):
            teachers = training_of(path)
            lead = rec.RunRecord.read_if_present(results_dir / next(iter(teachers.values())))
            unfinished = lead is None or lead.status != rec.RunStatus.FINISHED
            if set(teachers) == keys:
                same.append((not unfinished, teachers))    # unfinished first, then the newest
            elif unfinished:
                other.append(teachers)
    same.sort(key=lambda x: x[0])
    return (same[0][1] if same else None), other


def open_run_dirs(run: Run, resume: bool, command: str | dict[str, str], quiet: bool = False) -> RunDirs:
    """The directories to resume (``resume`` and a saved training with the same teachers), or new ones; never
    reuses another run's directory. ``command``: one for every teacher, or one per teacher key."""
    results_dir = Path(run.config.results_dir)
    if resume:
        teachers, others = _find_training(run, results_dir)
        if teachers is not None:
            dirs = [results_dir / name for name in teachers.values()]
            previous = [rec.RunRecord.read_if_present(d) for d in dirs]
            # the saved order (the first teacher's directory holds the checkpoint); every rank adopts it
            return RunDirs(dirs, previous, (dirs[0] / CHECKPOINT_NAME).exists(), list(teachers))
        finished = _finished_elsewhere(run, results_dir)
        if finished is not None:   # every teacher asked for already finished, e.g. in a larger shared training
            return finished
        if others:
            raise ValueError(f"--resume: an unfinished training holds the teachers {list(others[0])} (in "
                             f"{results_dir / next(iter(others[0].values()))}); this command asks for "
                             f"{[t.key for t in run.teachers]}. Resume with exactly those smoothing settings, or drop "
                             "--resume to start a new training")
        if not quiet:   # the user asked to continue a run: starting another (perhaps of 2^20 steps) would surprise
            raise ValueError(f"--resume: nothing to resume with these settings "
                             f"({_closest_difference(results_dir, run.teachers[0].config)}); drop --resume to start "
                             "a new run, or fix the settings")
    keys = [t.key for t in run.teachers]
    commands = [command[k] if isinstance(command, dict) else command for k in keys]
    dirs: list[Path] = []
    try:
        dirs += [rec.create_run_dir(results_dir, rec.run_base_name(t.config)) for t in run.teachers]
        training = {"teachers": {k: d.name for k, d in zip(keys, dirs, strict=True)}} if len(dirs) > 1 else None
        for t, d, cmd in zip(run.teachers, dirs, commands, strict=True):
            rec.atomic_write_json(d / rec.CONFIG_FILE, {"config": t.config.to_dict(), "command": cmd,
                                                        "training": training})
            run.split.save(d / "split.json")
    except OSError as exc:
        for d in dirs:   # never leave a half-made run behind: it would block the next --resume
            shutil.rmtree(d, ignore_errors=True)
        raise OSError(exc.errno, f"--results-dir {str(results_dir)!r}: cannot create a run there "
                                 f"({exc.strerror or exc}: {exc.filename}); pass a writable folder with free space "
                                 "to --results-dir") from None
    return RunDirs(dirs, [None] * len(dirs), False, keys)


def new_record(run: Run, teacher: Teacher, run_dir: Path, command: str, started: str,
               training: str | None) -> rec.RunRecord:
    """The record of one teacher's run, before its first evaluation."""
    c, d = teacher.config, run.dataset
    hp = hyperparameters(run.algorithm)
    return rec.RunRecord(
        run_id=run_dir.name, status=rec.RunStatus.RUNNING, error=None, algorithm=run.algorithm.name, alg_args=hp,
        # the hyper-parameters changed with --alg-arg (the leaderboard decides "paper configuration" from alg_args)
        alg_overrides={k: hp[k] for k in c.alg_args}, targets_from=run.algorithm.targets_from,
        smooth=c.smooth, granularity=c.granularity, p=c.p, m=c.m, buffers=c.buffers,
        training=training, teacher=teacher.key if training else None,
        dataset=d.name, dataset_kind=d.kind, dataset_family=d.family, dataset_fingerprint=d.fingerprint,
        train_size=len(d.y_train), labels=c.labels, seed=c.seed, split_seed=c.split_seed, split_hash=run.split.hash,
        profile=c.profile, steps=c.steps, steps_done=run.step, model=c.model, batch_size=c.batch_size, mu=c.mu,
        eval_every=c.eval_every, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
        strong_augment=c.strong_augment, hflip=d.hflip, algorithm_sha256=source_sha256(run.algorithm),
        results=rec.summarize_evaluations(teacher.evaluations.rows) if teacher.evaluations.rows else None,
        versions=rec.versions(), device=rec.device_description(run.device), commit=rec.git_commit(),
        command=command, started=started, finished=None, wall_seconds=None,
        data_parallel=[{"from_step": run.step, "world_size": run.ranks.world_size}])


def _tensorboard_writer(run_dir: Path) -> Any:
    """A TensorBoard writer for ``run_dir`` (optional dependency: a clear message when it is missing)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard needs the tensorboard package: pip install 'ssl-bench[tensorboard]' "
                          "(or drop --tensorboard; metrics.csv has the same numbers)") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class Reporter:
    """Rank 0's writer of everything a training leaves on disk: records, metrics.csv, checkpoint, TensorBoard."""

    def __init__(self, run: Run, dirs: RunDirs, command: str | dict[str, str], progress: bool) -> None:
        self.run, self.dirs = run, dirs
        self.active = run.ranks.is_main
        previous = [p for p in dirs.previous if p is not None]
        started = previous[0].started if previous and previous[0].started else rec.now_iso()
        rows = run.teachers[0].evaluations.rows   # restored before the reporter starts: the clock continues
        self.t0 = time.perf_counter() - (rows[-1]["elapsed_s"] if rows else 0.0)
        training = dirs.dirs[0].name if len(dirs.dirs) > 1 else None
        self.records = [new_record(run, t, d, command[t.key] if isinstance(command, dict) else command, started,
                                   training)
                        for t, d in zip(run.teachers, dirs.dirs, strict=True)]
        for record, p in zip(self.records, dirs.previous, strict=True):
            if p is not None and p.data_parallel:   # every stretch of steps and its world size
                last = p.data_parallel[-1]
                record.data_parallel = list(p.data_parallel) + (
                    [] if last.get("world_size") == run.ranks.world_size else record.data_parallel)
        self.writers = [_tensorboard_writer(d) for d in dirs.dirs] if run.config.tensorboard and self.active else []
        self.bar = tqdm(total=run.config.steps, initial=run.step, desc=dirs.dirs[0].name, dynamic_ncols=True,
                        disable=not (progress and self.active))

    def progress(self, means: dict[str, float]) -> None:
        last = self.run.teachers[0].evaluations.rows
        self.bar.set_postfix(loss=f"{means.get('loss', float('nan')):.3f}",
                             mask=f"{means.get('mask_rate', float('nan')):.2f}",
                             acc=f"{last[-1]['teacher_acc']:.1f}" if last else "-")
        self.bar.update(self.run.step - self.bar.n)

    def evaluation(self, means: dict[str, float], rows: list[dict[str, Any]]) -> None:
        run = self.run
        lr = run.scheduler.get_last_lr()[0]
        elapsed = round(time.perf_counter() - self.t0, 3)
        for t, row in zip(run.teachers, rows, strict=True):
            t.evaluations.rows.append({"step": run.step, "lr": lr, **means, **row, "elapsed_s": elapsed})
        for writer, t in zip(self.writers, run.teachers, strict=False):   # no writers without --tensorboard
            for key, value in t.evaluations.rows[-1].items():
                if key != "step" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, run.step)
            writer.flush()

    def save(self, window: LogWindow, status: rec.RunStatus, error: str | None = None,
             checkpoint: bool = True) -> None:
        """Checkpoint (when the state is consistent) and every teacher's metrics.csv and record."""
        state = checkpoint_state(self.run, window) if checkpoint else None   # a collective: every rank
        if not self.active:
            return
        if state is not None:
            save_checkpoint(self.dirs.checkpoint, state)
        wall = round(time.perf_counter() - self.t0, 1)
        for t, d, record in zip(self.run.teachers, self.dirs.dirs, self.records, strict=True):
            record.status, record.error, record.steps_done = status, error, self.run.step
            record.results = rec.summarize_evaluations(t.evaluations.rows) if t.evaluations.rows else None
            record.finished = rec.now_iso() if status != rec.RunStatus.RUNNING else None
            record.wall_seconds = wall if status == rec.RunStatus.FINISHED else None
            try:
                rec.atomic_write_csv(d / rec.METRICS_FILE, t.evaluations.rows, METRIC_COLUMNS)
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
        raise ValueError(f"--stop-at {stop_at} must be a positive step (the run checkpoints and stops after it)")
    command = command if command is not None else rec.command_line()
    first = configs[0]
    first.validate()
    with join(resolve_device(first.device)) as ranks:
        if ranks.enabled:   # each rank on its own device under torchrun
            configs = [dataclasses.replace(c, device=str(ranks.device)) for c in configs]
        run = build_run(configs, ranks, sync_bn=sync_bn)
        if not isinstance(command, str):   # one command per config: keyed by its teacher, whatever order follows
            command = {resolve_without_data([c])[0].teacher_key(): cmd for c, cmd in zip(configs, command, strict=True)}
        dirs = ranks.from_main(lambda: open_run_dirs(run, resume, command, quiet))
        run.teachers.sort(key=lambda t: dirs.keys.index(t.key))   # the directories' order, on every rank
        run.config = run.teachers[0].config
        if all(p is not None and p.status == rec.RunStatus.FINISHED for p in dirs.previous):
            return [(p.to_dict(), d) for p, d in zip(dirs.previous, dirs.dirs, strict=True)]
        with _locked(dirs.dirs if ranks.is_main else []):
            return _train(run, dirs, command, stop_at=stop_at, progress=progress)


@contextlib.contextmanager
def _locked(dirs: list[Path]) -> Iterator[None]:
    """Hold every run directory's lock: a second process resuming the same run is refused."""
    with contextlib.ExitStack() as stack:
        for d in dirs:
            try:
                stack.enter_context(RunLock(d))
            except PermissionError as exc:
                raise OSError(exc.errno, f"run directory {d} is not writable ({exc.strerror}: {exc.filename}); make "
                                         "it writable (or copy it into a folder you own) and --resume again") from None
        yield


def _train(run: Run, dirs: RunDirs, command: str | dict[str, str], *, stop_at: int | None,
           progress: bool) -> list[tuple[dict[str, Any], Path]]:
    window = restore(run, load_checkpoint(dirs.checkpoint), dirs.checkpoint) if dirs.has_checkpoint else LogWindow()
    c = run.config
    last = min(c.steps, stop_at or c.steps)
    report = Reporter(run, dirs, command, progress)
    report.save(window, rec.RunStatus.RUNNING, checkpoint=False)
    at_eval = True   # a resumed training already at its last step has nothing left to checkpoint
    try:
        run.student.train()
        for t in run.teachers:
            t.model.train()
        while run.step < last:
            window.add(training_step(run, next_batch(run)))
            at_eval = run.step % c.eval_every == 0 or run.step == c.steps
            if at_eval or run.step % c.log_every == 0 or run.step == last:
                means = window.means(run.ranks, run.step)
                report.progress(means)
            if at_eval:
                window = LogWindow()   # reset before the checkpoint is written
                check_ranks_agree(run)
                if run.ranks.is_main:   # the other ranks wait for rank 0 in the next step's all-reduce
                    report.evaluation(means, evaluate(run))
                report.save(window, rec.RunStatus.RUNNING)
        done = run.step == c.steps
        if not at_eval:   # stopped by --stop-at between evaluations: checkpoint the partial window too
            report.save(window, rec.RunStatus.RUNNING)
        report.save(window, rec.RunStatus.FINISHED if done else rec.RunStatus.INTERRUPTED, checkpoint=False,
                    error=None if done else f"stopped at step {run.step} by --stop-at; continue with --resume")
    except KeyboardInterrupt:
        _save_quietly(report, window, rec.RunStatus.INTERRUPTED,
                      "interrupted (Ctrl-C); continue from the last checkpoint with --resume"
                      if dirs.checkpoint.exists() else
                      "interrupted (Ctrl-C) before its first checkpoint; --resume starts it again from step 0")
        raise RunInterrupted(dirs.dirs[0]) from None
    except BaseException as exc:
        _save_quietly(report, window, rec.RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        report.close()
    return run.ranks.from_main(lambda: [(r.to_dict(), d) for r, d in zip(report.records, dirs.dirs, strict=True)])


def _save_quietly(report: Reporter, window: LogWindow, status: rec.RunStatus, error: str) -> None:
    """Record how a training ended, without hiding why it ended (a full disk may refuse this write too)."""
    try:
        report.save(window, status, error=error, checkpoint=False)
    except OSError:
        pass


def teacher_configs(config: RunConfig, axes: dict[str, list[Any]]) -> list[RunConfig]:
    """The cross product of the smoothing ``axes`` (lists of values) over ``config``: one config per teacher."""
    names = [a for a in TEACHER_AXES if a in axes]
    return teacher_variants([dataclasses.replace(config, **dict(zip(names, values, strict=True)))
                             for values in itertools.product(*(axes[a] for a in names))] or [config])
