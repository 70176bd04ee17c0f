"""``--cuda-graphs``: after a few eager warm-up steps, the whole training step is captured once in a CUDA graph
and every later step replays it: one launch of the recorded kernels instead of ~850 from Python.

**Never run on a GPU.** This module was written and its refusals tested on a machine without one; the tests
that capture and replay (``tests/test_cuda_graphs.py``, marked ``cuda``) and ``scripts/device_check.sh`` run it
for the first time wherever a GPU is lent.

What one replay does, in order (the same work as ``next_batch`` + ``training_step``): the step's image indices,
drawn on the host from the run's index streams and copied into static device buffers (the graph's inputs);
the augmentation of every view (its draws from the run's augmentation generator), the loss, ``backward``, the
optimizer step and every smoother update whose kernels do not depend on the step; then, outside the graph, the
updates that do (momentum schedules other than ``constant``, ``swa``, plug-in strategies), the learning-rate
schedule and the step counter.  The graph's log tensors are overwritten by every replay, so each step's logs
are cloned.

What makes a captured step equal an eager one:

* **Generators registered with the graph** (``CUDAGraph.register_generator_state``): the augmentation's, the
  algorithm's and each captured smoother's.  A replay advances each by the offsets the captured kernels used,
  as the eager step does, so checkpoints store the right generator states and a resumed run (eager warm-up
  steps, then a new capture) continues the same random streams.
* **The learning rate as a device tensor**: SGD would bake a Python float into the graph.  From the first step
  on (eager steps too, so that warm-up and replay run the same kernel) the optimizer is PyTorch's fused SGD,
  whose ``lr`` may be a float32 tensor it reads on the device; the tensor is filled from the schedule's value
  before each step.  The param groups keep their float ``lr`` outside the step (the scheduler, the records and
  checkpoints see floats as in an eager run).  SGD has no ``capturable`` flag: its state (momentum buffers) has
  no step counter, and its first step, which creates the buffers, is one of the eager warm-up steps.
* **Nothing baked that changes between steps**: the capture runs the step's Python once, so a value computed
  in Python from the step would be frozen.  Hence the refusals below: algorithms whose loss reads
  ``batch.progress`` (ramp-ups) or keeps host-side state are not captured (only ``CAPTURABLE_ALGORITHMS``), and
  smoother updates that depend on the step run eagerly after each replay.

The numbers are the eager run's up to float round-off (fused SGD with a float32 learning rate instead of
foreach SGD with a float64 one), like a run on another device; ``cuda_graphs`` is recorded in the run's
``config.json`` but does not identify a run (as ``--device`` does not).  A resume continues the same random
streams with or without the flag; without it, the optimizer stays fused (its settings come from the
checkpoint) but takes the float64 learning rate, so only a resume with the flag is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from ssl_bench.config import RunConfig
from ssl_bench.errors import UserError
from ssl_bench.run.sampling import IndexStream, to_device
from ssl_bench.run.state import Training
from ssl_bench.smoothing import Smoother

# Algorithms whose loss reads neither ``batch.progress`` nor state kept on the host, and logs only tensors:
# a captured step of theirs is the eager step.  (MixMatch, ReMixMatch, UDA, Mean Teacher, Pi-model, Pseudo-
# label, AdaMatch, Dash, SimMatch read the progress for ramp-ups and schedules; FlexMatch, FreeMatch and
# SoftMatch keep per-class state whose host-side handling is not audited for capture yet.)
CAPTURABLE_ALGORITHMS: tuple[str, ...] = ("fixmatch", "supervised")
# Eager steps before the capture, on a side stream: PyTorch's whole-network capture example warms up 3
# iterations (docs, "CUDA Graphs", whole-network capture); they also make the momentum buffers and every cache
# (normalisation constants, smoother plans) that must exist before capture.
WARMUP_STEPS = 3
# Strategies whose update issues the same kernels with the same constants at every step, given a constant
# momentum schedule (ssl_bench/smoothing/builtins.py); swa and plug-ins run eagerly after each replay.
_STEP_INVARIANT_STRATEGIES = ("none", "tma", "se", "sts")


def check_supported(config: RunConfig, device: torch.device, data_parallel: bool) -> None:
    """Refuse ``--cuda-graphs`` where it cannot run, with one line naming the setting and the fix."""
    if not config.cuda_graphs:
        return
    if device.type != "cuda":
        raise UserError(f"--cuda-graphs captures the training step in a CUDA graph and this run is on {device}; "
                        f"drop --cuda-graphs (or run on a GPU: --device cuda)")
    if config.compile:
        raise UserError("--cuda-graphs with --compile: choose one (torch.compile(mode='reduce-overhead') makes its "
                        "own CUDA graphs of the student; --cuda-graphs captures the whole step eagerly)")
    if data_parallel:
        raise UserError("--cuda-graphs under torchrun: the gradient all-reduce is not captured; drop --cuda-graphs "
                        "or run one process")
    if config.algorithm not in CAPTURABLE_ALGORITHMS:
        raise UserError(f"--cuda-graphs with --alg {config.algorithm}: its step is not captured yet (its loss reads "
                        f"the training progress or keeps host state, which a graph would freeze); choose from "
                        f"{list(CAPTURABLE_ALGORITHMS)} or drop --cuda-graphs")


def captured_in_graph(smoother: Smoother) -> bool:
    """Whether this smoother's update goes into the graph (the same kernels and constants at every step)."""
    return (smoother.strategy in _STEP_INVARIANT_STRATEGIES
            and smoother.settings.get("schedule", "constant") == "constant")


