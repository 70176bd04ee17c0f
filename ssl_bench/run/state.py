"""The state of a training: one student, its teachers, the optimizer, the random streams, and its checkpoint.

``Training`` is everything one training holds (built by ``ssl_bench.run.build.build_training``); a training
serves one or more teachers, each of which writes an ordinary run directory. ``checkpoint_state`` / ``restore``
turn it into plain tensors and types and back (``torch.load(weights_only=True)`` reads them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_bench.algorithm import Algorithm, hyperparameters
from ssl_bench.augment import normalize
from ssl_bench.config import RunConfig
from ssl_bench.data import ImageDataset, LabelSplit
from ssl_bench.errors import UserError
from ssl_bench.run.checkpoint import CheckpointError, check_identity, shapes
from ssl_bench.run.ranks import Ranks
from ssl_bench.run.sampling import IndexStream, rank_seed
from ssl_bench.smoothing import Smoother


class DivergedError(UserError):
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
               step: int | None = None, extra_unlabeled: int = 0) -> Streams:
        """Fresh streams for ``rank`` (``step``: re-seeded for a resume with another world size).

        ``extra_unlabeled``: images without labels beyond the training set (STL-10's 100,000); the unlabelled
        stream then runs over ``split.unlabeled`` and the indices ``num_train ..`` that stand for them."""
        def s(stream: str) -> int:
            base = rank_seed(seed, stream, rank)
            return base if step is None else int(np.random.SeedSequence([base, step]).generate_state(1)[0])
        pool = split.unlabeled if not extra_unlabeled else np.concatenate(
            [split.unlabeled, split.num_train + np.arange(extra_unlabeled, dtype=np.int64)])
        return cls(IndexStream(split.labeled, s("labeled")), IndexStream(pool, s("unlabeled")),
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

    def means_over_ranks(self, ranks: Ranks, step: int) -> dict[str, float]:
        """The window's means over its steps and the ranks (the loop's only host sync; a collective: every rank
        calls it at the same step); diverged -> error."""
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
class Training:
    """Everything a training holds, built once by ``build_training`` (tests and benchmarks use it directly)."""

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
    # training images followed by the data set's extra unlabelled ones (STL-10), or None: then the pool is x_train
    x_unlabeled_pool: Tensor | None = None
    # Image index -> position in the split's labelled / unlabelled set (-1: not in it), for Batch.x_index and
    # Batch.u_index (algorithms with per-image state: FlexMatch, SimMatch).
    positions: tuple[Tensor, Tensor] | None = None

    @property
    def extra_unlabeled(self) -> int:
        """How many images without labels the data set adds to the unlabelled pool (0 for most)."""
        return 0 if self.dataset.x_unlabeled is None else len(self.dataset.x_unlabeled)

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
                "teachers": [t.key for t in self.teachers], "shapes": shapes(self.student.state_dict()),
                **self._plugin_files()}

    def _plugin_files(self) -> dict[str, Any]:
        """The sha256 of each plug-in strategy's file, by teacher (absent when every strategy is a built-in, so
        checkpoints of built-in trainings keep their identity): a plug-in edited since the checkpoint is refused."""
        from ssl_bench.run.writer import smoothing_sha256

        files = {t.key: sha for t in self.teachers if (sha := smoothing_sha256(t.config.smooth)) is not None}
        return {"smoothing_files": files} if files else {}

# -- checkpoints ------------------------------------------------------------------------------------------------

def checkpoint_state(training: Training, window: LogWindow, streams: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything that determines the rest of the training, as tensors and plain types (weights_only loads).

    ``streams``: every rank's stream states in rank order (``training.ranks.gather``, a collective the loop makes).
    """
    return {
        "step": training.step,
        "identity": training.identity(),
        "config": training.config.to_dict(),
        "student": training.student.state_dict(),
        "algorithm_module": None if training.algorithm_module is None else training.algorithm_module.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "teachers": {t.key: {"model": t.model.state_dict(), "smoother": t.smoother.state_dict(),
                             "evaluations": t.evaluations.state_dict()} for t in training.teachers},
        "streams": streams,
        "log_window": window.state_dict(),   # the partial sums of the logs since the last evaluation
    }


def restore(training: Training, state: dict[str, Any], path: Path) -> LogWindow:
    """Load a checkpoint into ``training``; a checkpoint of another training is refused before anything is loaded.

    With the world size it was saved with, every rank continues its own streams exactly; with another one,
    the ranks' streams are re-seeded from (seed, stream, rank, step).
    """
    check_identity(state["identity"], training.identity(), path)
    try:
        return _load_state(training, state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} has another layout than this ssl-bench writes ({type(exc).__name__}: "
                              f"{exc}); delete it to restart the run from step 0 (--resume keeps its directory), "
                              "or resume with the ssl-bench version that wrote it") from None


def _load_state(training: Training, state: dict[str, Any]) -> LogWindow:
    training.student.load_state_dict(state["student"])
    if training.algorithm_module is not None:
        training.algorithm_module.load_state_dict(state["algorithm_module"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    for t in training.teachers:
        saved = state["teachers"][t.key]
        t.model.load_state_dict(saved["model"])
        t.smoother.load_state_dict(saved["smoother"])
        t.evaluations.load_state_dict(saved["evaluations"], training.device)
    training.step = int(state["step"])
    if len(state["streams"]) == training.ranks.world_size:
        training.streams.load_state_dict(state["streams"][training.ranks.rank])
    else:
        training.streams = Streams.seeded(training.split, training.config.seed, training.device, training.ranks.rank,
                                          step=training.step, extra_unlabeled=training.extra_unlabeled)
    window = LogWindow()
    window.load_state_dict(state["log_window"], training.device)
    return window

