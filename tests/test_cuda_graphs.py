"""--cuda-graphs (ssl_bench/run/cuda_graphs.py): refused with one line where it cannot run, the learning rate as
a device tensor for the step only, which smoother updates go into the graph; on a GPU (tests marked ``cuda``,
never run so far: no GPU was lent while this was written): replayed steps equal eager ones bit for bit, make
no host sync, and a stopped run resumes exactly.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from ssl_bench.config import RunConfig
from ssl_bench.errors import UserError
from ssl_bench.run.build import build_optimizer, build_training
from ssl_bench.run.cuda_graphs import (
    CAPTURABLE_ALGORITHMS,
    GraphedSteps,
    _TensorLearningRate,
    captured_in_graph,
    check_supported,
)
from ssl_bench.run.loop import train
from ssl_bench.smoothing import build_smoother

CUDA = torch.device("cuda")


def smoke(tmp_path, **changes) -> RunConfig:
    settings = dict(algorithm="fixmatch", dataset="digits", labels=20, profile="smoke", results_dir=str(tmp_path),
                    cuda_graphs=True)
    return RunConfig(**{**settings, **changes})


def test_refused_on_a_cpu_with_one_line_before_any_directory(tmp_path):
    with pytest.raises(UserError, match=r"^--cuda-graphs captures the training step in a CUDA graph and this run "
                                        r"is on cpu; drop --cuda-graphs") as raised:
        train(smoke(tmp_path / "runs", device="cpu"), progress=False)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("changes, data_parallel, expected", [
    ({"compile": True}, False, "--cuda-graphs with --compile: choose one"),
    ({}, True, "--cuda-graphs under torchrun"),
    ({"algorithm": "mixmatch"}, False, "--cuda-graphs with --alg mixmatch: its step is not captured yet"),
])
def test_what_a_graph_cannot_capture_is_refused_by_name(tmp_path, changes, data_parallel, expected):
    with pytest.raises(UserError, match=expected):
        check_supported(smoke(tmp_path, **changes), CUDA, data_parallel)


def test_capturable_algorithms_and_the_flag_off_pass(tmp_path):
    for algorithm in CAPTURABLE_ALGORITHMS:
        check_supported(smoke(tmp_path, algorithm=algorithm), CUDA, False)
    check_supported(smoke(tmp_path, cuda_graphs=False), torch.device("cpu"), False)


@pytest.mark.parametrize("strategy, settings, captured", [
    ("none", {}, True), ("tma", {}, True), ("se", {"granularity": "channel"}, True), ("sts", {}, True),
    ("tma", {"schedule": "cosine"}, False), ("sts", {"schedule": "warmup"}, False), ("swa", {}, False),
])
def test_only_updates_with_the_same_kernels_at_every_step_go_into_the_graph(strategy, settings, captured):
    smoother = build_smoother(strategy, seed=0, p=0.5, m=0.9, **settings)
    assert captured_in_graph(smoother) is captured


def _optimizer(seed: int) -> tuple[list[torch.nn.Parameter], torch.optim.SGD]:
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    return params, build_optimizer(params[:1], params[1:], lr=0.03, momentum=0.9, weight_decay=5e-4)


def test_the_learning_rate_is_a_float32_tensor_inside_the_step_only():
    """Fused SGD reading fl32(lr) from a tensor (filled from the schedule before each step) moves the weights as
    fused SGD with the float fl32(lr) does, bit for bit; outside the step the groups and the scheduler keep
    floats, and the schedule goes on."""
    params, optimizer = _optimizer(0)
    reference_params, reference = _optimizer(0)
    lr = _TensorLearningRate(optimizer, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: math.cos(k / 10))
    for step in range(4):
        for p, q in zip(params, reference_params, strict=True):
            p.grad = torch.sin(p.detach() + step)
            q.grad = torch.sin(q.detach() + step)
        optimizer.step()
        for group, reference_group in zip(optimizer.param_groups, reference.param_groups, strict=True):
            assert isinstance(group["lr"], float)
            reference_group.update(lr=float(torch.tensor(group["lr"], dtype=torch.float32)), fused=True)
        reference.step()
        scheduler.step()
        for p, q in zip(params, reference_params, strict=True):
            assert torch.equal(p, q)
    assert [t.item() for t in lr.tensors] == [float(torch.tensor(0.03 * math.cos(3 / 10), dtype=torch.float32))] * 2
    assert all(isinstance(v, float) for v in scheduler.get_last_lr())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.03 * math.cos(4 / 10))


def test_a_warmup_of_no_step_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("ssl_bench.run.cuda_graphs.check_supported", lambda *a: None)
    training = build_training(smoke(tmp_path, device="cpu", cuda_graphs=False))
    with pytest.raises(ValueError, match="at least 1 eager step"):
        GraphedSteps(training, warmup=0)


# -- on a GPU ---------------------------------------------------------------------------------------------------

SMOOTHINGS = ("tma", "se", "sts", "swa")   # swa: updated eagerly after each replay


def _cuda_training(tmp_path):
    return build_training([smoke(tmp_path, device="cuda", smooth=s) for s in SMOOTHINGS])


def _state(training) -> dict[str, torch.Tensor]:
    state = {f"student.{k}": v for k, v in training.student.state_dict().items()}
    for t in training.teachers:
        state.update({f"{t.key}.{k}": v for k, v in t.model.state_dict().items()})
    state["augment"] = training.streams.augment.get_state()
    state.update({f"{t.key}.generator": t.smoother.generator.get_state() for t in training.teachers})
    return state


@pytest.mark.cuda
def test_replayed_steps_equal_eager_steps_bit_for_bit(tmp_path):
    """The same training with every step eager (a warm-up longer than the run: same fused SGD, same tensor lr)
    and with steps 4.. replayed: same logs, weights, teachers and generator states after every step."""
    eager, graphed = _cuda_training(tmp_path / "a"), _cuda_training(tmp_path / "b")
    for training in (eager, graphed):
        training.student.train()
    eager_steps, graphed_steps = GraphedSteps(eager, warmup=10**9), GraphedSteps(graphed, warmup=3)
    for _ in range(8):
        a, b = eager_steps(), graphed_steps()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        sa, sb = _state(eager), _state(graphed)
        assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []
    assert graphed_steps.graph is not None and eager_steps.graph is None
    assert eager.step == graphed.step == 8 and eager.scheduler.last_epoch == graphed.scheduler.last_epoch


@pytest.mark.cuda
def test_replays_never_synchronise(tmp_path):
    training = _cuda_training(tmp_path)
    training.student.train()
    steps = GraphedSteps(training, warmup=3)
    for _ in range(4):   # warm-up and the capture
        steps()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            logs = steps()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v).all() for v in logs.values())


def _rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


@pytest.mark.cuda
def test_a_stopped_run_resumes_exactly(tmp_path):
    """Stopped between evaluations and resumed (eager warm-up again, a new capture): the uninterrupted numbers."""
    config = smoke(tmp_path / "whole", device="cuda", steps=24, eval_every=8)
    _, whole = train(config, progress=False)
    parts = RunConfig(**{**config.to_dict(), "results_dir": str(tmp_path / "parts")})
    train(parts, stop_at=12, progress=False)
    _, resumed = train(parts, resume=True, progress=False)
    assert _rows(resumed) == _rows(whole)


class _FakeStream:
    def wait_stream(self, other: object) -> None:
        pass


class _FakeGraph:
    """Runs the captured Python for real once (a real capture only records) and replays nothing."""

    def __init__(self) -> None:
        self.generators: list[torch.Generator] = []
        self.replays = 0

    def register_generator_state(self, generator: torch.Generator) -> None:
        self.generators.append(generator)

    def replay(self) -> None:
        self.replays += 1


def test_the_bookkeeping_around_capture_and_replay_on_a_cpu_with_a_fake_graph(tmp_path, monkeypatch):
    """What can be checked without a GPU: warm-up steps, then one capture; every replay draws the step's indices
    into the graph's input buffers, runs the schedule, the eager (swa) update and the counters exactly once,
    and returns fresh copies of the logs. (The fake graph runs the capture's Python for real and replays no
    kernels, so the weights are not compared here; the cuda tests above compare them.)"""
    import contextlib

    from ssl_bench.run import cuda_graphs
    from ssl_bench.run.loop import next_batch, training_step

    for name, fake in {"Stream": lambda device=None: _FakeStream(), "current_stream": lambda device=None: _FakeStream(),
                       "stream": lambda s: contextlib.nullcontext(), "CUDAGraph": _FakeGraph,
                       "graph": lambda g: contextlib.nullcontext()}.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    monkeypatch.setattr(cuda_graphs, "check_supported", lambda *a: None)

    def build(folder):
        return build_training([smoke(tmp_path / folder, device="cpu", cuda_graphs=False, smooth=s)
                               for s in ("tma", "sts", "swa")])

    training, reference = build("graphed"), build("eager")
    steps = GraphedSteps(training, warmup=2)
    assert [id(t) for t in training.teachers if id(t) in steps.eager_teachers] == [id(training.teachers[2])]
    for call in range(1, 6):
        logs = steps()
        drawn = []
        batch = next_batch(reference, draw=lambda stream, n, drawn=drawn: drawn.append(stream.next(n)) or drawn[-1])
        reference_logs = training_step(reference, batch)
        assert training.step == reference.step == call
        assert training.scheduler.last_epoch == call
        assert [t.smoother.num_updates for t in training.teachers] == [call] * 3
        assert training.streams.labeled.state_dict()["pos"] == reference.streams.labeled.state_dict()["pos"]
        assert training.streams.unlabeled.state_dict()["pos"] == reference.streams.unlabeled.state_dict()["pos"]
        assert logs.keys() == reference_logs.keys()
        assert all(isinstance(group["lr"], float) for group in training.optimizer.param_groups)
        if call >= 3:   # replays: the step's indices are in the graph's input buffers, the logs are copies
            assert steps.graph.replays == call - 2
            assert len(steps.inputs) == len(drawn) == 2
            assert all(torch.equal(a, b) for a, b in zip(steps.inputs, drawn, strict=True))
            assert all(logs[k] is not steps.logs[k] and torch.equal(logs[k], steps.logs[k]) for k in logs)
    every = [training.streams.augment, training.streams.algorithm, *(t.smoother.generator for t in training.teachers)]
    assert steps._generators() == every[:-1]     # not swa's: it is updated eagerly
    assert steps.graph.generators == []          # CPU generators are not registered (with a CUDA graph)
    assert training.optimizer.param_groups[0]["fused"] is True
