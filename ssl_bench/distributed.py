"""Data parallelism for THE training loop: ``torchrun --nproc_per_node N run_bench.py ...``.

Every rank runs ``train.train``; this module is the handful of places where the ranks talk to each other.
Without torchrun (``WORLD_SIZE`` unset or 1) every method here is a no-op and the loop is exactly the
single-process loop. The choices, and why:

* **Batch.** ``--batch-size`` is the *global* labelled batch: each of the N ranks draws ``batch_size / N``
  labelled and ``mu`` times as many unlabelled images (a clear error when N does not divide the batch).
* **Data streams.** Rank r draws from its own labelled, unlabelled and augmentation streams, seeded
  ``rank_seed(seed, stream, r)`` (rank 0's are the single-process streams). Each rank walks through its own
  permutations of the whole labelled set, so over one pass every rank draws every labelled image once and the
  ranks' orders differ -- not every image N times in the same step, as with TorchSSL's sampler (TorchSSL #58).
  The global batch is N independent per-rank draws, not one permutation cut in N. The global torch / numpy /
  python generators (MixUp coefficients, ...) are re-seeded per rank as well, so the ranks do not all mix with
  the same coefficients; model initialisation happens before that, and rank 0's weights are broadcast anyway.
* **Gradients: one explicit all-reduce after ``loss.backward()``, no ``DistributedDataParallel``.**
  Algorithms call ``student(...)`` but also ``student.features(...)`` / ``student.classifier(...)``
  (ReMixMatch's rotation head), which bypass a DDP wrapper's ``forward``: its reducer then misses those
  gradients or fails. The gradients of the student and of the algorithm's own module (``run.algorithm_module``)
  are flattened into one buffer per dtype, summed over ranks and divided by N: the gradient of the mean loss
  over the global batch, whatever the algorithm does inside ``loss``. Cost: no overlap of communication with
  the backward pass (DDP's buckets overlap it), which matters little at ssl-bench's model sizes.
  Every rank must produce gradients for the same parameters (as DDP without ``find_unused_parameters``); a
  parameter with a gradient on some ranks only would make the ranks diverge, which ``check_in_sync`` reports
  at the next evaluation.
* **Buffers: averaged, in the same all-reduce.** Without SyncBN each rank's BatchNorm running statistics
  follow its own batches; ReMixMatch's distribution-alignment windows hold per-rank means. Every
  floating-point buffer of the student, the teacher and the algorithm's module is replaced by its mean over
  ranks after every step, before the smoother update. The ranks then agree bit for bit, and for statistics
  linear in the batch (running means, ReMixMatch's windows) the mean of the per-rank values is the
  global-batch value; the running variance misses the spread between the ranks' means (use ``--sync-bn`` on
  GPUs for exact global statistics). Averaging rather than broadcasting rank 0's keeps every rank's data in
  the statistics. Integer buffers (``num_batches_tracked``) are equal on every rank by construction.
* **Teachers.** The smoother's generator is seeded from the run seed (rank 0's seed), identical on every
  rank, so every rank draws the same masks; with identical students and buffers the teachers stay identical.
* **SyncBatchNorm** (``--sync-bn``): student and teacher BatchNorm layers normalise with the global batch.
  torch implements it for GPUs only; on CPU it is a clear error.
* **Evaluation and files: rank 0 only.** Rank 0 evaluates, writes metrics, checkpoints and the record; the
  other ranks create nothing, and wait for it in the next step's all-reduce. The run directory is chosen (or
  created) on rank 0 and its name broadcast. At every evaluation ``check_in_sync`` compares a checksum of
  every rank's models and fails loudly if they differ. Log values (loss, mask rate) are averaged over ranks,
  so every rank sees the same numbers and stops together when the loss diverges.
* **Checkpoints and resume.** A checkpoint holds the global state (models, optimizer, smoother, history) and,
  keyed by rank, every rank's data / augmentation streams and global generators, with the world size.
  Resuming with the *same* N continues every rank's streams exactly: the run is bit-identical to an
  uninterrupted one. Resuming with a *different* N (e.g. a 2-GPU job finished on 1 GPU) is a valid
  continuation, not the same run: models, optimizer, smoother (its masks included), schedule, step and
  history continue exactly, and each new rank's streams and generators are re-seeded from
  (seed, stream, rank, step) -- deterministic, but not the images the old ranks would have drawn. The
  record's ``data_parallel`` lists the world size of every stretch of steps. Resuming needs the run
  directory on a filesystem every rank can read (every rank loads the checkpoint).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_bench.checkpoint import global_rng_state, set_global_rng_state
from ssl_bench.sampling import IndexStream, rank_seed

if TYPE_CHECKING:
    from ssl_bench.train import Run

T = TypeVar("T")
# Seed word of the per-rank global torch / numpy / python generators ("glob").
_GLOBAL_RNG = 0x676C6F62


def _mix(*words: int) -> int:
    """A seed from several integers (a fixed mixing, as ``rank_seed``; not Python's salted ``hash``)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


def seed_rank_streams(run: Run, rank: int, step: int | None = None) -> None:
    """Give ``rank`` its own labelled, unlabelled and augmentation streams and global generators.

    ``step=None`` (a fresh start): seeds ``rank_seed(seed, stream, rank)``; for rank 0 these are exactly the
    streams ``build_run`` made. ``step=k`` (a resume with another world size): seeds from (seed, stream, rank, k).
    """
    c = run.config

    def seed(stream: str) -> int:
        s = rank_seed(c.seed, stream, rank)
        return s if step is None else _mix(s, step)

    run.labeled = IndexStream(run.split.labeled, seed("labeled"))
    run.unlabeled = IndexStream(run.split.unlabeled, seed("unlabeled"))
    run.augment_generator = torch.Generator(run.device).manual_seed(seed("augment"))
    g = _mix(c.seed, _GLOBAL_RNG, rank) if step is None else _mix(c.seed, _GLOBAL_RNG, rank, step)
    torch.manual_seed(g)
    np.random.seed(g)
    random.seed(g)


def rank_state(run: Run) -> dict[str, Any]:
    """This rank's random streams, as a checkpoint stores them."""
    return {"labeled_stream": run.labeled.state_dict(), "unlabeled_stream": run.unlabeled.state_dict(),
            "augment_generator": run.augment_generator.get_state(), "global_rng": global_rng_state()}


def _by_dtype(tensors: list[Tensor]) -> Iterator[list[Tensor]]:
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    yield from groups.values()


def _modules(run: Run) -> list[nn.Module]:
    return [m for m in (run.student, run.teacher, run.algorithm_module) if m is not None]


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the data-parallel ranks (``world_size == 1``: a single process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None   # this rank's device (cuda:LOCAL_RANK under torchrun on GPUs)
    sync_bn: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that evaluates and writes files."""
        return self.rank == 0

    def per_rank_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            n = self.world_size
            raise ValueError(f"--batch-size {global_batch} is the global labelled batch and must split evenly over "
                             f"the {n} data-parallel processes (torchrun --nproc_per_node {n}): use a multiple of "
                             f"{n}, e.g. {global_batch // n * n or n} or {(global_batch // n + 1) * n}")
        return global_batch // self.world_size

    # -- set-up --------------------------------------------------------------------------------------------------

    def setup(self, run: Run) -> None:
        """Prepare a freshly built run for this rank (every rank calls it, before anything is written).

        Checks that the global batch splits over the ranks, converts BatchNorm to SyncBatchNorm with
        ``--sync-bn``, gives this rank its own data streams, and starts every rank from rank 0's weights.
        """
        run.ddp = self
        self.per_rank_batch(run.config.batch_size)
        if self.sync_bn:
            for module in (run.student, run.teacher):
                # Children are replaced in place; parameters and buffers stay the same tensors (the optimizer's).
                if nn.SyncBatchNorm.convert_sync_batchnorm(module) is not module:
                    raise ValueError("--sync-bn: the model itself is a BatchNorm layer; wrap it in a module")
        if not self.enabled:
            return
        if self.rank > 0:
            seed_rank_streams(run, self.rank)
        self._broadcast_from_main([t for m in _modules(run) for t in m.state_dict().values()])

    @torch.no_grad()
    def _broadcast_from_main(self, tensors: list[Tensor]) -> None:
        for group in _by_dtype(tensors):
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            for t, value in zip(group, flat.split([t.numel() for t in group]), strict=True):
                t.copy_(value.view_as(t))

    # -- every step ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def average_gradients_and_buffers(self, run: Run) -> None:
        """After ``loss.backward()``: every gradient and floating-point buffer becomes its mean over the ranks.

        One all-reduce per dtype (normally one in all). A parameter without a gradient here contributes zeros
        and keeps ``grad=None`` (so the optimizer skips it, as in a single process).
        """
        if not self.enabled:
            return
        params = list({id(p): p for m in _modules(run) for p in m.parameters() if p.requires_grad}.values())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        buffers = [b for m in _modules(run) for b in m.buffers() if b.is_floating_point()]
        self._all_reduce_mean_([*grads, *buffers])

    def _all_reduce_mean_(self, tensors: list[Tensor]) -> None:
        for group in _by_dtype(tensors):
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)           # SUM (gloo has no AVG)
            flat /= self.world_size
            for t, value in zip(group, flat.split([t.numel() for t in group]), strict=True):
                t.copy_(value.view_as(t))

    def mean_over_ranks(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """The logs' running sums averaged over ranks (at log intervals), so every rank logs the same numbers."""
        if not self.enabled or not sums:
            return sums
        keys = sorted(sums)
        stacked = torch.stack([sums[k].float() for k in keys])
        self._all_reduce_mean_([stacked])
        return dict(zip(keys, stacked.unbind(), strict=True))

    # -- rank 0 decides, every rank learns -------------------------------------------------------------------------

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 only (the files are rank 0's) and its result sent to every rank.

        An error on rank 0 is raised on every rank instead of leaving the others waiting.
        """
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box[0] = (True, fn())
            except Exception as exc:   # re-raised below, on every rank
                error, box[0] = exc, (False, f"{type(exc).__name__}: {exc}")
        dist.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if ok:
            return value
        if error is not None:
            raise error
        raise RuntimeError(f"rank 0 failed: {value}")

    # -- evaluations and checkpoints -------------------------------------------------------------------------------

    def check_in_sync(self, run: Run) -> None:
        """Fail loudly (on every rank) unless every rank holds the same student, teacher and algorithm module."""
        if not self.enabled:
            return
        names, sums = [], []
        for prefix, module in zip(("student", "teacher", "algorithm_module"),
                                  (run.student, run.teacher, run.algorithm_module), strict=True):
            for name, t in (module.state_dict().items() if module is not None else ()):
                names.append(f"{prefix}.{name}")
                sums.append(torch.stack([t.double().sum(), t.double().square().sum()]))
        local = torch.stack(sums)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        for rank, other in enumerate(gathered):
            if not torch.equal(other, gathered[0]):
                first = names[int((other != gathered[0]).any(dim=1).nonzero()[0])]
                raise RuntimeError(
                    f"data-parallel ranks diverged by step {run.step}: rank {rank} differs from rank 0, first in "
                    f"{first}. Does the algorithm give some parameters a gradient on some ranks only "
                    "(data-dependent branches)? Every rank must produce gradients for the same parameters.")

    def gather_rank_states(self, run: Run) -> dict[str, Any]:
        """Checkpoint entries for every rank's streams (a collective: every rank calls it, rank 0 saves it)."""
        if not self.enabled:
            return {"world_size": 1}
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, rank_state(run))
        return {"world_size": self.world_size, "rank_states": states}

    def restore_rank_state(self, run: Run, state: dict[str, Any]) -> None:
        """After ``train.restore`` (which loads rank 0's streams): this rank's own streams, or new ones.

        Same world size: this rank's saved streams, exactly. Another world size: streams re-seeded from
        (seed, stream, rank, step) -- a valid, deterministic continuation, not the uninterrupted run.
        """
        saved_world_size = int(state.get("world_size", 1))
        if saved_world_size != self.world_size:
            seed_rank_streams(run, self.rank, step=run.step)
        elif self.enabled:
            mine = state["rank_states"][self.rank]
            run.labeled.load_state_dict(mine["labeled_stream"])
            run.unlabeled.load_state_dict(mine["unlabeled_stream"])
            run.augment_generator.set_state(mine["augment_generator"])
            set_global_rng_state(mine["global_rng"])

    def record_segments(self, previous: dict[str, Any] | None, step: int) -> list[dict[str, Any]]:
        """The record's ``data_parallel``: world size and SyncBN of every stretch of steps, from a resumed record."""
        if previous is None:
            segments: list[dict[str, Any]] = []
        else:   # a record from before data parallelism was single-process
            segments = list(previous.get("data_parallel") or [{"from_step": 0, "world_size": 1, "sync_bn": False}])
        here = {"from_step": step, "world_size": self.world_size, "sync_bn": self.sync_bn}
        if not segments or (segments[-1]["world_size"], segments[-1]["sync_bn"]) != (self.world_size, self.sync_bn):
            segments.append(here)
        return segments


SINGLE_PROCESS = DataParallel()


@contextmanager
def from_env(device: torch.device, *, sync_bn: bool = False) -> Iterator[DataParallel]:
    """This process's ``DataParallel``, from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT).

    With ``WORLD_SIZE`` > 1 it joins the process group (gloo on CPU, nccl on CUDA, each rank on
    ``cuda:LOCAL_RANK``) and leaves it at the end; a group the caller already joined is used and left alone.
    """
    if sync_bn and device.type != "cuda":
        raise ValueError(f"--sync-bn: torch's SyncBatchNorm runs on GPUs only and this run is on {device}; drop "
                         "--sync-bn (each rank then normalises with its own batch statistics and the running "
                         "statistics are averaged over the ranks after every step)")
    joined = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield DataParallel(device=device, sync_bn=sync_bn)
        return
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--device {device}: with torchrun every rank uses its own GPU (cuda:LOCAL_RANK); "
                             "pass --device cuda or auto")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")   # env://
    try:
        yield DataParallel(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, sync_bn=sync_bn)
    finally:
        if not joined:
            dist.destroy_process_group()
