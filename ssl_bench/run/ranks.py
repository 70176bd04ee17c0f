"""The ranks of a ``torchrun --nproc_per_node N`` job, and the few collectives the training loop needs.

This module knows tensors and Python objects, never the loop's ``Training``: broadcast from rank 0, an all-reduce
mean, "rank 0 decides, every rank learns" (``from_main``), gather, and an equality check. Without torchrun
(``WORLD_SIZE`` unset or 1) every collective is the identity and costs nothing.

Why no ``DistributedDataParallel``: algorithms call ``student.features(...)`` / ``student.classifier(...)``
(ReMixMatch's rotation head) besides ``forward``, which a DDP wrapper's reducer does not see. The loop instead
averages every gradient and floating-point buffer with one explicit all-reduce per dtype after
``loss.backward()`` (``average_gradients_``): the gradient of the mean loss over the global batch, whatever the
algorithm does inside its loss. Cost: no overlap of communication with the backward pass, which matters little
at ssl-bench's model sizes. How the loop uses these (per-rank data streams, rank-0-only files, resuming with
another world size) is described in ``ssl_bench.run.loop``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_bench.errors import UserError

T = TypeVar("T")


def _by_dtype(tensors: Iterable[Tensor]) -> Iterator[list[Tensor]]:
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    yield from groups.values()


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel ranks (``world_size == 1``: a single process)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None   # this rank's device (cuda:LOCAL_RANK under torchrun on GPUs)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that evaluates and writes files."""
        return self.rank == 0

    def per_rank(self, global_batch: int) -> int:
        """This rank's share of a global batch; a clear error when the ranks cannot split it evenly."""
        if global_batch % self.world_size:
            n = self.world_size
            raise UserError(f"--batch-size {global_batch} is the global labelled batch and must split evenly over "
                            f"the {n} data-parallel processes (torchrun --nproc_per_node {n}): use a multiple of "
                            f"{n}, e.g. {global_batch // n * n or n} or {(global_batch // n + 1) * n}")
        return global_batch // self.world_size

    @torch.no_grad()
    def broadcast_(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values (one broadcast per dtype)."""
        if not self.enabled:
            return
        for group in _by_dtype(tensors):
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            for t, value in zip(group, flat.split([t.numel() for t in group]), strict=True):
                t.copy_(value.view_as(t))

    @torch.no_grad()
    def all_reduce_mean_(self, tensors: Iterable[Tensor]) -> None:
        """Replace every tensor in place by its mean over the ranks (one all-reduce per dtype)."""
        if not self.enabled:
            return
        for group in _by_dtype(tensors):
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)           # SUM: gloo has no AVG
            flat /= self.world_size
            for t, value in zip(group, flat.split([t.numel() for t in group]), strict=True):
                t.copy_(value.view_as(t))

    def average_gradients_(self, modules: Sequence[nn.Module]) -> None:
        """Data parallel, after ``backward`` (a collective): every trainable parameter's gradient and every float
        buffer of ``modules`` (the student and the algorithm's module) becomes its mean over the ranks.

        A parameter without a gradient on this rank contributes zeros; unused on every rank, it keeps
        ``grad=None`` (SGD then skips it, as in one process). Teachers are not passed: their buffers are made from
        the student's after this call, so they never differ between ranks.
        """
        params = list({id(p): p for m in modules for p in m.parameters() if p.requires_grad}.values())
        unused = [p for p in params if p.grad is None]
        for p in unused:
            p.grad = torch.zeros_like(p)
        self.all_reduce_mean_([p.grad for p in params] + [b for m in modules for b in m.buffers()
                                                          if b.is_floating_point()])
        for p in unused:
            if not p.grad.any():
                p.grad = None

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

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def first_difference(self, named: dict[str, Tensor]) -> tuple[int, str] | None:
        """``(rank, name)`` of the first tensor in which some rank differs from rank 0, or None when all agree.

        Compares a checksum (sum and sum of squares in float64) of every tensor.
        """
        if not self.enabled or not named:
            return None
        names = list(named)
        local = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for t in named.values()])
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        for rank, other in enumerate(gathered):
            if not torch.equal(other, gathered[0]):
                return rank, names[int((other != gathered[0]).any(dim=1).nonzero()[0])]
        return None


SINGLE_PROCESS = Ranks()


def check_environment(environ: dict[str, str] | None = None) -> None:
    """torchrun's variables, checked before any training: ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are
    non-negative integers, ``RANK < WORLD_SIZE``, and a ``RANK`` comes with its ``WORLD_SIZE`` (a lone ``RANK=1``
    would train a single process that never writes its results)."""
    env = os.environ if environ is None else environ
    values: dict[str, int] = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = env.get(name)
        if text is None:
            continue
        if not text.strip().isdigit():
            raise UserError(f"{name}={text!r} is not a non-negative integer; unset it, or start data-parallel "
                            "runs with torchrun, which sets it")
        values[name] = int(text)
    world = values.get("WORLD_SIZE", 1)
    if world < 1:
        raise UserError(f"WORLD_SIZE={world} must be >= 1; unset it, or start the run with torchrun")
    rank = values.get("RANK", 0)
    if rank >= world:
        got = f"WORLD_SIZE={world}" if "WORLD_SIZE" in values else "no WORLD_SIZE"
        raise UserError(f"RANK={rank} with {got}: a rank must be below the world size; unset RANK, or start "
                        "data-parallel runs with torchrun (it sets RANK and WORLD_SIZE together)")


@contextmanager
def join(device: torch.device) -> Iterator[Ranks]:
    """This process's ``Ranks``, from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    With ``WORLD_SIZE`` > 1 it joins the process group (gloo on CPU, nccl on CUDA, each rank on
    ``cuda:LOCAL_RANK``) and leaves it at the end; a group the caller already joined is used and left alone.
    """
    joined = dist.is_available() and dist.is_initialized()
    if not joined:
        check_environment()
    world_size = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Ranks(device=device)
        return
    if device.type == "cuda":
        if device.index is not None:
            raise UserError(f"--device {device}: with torchrun every rank uses its own GPU (cuda:LOCAL_RANK); "
                            "pass --device cuda or auto")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")   # env://
    try:
        yield Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
    finally:
        if not joined:
            dist.destroy_process_group()
