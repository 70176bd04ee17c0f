"""What torch._dynamo sees of a training step: the whole step (``next_batch`` + ``training_step``, FixMatch,
the smoke model, TMA) breaks into graphs only at the known places, and each compiled piece (the student's
forward + loss, the optimizer step, a smoother update) is one graph with no break.

Why the whole step cannot be one graph (torch 2.13), every break listed here so that a new one fails:

* the random draws of the augmentation (``draw_weak``: 3 calls of ``torch.rand`` / ``torch.randint`` per weak
  view; ``draw_ramc``: 6 per strong view), a ``generator=`` argument being a graph break in Dynamo by design.
  The draws are made up front into fixed-shape tensors (``augment.draw_*``), and the math that follows,
  ``apply_weak`` / ``apply_strong`` / ``normalize``, is one graph each (tests/test_augment_compile.py);
* ``optimizer.zero_grad`` (Dynamo skips ``Optimizer.zero_grad`` on purpose), ``losses.total.backward()``
  (Dynamo runs autograd's backward outside its graphs unless compiled autograd is on), the optimizer step
  (``torch.optim.optimizer._use_grad_for_differentiable`` calls ``torch._dynamo.graph_break()`` around every
  step, on purpose, see pytorch/pytorch#104053) and ``LRScheduler.step`` (skipped by Dynamo; plain Python on
  the param groups' floats).

A CUDA graph (``--cuda-graphs``) has none of these limits: it records the kernels, draws included.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from ssl_bench import augment
from ssl_bench.config import RunConfig
from ssl_bench.run.build import build_training
from ssl_bench.run.loop import next_batch, training_step

# (file, function) of the innermost user frame of every allowed break; see the module docstring.
ALLOWED_BREAKS = {
    ("ssl_bench/augment.py", "draw_weak"), ("ssl_bench/augment.py", "draw_ramc"),
    ("ssl_bench/augment.py", "weak_augment"), ("ssl_bench/augment.py", "strong_augment"),
    ("ssl_bench/run/loop.py", "training_step"), ("torch/optim/optimizer.py", "_use_grad"),
}
# graph_break_count of torch._dynamo.explain on one FixMatch step (labelled weak view, unlabelled weak and
# strong views) under torch 2.13: 15 generator draws (3 + 3 + 3 weak, 6 RAMC) and 3 in the training step
# proper (zero_grad, backward, optimizer/scheduler step as explain counts them).  A change here means a break
# appeared or went: update the number and the list above together.
WHOLE_STEP_BREAKS = 18


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(augment, "GROUP_BY_OP_ON_CPU", False)   # the static rounds a GPU runs
    training = build_training(RunConfig(algorithm="fixmatch", smooth="tma", dataset="digits", labels=20,
                                        profile="smoke", results_dir=str(tmp_path), device="cpu"))
    training.student.train()
    training_step(training, next_batch(training))   # the first step checks the losses (a deliberate read-back)
    torch._dynamo.reset()
    yield training
    torch._dynamo.reset()


def _where(reason) -> tuple[str, str]:
    frame = reason.user_stack[-1]
    path = frame.filename.replace("\\", "/")
    for root in ("ssl_bench/", "torch/"):
        if root in path:
            path = root + path.rsplit(root, 1)[1]
            break
    return path, frame.name


def test_the_whole_step_breaks_only_at_the_draws_and_the_optimizer_plumbing(run):
    explained = torch._dynamo.explain(lambda: training_step(run, next_batch(run)))()
    places = {_where(r) for r in explained.break_reasons}
    assert places <= ALLOWED_BREAKS, sorted(places - ALLOWED_BREAKS)
    assert explained.graph_break_count == WHOLE_STEP_BREAKS, [f"{_where(r)}: {str(r.reason).splitlines()[0]}"
                                                              for r in explained.break_reasons]


def test_forward_and_loss_optimizer_step_and_smoother_update_are_one_graph_each(run):
    batch = next_batch(run)
    teacher = run.teachers[0]
    pieces = {
        "forward + loss": lambda: run.algorithm.loss(run.train_model, run.teacher, batch).total,
        "smoother update (tma)": lambda: teacher.smoother.update(teacher.model, run.student, step=run.step,
                                                                 total_steps=run.config.steps),
    }
    for name, piece in pieces.items():
        explained = torch._dynamo.explain(piece)()
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (name, explained.break_reasons)
    run.algorithm.loss(run.train_model, run.teacher, batch).total.backward()
    explained = torch._dynamo.explain(run.optimizer.step)()
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_forward_and_loss_compile_fullgraph_once_for_every_step(run):
    """fullgraph=True (a break raises) and one trace for three steps' batches (new images, new progress)."""
    counter = CompileCounter()
    compiled = torch.compile(lambda b: run.algorithm.loss(run.train_model, run.teacher, b).total, backend=counter,
                             fullgraph=True, dynamic=False)
    for _ in range(3):
        batch = next_batch(run)
        assert torch.equal(compiled(batch), run.algorithm.loss(run.train_model, run.teacher, batch).total)
        run.step += 1
    assert counter.frame_count == 1
