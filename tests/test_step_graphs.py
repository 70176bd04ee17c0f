"""What torch._dynamo sees of a training step: the whole step (``next_batch`` + ``training_step``; FixMatch with
TMA here, every algorithm of the sync test with TMA and STS under ``-m slow``) breaks only at the known places,
and each compiled piece (the student's forward + loss, the optimizer step, a smoother update) is one graph with
no break.

Why the whole step cannot be one graph (torch 2.13), every break listed here so that a new one fails:

* the random draws of the augmentation (``draw_weak``: 3 calls of ``torch.rand`` / ``torch.randint`` per weak
  view; ``draw_ramc``: 6 per strong view), a ``generator=`` argument being a graph break in Dynamo by design.
  The draws are made up front into fixed-shape tensors (``augment.draw_*``), and the math that follows,
  ``apply_weak`` / ``apply_strong`` / ``normalize``, is one graph each (tests/test_augment_compile.py); the
  same for MixUp's draws (MixMatch, ReMixMatch: ``functional.mixup_sample``) and the SE / STS gate
  (``random_(generator=)`` in ``smoothing/kernels.py``; ``Smoother.draw`` + ``update(drawn=True)`` is one graph,
  tests/test_smoothing_registry.py);
* ``optimizer.zero_grad`` (Dynamo skips ``Optimizer.zero_grad`` on purpose), ``losses.total.backward()``
  (Dynamo runs autograd's backward outside its graphs unless compiled autograd is on), the optimizer step
  (``torch.optim.optimizer._use_grad_for_differentiable`` calls ``torch._dynamo.graph_break()`` around every
  step, on purpose, see pytorch/pytorch#104053) and ``LRScheduler.step`` (skipped by Dynamo; plain Python on
  the param groups' floats).

A CUDA graph (``--cuda-graphs``) has none of these limits: it records the kernels, draws included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from ssl_bench import augment
from ssl_bench.config import RunConfig
from ssl_bench.run.build import build_training
from ssl_bench.run.loop import next_batch, training_step

# The statements at which torch._dynamo.explain breaks one training step, in a fresh interpreter: Dynamo's
# counts depend on what it compiled earlier in the process (automatic dynamic shapes survive
# torch._dynamo.reset()), so each count comes from a child process.  Every break is at a random draw with a
# generator= argument or in the optimizer plumbing (see the module docstring): nothing else may break.
PLUMBING = ("training.optimizer.zero_grad(set_to_none=True)", "losses.total.backward()",
            "training.optimizer.step()", "torch._dynamo.graph_break()", "training.scheduler.step()")
# FixMatch + TMA under torch 2.13: explain's graph_break_count, and the statements Dynamo logs a break at with
# how often (recompiles for the second and third shape of a draw included, hence more than the count).
FIXMATCH_TMA_BREAKS = 18
FIXMATCH_TMA_SITES = {
    "mirrored = torch.rand(n, generator=g, device=dev) < 0.5": 6,
    "top = torch.randint(0, 2 * _shift_pad(height) + 1, (n,), generator=g, device=dev)": 2,
    "left = torch.randint(0, 2 * _shift_pad(width) + 1, (n,), generator=g, device=dev)": 2,
    "ops = torch.randint(0, len(RAMC_OPS), shape, generator=g, device=dev)": 1,
    "levels = torch.randint(lo, hi + 1, shape, generator=g, device=dev)": 1,
    "applied = torch.rand(shape, generator=g, device=dev) < RAMC_OP_PROB": 1,
    "negated = torch.rand(shape, generator=g, device=dev) > 0.5": 1,
    "cutout_y = torch.randint(0, height, (n,), generator=g, device=dev)": 1,
    "cutout_x = torch.randint(0, width, (n,), generator=g, device=dev)": 1,
    **dict.fromkeys(PLUMBING, 1),
}
# Every algorithm of the sync test with TMA and with STS (whose gate draw, random_(generator=), adds breaks).
WHOLE_STEP_BREAKS = {
    ("fixmatch", "tma"): 18, ("fixmatch", "sts"): 21, ("mixmatch", "tma"): 13, ("mixmatch", "sts"): 17,
    ("remixmatch", "tma"): 16, ("remixmatch", "sts"): 20, ("uda", "tma"): 18, ("uda", "sts"): 21,
    ("mean_teacher", "tma"): 8, ("mean_teacher", "sts"): 12,
}
_EXPLAIN_ONE_STEP = """
import collections, io, json, linecache, logging, re, sys
import torch
from ssl_bench import augment
from ssl_bench.config import RunConfig
from ssl_bench.run.build import build_training
from ssl_bench.run.loop import next_batch, training_step
augment.GROUP_BY_OP_ON_CPU = False   # the static rounds a GPU runs
algorithm, smooth, folder = sys.argv[1:4]
run = build_training(RunConfig(algorithm=algorithm, smooth=smooth, dataset="digits", labels=20, profile="smoke",
                               results_dir=folder, device="cpu"))
run.student.train()
for t in run.teachers:
    t.model.train()
training_step(run, next_batch(run))   # the first step checks the losses (a deliberate read-back)
log = io.StringIO()
torch._logging.set_logs(graph_breaks=True)
logging.getLogger("torch._dynamo.symbolic_convert.__graph_breaks").addHandler(logging.StreamHandler(log))
explained = torch._dynamo.explain(lambda: training_step(run, next_batch(run)))()
sites = collections.Counter(linecache.getline(m[1], int(m[2])).strip()
                            for m in re.finditer(r"Graph break .*?in user code at (\\S+):(\\d+)", log.getvalue()))
print(json.dumps({"breaks": explained.graph_break_count, "sites": sites}))
"""


def explain_one_step(algorithm: str, smooth: str, folder) -> dict:
    """graph_break_count and the logged break statements of one training step, from a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", _EXPLAIN_ONE_STEP, algorithm, smooth, str(folder)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def test_the_whole_step_breaks_only_at_the_draws_and_the_optimizer_plumbing(tmp_path):
    result = explain_one_step("fixmatch", "tma", tmp_path)
    assert result["sites"] == FIXMATCH_TMA_SITES
    assert result["breaks"] == FIXMATCH_TMA_BREAKS


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, smooth", list(WHOLE_STEP_BREAKS))
def test_every_algorithms_step_breaks_only_at_draws_and_plumbing(algorithm, smooth, tmp_path):
    result = explain_one_step(algorithm, smooth, tmp_path)
    assert all("generator=" in site or site in PLUMBING for site in result["sites"]), result["sites"]
    assert result["breaks"] == WHOLE_STEP_BREAKS[algorithm, smooth], result


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
