"""The fast-path options train the same model as the plain path: channels_last, bf16 autocast and
torch.compile change how a step is computed, not what it computes (smoke profile, digits, CPU, same seed,
same batches).

Each comparison builds two runs that differ in one option only. Both draw the same initial weights (the memory
format does not change values), the same index streams and the same augmentation generator, so they see the
same batches; any difference in the per-step losses comes from the arithmetic alone. The benchmark of what the
options buy is ``benchmarks/bench_step.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_bench.algorithm import Batch
from ssl_bench.cli import build_parser, settings_from_args
from ssl_bench.config import TEACHER_AXES, RunConfig
from ssl_bench.run.build import build_training
from ssl_bench.run.loop import next_batch, training_step
from ssl_bench.run.state import Training

# channels_last: both layouts go to oneDNN (mkldnn) convolutions, but an NHWC tensor gets other kernels with
# another blocking, which add the same products in another order; fp32 sums in another order differ in the
# last bits (unit roundoff 6e-8), so the losses are not bitwise equal. Measured: <= 2e-7 relative over the
# first four steps (4e-6 by step 8, as the weights drift apart); 1e-5 leaves a wide margin and still catches
# any real change (a wrong layout or a permuted channel changes the loss at the 1e-2 level).
CHANNELS_LAST_RTOL = 1e-5
CHANNELS_LAST_STEPS = 4
# bf16 autocast: convolution and linear inputs and weights are rounded to bf16 (8 significant bits, unit
# roundoff 2^-8 = 3.9e-3) and accumulated in fp32; softmax / cross-entropy run in fp32. A relative error of a
# few 2^-8 per rounded operand, partly averaging out over the sums, reaches the loss at ~1e-4 on the first
# step; afterwards the bf16 gradients move the weights slightly differently (measured: <= 4e-4 over the first
# three steps, 4e-3 by step 8). 2e-2 (about five bf16 roundoffs) bounds that for the first steps; a wrong cast
# (fp16 overflow, a bf16 loss reduction) or a broken autocast region is far outside it.
AMP_RTOL = 2e-2
AMP_STEPS = 3
# torch.compile (inductor, CPU): the convolutions stay oneDNN calls, but the generated C++ kernels fuse
# BatchNorm / LeakyReLU / the reductions and may sum in their own order, so fp32 results may differ in the
# last bits, as for channels_last (measured with torch 2.13 here: bitwise equal over the three steps; that is
# not promised). Compiling forward and backward takes ~30 s of CPU, hence @pytest.mark.slow
# (run: pytest -m slow).
COMPILE_RTOL = 1e-5
COMPILE_STEPS = 3


def train_steps(tmp_path: Path, steps: int, **options: bool) -> tuple[Training, list[float], Batch]:
    """Build a smoke run with ``options`` and take ``steps`` training steps; returns the run, the per-step
    losses (``training_step``'s ``loss`` log) and the last batch."""
    config = RunConfig(dataset="digits", labels=20, profile="smoke", device="cpu",
                       results_dir=str(tmp_path / "results"), **options)
    run = build_training(config)
    run.student.train()
    run.teacher.train()
    losses = []
    for _ in range(steps):
        batch = next_batch(run)
        losses.append(training_step(run, batch)["loss"].item())
    return run, losses, batch


def assert_close(fast: list[float], plain: list[float], rtol: float) -> None:
    assert all(torch.isfinite(torch.tensor(plain))), plain
    rel = [abs(f - p) / abs(p) for f, p in zip(fast, plain, strict=True)]
    assert max(rel) <= rtol, (f"relative loss differences per step {rel} exceed {rtol}: fast {fast}, "
                              f"plain {plain}")


def test_channels_last_gives_the_same_losses(tmp_path):
    _, plain, plain_batch = train_steps(tmp_path / "plain", CHANNELS_LAST_STEPS)
    run, fast, batch = train_steps(tmp_path / "fast", CHANNELS_LAST_STEPS, channels_last=True)
    # The option is in effect: the weights and the inputs are NHWC in memory.
    convs = [p for p in run.student.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert batch.x.is_contiguous(memory_format=torch.channels_last)
    assert not plain_batch.x.is_contiguous(memory_format=torch.channels_last)
    assert_close(fast, plain, CHANNELS_LAST_RTOL)


def test_bf16_autocast_losses_within_bf16_tolerance(tmp_path):
    _, plain, _ = train_steps(tmp_path / "plain", AMP_STEPS)
    run, fast, batch = train_steps(tmp_path / "fast", AMP_STEPS, amp=True)
    assert fast != plain, "amp=True gave bitwise fp32 losses: the autocast region did not run in bf16"
    # Autocast computes in bf16 but keeps the model's (master) weights in fp32.
    assert all(p.dtype == torch.float32 for p in run.student.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert run.train_model(batch.x).dtype == torch.bfloat16
    assert_close(fast, plain, AMP_RTOL)


@pytest.mark.slow
def test_compile_gives_the_same_losses(tmp_path):
    torch._dynamo.reset()
    _, plain, _ = train_steps(tmp_path / "plain", COMPILE_STEPS)
    run, fast, _ = train_steps(tmp_path / "fast", COMPILE_STEPS, compile=True)
    # The loss saw the compiled module, which shares its parameters with the plain student the smoother reads.
    assert run.train_model is not run.student
    assert isinstance(run.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert run.train_model._orig_mod is run.student
    assert_close(fast, plain, COMPILE_RTOL)


def test_cli_turns_every_fast_path_option_on_and_off():
    parser = build_parser()

    def options(*argv: str) -> tuple[bool, bool, bool]:
        config, _ = settings_from_args(parser.parse_args(["run", *argv]), TEACHER_AXES)
        return config.amp, config.channels_last, config.compile

    assert options("--amp", "--channels-last", "--compile") == (True, True, True)
    assert options("--no-amp", "--no-channels-last", "--no-compile") == (False, False, False)
    # The last flag wins, so a command that turned an option on can be overridden by appending --no-<option>.
    assert options("--amp", "--channels-last", "--compile",
                   "--no-amp", "--no-channels-last", "--no-compile") == (False, False, False)