class _DeferredSmoother:
    """Stands in for an eager smoother during the capture: its update is made after each replay instead."""

    def update(self, *args: object, **kwargs: object) -> None:
        pass


class _NoSchedule:
    """Stands in for the LR scheduler during the capture: the schedule steps on the host after each replay."""

    def step(self) -> None:
        pass


class _TensorLearningRate:
    """Fused SGD reading its learning rate from float32 device tensors, one per param group, during ``step``.

    Optimizer step pre- and post-hooks swap each group's float ``lr`` for its tensor and back, so that the
    scheduler, the records and the checkpoints keep seeing floats.  The tensor is filled from the float
    before every eager step (a fill kernel with the value as its argument: no host sync); during the capture
    only the swap happens and :meth:`fill` runs before every replay.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        self.tensors = [torch.zeros((), dtype=torch.float32, device=device) for _ in optimizer.param_groups]
        self.floats: list[float] = []
        self.capturing = False          # set by GraphedSteps around the capture
        for group in optimizer.param_groups:
            group["fused"], group["foreach"] = True, False
        optimizer.register_step_pre_hook(self._before)
        optimizer.register_step_post_hook(self._after)

    def fill(self) -> None:
        for group, tensor in zip(self.optimizer.param_groups, self.tensors, strict=True):
            tensor.fill_(group["lr"])

    def _before(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if not self.capturing:
            self.fill()
        self.floats = [group["lr"] for group in optimizer.param_groups]
        for group, tensor in zip(optimizer.param_groups, self.tensors, strict=True):
            group["lr"] = tensor

    def _after(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group, value in zip(optimizer.param_groups, self.floats, strict=True):
            group["lr"] = value


class GraphedSteps:
    """``step()`` runs one training step: eager for the first ``warmup`` calls, then captured once and replayed.

    Build it when the loop starts (after a resume has restored the training), and call it instead of
    ``training_step(training, next_batch(training))``; it returns the step's logs (device tensors).
    """

    def __init__(self, training: Training, warmup: int = WARMUP_STEPS) -> None:
        check_supported(training.config, training.device, training.ranks.enabled)
        if warmup < 1:
            raise ValueError(f"warmup={warmup}: at least 1 eager step comes before the capture (the first step "
                             f"reads the losses back once, and creates the optimizer's momentum buffers)")
        self.training = training
        self.warmup = warmup
        self.eager_steps = 0
        self.lr = _TensorLearningRate(training.optimizer, training.device)
        self.side_stream = torch.cuda.Stream(training.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.draws: list[tuple[IndexStream, int]] = []     # what next_batch draws, learnt in the last warm-up step
        self.inputs: list[Tensor] = []                     # the graph's static index buffers, in draw order
        self.logs: dict[str, Tensor] = {}                  # the graph's log tensors, overwritten by every replay
        # by identity (Teacher is a dataclass: == would compare its fields)
        self.eager_teachers = {id(t) for t in training.teachers if not captured_in_graph(t.smoother)}

    def __call__(self) -> dict[str, Tensor]:
        if self.graph is None and self.eager_steps < self.warmup:
            return self._eager_step(record_draws=self.eager_steps == self.warmup - 1)
        if self.graph is None:
            self._capture()
        return self._replay()

    # -- warm-up -----------------------------------------------------------------------------------------------

    def _eager_step(self, record_draws: bool) -> dict[str, Tensor]:
        from ssl_bench.run.loop import next_batch, training_step  # the loop imports this module

        draws = []

        def draw(stream: IndexStream, n: int) -> Tensor:
            draws.append((stream, n))
            return to_device(stream.next(n), self.training.device)

        current = torch.cuda.current_stream(self.training.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            logs = training_step(self.training, next_batch(self.training, draw=draw))
        current.wait_stream(self.side_stream)
        for value in logs.values():          # made on the side stream, read and freed on the current one
            value.record_stream(current)
        self.eager_steps += 1
        if record_draws:
            self.draws = draws
        return logs

    # -- capture -----------------------------------------------------------------------------------------------

    def _capture(self) -> None:
        from ssl_bench.run.loop import next_batch, training_step

        t = self.training
        # zeros, not empty: valid indices even if something ran the captured work before the first fill
        self.inputs = [torch.zeros(n, dtype=torch.int64, device=t.device) for _, n in self.draws]
        order = iter(zip(self.draws, self.inputs, strict=True))

        def static_draw(stream: IndexStream, n: int) -> Tensor:
            (expected, size), buffer = next(order)
            if stream is not expected or n != size:
                raise RuntimeError("next_batch drew other indices during the capture than in the warm-up; a bug in "
                                   "ssl_bench/run/cuda_graphs.py")
            return buffer

        graph = torch.cuda.CUDAGraph()
        for generator in self._generators():
            if generator.device.type == "cuda":
                graph.register_generator_state(generator)
        with self._python_state_kept():
            with torch.cuda.graph(graph):
                logs = training_step(t, next_batch(t, draw=static_draw))
        self.logs = logs
        self.graph = graph

    def _generators(self) -> list[torch.Generator]:
        """Every generator the captured step draws from: the augmentation's, the algorithm's, and the random
        captured smoothers' (their offsets advance with each replay)."""
        t = self.training
        smoothers = [x.smoother for x in t.teachers if id(x) not in self.eager_teachers]
        return [t.streams.augment, t.streams.algorithm, *(s.generator for s in smoothers if s.generator is not None)]

    @contextlib.contextmanager
    def _python_state_kept(self) -> Iterator[None]:
        """The capture runs the step's Python once without it being a step: the step counter, the smoothers'
        update counts and the LR schedule are put back, and eager smoothers are left out of the graph."""
        t = self.training
        step, scheduler = t.step, t.scheduler
        counts = [x.smoother.num_updates for x in t.teachers]
        smoothers = [x.smoother for x in t.teachers]
        t.scheduler = _NoSchedule()
        self.lr.capturing = True
        for x in t.teachers:
            if id(x) in self.eager_teachers:
                x.smoother = _DeferredSmoother()
        try:
            yield
        finally:
            t.step, t.scheduler = step, scheduler
            self.lr.capturing = False
            for x, smoother, count in zip(t.teachers, smoothers, counts, strict=True):
                x.smoother = smoother
                smoother.num_updates = count

    # -- replay ------------------------------------------------------------------------------------------------

    def _replay(self) -> dict[str, Tensor]:
        t = self.training
        for (stream, n), buffer in zip(self.draws, self.inputs, strict=True):
            # pinned, non-blocking: the caching host allocator keeps the host block until the copy has run
            buffer.copy_(stream.next(n).pin_memory(), non_blocking=True)
        self.lr.fill()
        self.graph.replay()
        # What training_step does after the optimizer step, for what the graph left out (its order: the
        # schedule, then each teacher's update with this step's index, then the counter).
        t.scheduler.step()
        for x in t.teachers:
            if id(x) in self.eager_teachers:
                x.smoother.update(x.model, t.student, step=t.step, total_steps=t.config.steps)
            else:
                x.smoother.num_updates += 1
        t.step += 1
        return {key: value.clone() for key, value in self.logs.items()}


