"""No host-device synchronisation in a training step after the first: augmentation, normalisation, loss,
backward, optimizer and every smoother update queue their work without reading anything back.

The first step is left out: it checks the losses once (a deliberate read-back) and builds the smoothers'
plans. See ssl_bench/host_sync.py for what counts as a sync and how it is caught on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from ssl_bench import augment
from ssl_bench.augment import (
    apply_strong,
    apply_weak,
    draw_strong,
    draw_weak,
    normalize,
    strong_augment,
    weak_augment,
)
from ssl_bench.config import RunConfig
from ssl_bench.host_sync import HostSyncError, no_host_sync
from ssl_bench.run.build import build_training
from ssl_bench.run.loop import next_batch, training_step

ALGORITHMS = ("fixmatch", "mixmatch", "remixmatch", "uda", "mean_teacher")
# Every built-in strategy; "name/granularity" for the gated ones at the other units of their Bernoulli draw.
STRATEGIES = ("none", "tma", "se", "sts", "swa", "se/channel", "sts/neuron")
GUARDED_STEPS = 3


@pytest.fixture(autouse=True)
def gpu_code_path(monkeypatch):
    """The augmentation as it runs on a GPU: static shapes (on the CPU it groups images by op by default,
    reading group sizes back, which costs nothing there)."""
    monkeypatch.setattr(augment, "GROUP_BY_OP_ON_CPU", False)


def smoke_run(algorithm: str, smooth: str, tmp_path, **changes):
    smooth, _, granularity = smooth.partition("/")
    if granularity:
        changes["granularity"] = granularity
    return build_training(RunConfig(algorithm=algorithm, smooth=smooth, dataset="digits", labels=20, profile="smoke",
                               results_dir=str(tmp_path), device="cpu", **changes))


def test_the_guard_catches_every_kind_of_read_back():
    """The detector itself: each way a value reaches the host is refused inside the block, none outside."""
    t = torch.arange(4.0)
    reads = [lambda: t.sum().item(), lambda: bool(t.sum()), lambda: t.tolist(), lambda: t.numpy(),
             lambda: int(t[0]), lambda: float(t[0]), lambda: [0, 1][t[1].long()], lambda: torch.nonzero(t),
             lambda: t[t > 1], lambda: torch.bincount(t.long()), lambda: torch.unique(t),
             lambda: torch.masked_select(t, t > 1), lambda: t.repeat_interleave(t.long()),
             lambda: torch.nn.functional.one_hot(t.long())]
    for read in reads:
        with pytest.raises(HostSyncError), no_host_sync():
            read()
    for read in reads:   # restored afterwards
        read()
    with no_host_sync():   # fixed-shape work passes
        (t * 2).where(t > 1, t).cumsum(0).scatter_add(0, torch.zeros(4, dtype=torch.long), t)
        t.repeat_interleave(t.long(), output_size=6)
        one_hot = torch.nn.functional.one_hot(t.long(), 5)   # as CUDA runs it: a scatter, no range check
    assert torch.equal(one_hot, torch.nn.functional.one_hot(t.long(), 5))


@pytest.mark.parametrize("policy", ["ramc", "table12"])
def test_augmentation_and_normalize_read_nothing_back_and_build_nothing_from_host_data(policy):
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    normalize(strong_augment(x, g, policy=policy), (0.5,) * 3, (0.25,) * 3)  # first call: tables cached
    with no_host_sync(), _no_host_data() as created:
        for _ in range(2):
            normalize(weak_augment(x, g), (0.5,) * 3, (0.25,) * 3)
            normalize(strong_augment(x, g, policy=policy), (0.5,) * 3, (0.25,) * 3)
            apply_weak(x, draw_weak(16, 32, 32, g))
            apply_strong(x, draw_strong(16, 32, 32, g, policy))
    assert created == []


def test_the_cpu_default_groups_by_op_and_reads_the_group_sizes_back(monkeypatch):
    """The guard sees the CPU's grouped rounds (so the static default elsewhere is what passes above)."""
    monkeypatch.setattr(augment, "GROUP_BY_OP_ON_CPU", True)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(HostSyncError, match="bincount|tolist"), no_host_sync():
        strong_augment(x, torch.Generator().manual_seed(0))


class _HostData(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every tensor built from Python data (torch.tensor / as_tensor: aten.lift_fresh): on a GPU each
    is a blocking host-to-device copy."""

    def __init__(self, created: list[str]) -> None:
        super().__init__()
        self.created = created

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in ("aten::lift_fresh", "aten::lift_fresh_copy"):
            self.created.append(str(func))
        return func(*args, **(kwargs or {}))


class _no_host_data:
    def __enter__(self) -> list[str]:
        self.created: list[str] = []
        self.mode = _HostData(self.created)
        self.mode.__enter__()
        return self.created

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)


@pytest.mark.parametrize("smooth", STRATEGIES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_steps_after_the_first_never_read_the_device_back(algorithm, smooth, tmp_path):
    run = smoke_run(algorithm, smooth, tmp_path)
    run.student.train()
    for t in run.teachers:
        t.model.train()
    training_step(run, next_batch(run))   # the first step checks the losses once
    with no_host_sync():
        for _ in range(GUARDED_STEPS):
            logs = training_step(run, next_batch(run))
    assert run.step == 1 + GUARDED_STEPS and all(torch.isfinite(v).all() for v in logs.values())


@pytest.mark.cuda
@pytest.mark.parametrize("policy", ["ramc", "table12"])
def test_static_and_compiled_augmentation_on_cuda_equal_the_cpu_images(policy):
    """The GPU's static rounds give the CPU's images bit for bit, eager and with the same draws."""
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    draws = draw_strong(64, 32, 32, torch.Generator(device="cuda").manual_seed(4), policy)
    on_cpu = type(draws)(type(draws.weak)(*(t.cpu() for t in vars(draws.weak).values())),
                         type(draws.pool)(*(t.cpu() for t in vars(draws.pool).values())))
    assert torch.equal(apply_strong(x.cuda(), draws).cpu(), apply_strong(x, on_cpu))


@pytest.mark.cuda
@pytest.mark.parametrize("smooth", STRATEGIES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cuda_training_steps_after_the_first_never_synchronise(algorithm, smooth, tmp_path):
    """The same check from inside the driver: torch.cuda.set_sync_debug_mode("error") raises at any
    synchronising CUDA call (a blocking copy back, cudaStreamSynchronize, a non-pinned host-to-device copy)."""
    run = smoke_run(algorithm, smooth, tmp_path, device="cuda")
    run.student.train()
    for t in run.teachers:
        t.model.train()
    training_step(run, next_batch(run))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(GUARDED_STEPS):
            logs = training_step(run, next_batch(run))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert run.step == 1 + GUARDED_STEPS and all(torch.isfinite(v).all() for v in logs.values())
