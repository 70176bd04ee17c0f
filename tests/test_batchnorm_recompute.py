"""``buffers=recompute`` (SWA's BatchNorm recipe): the statistics are one pass over the training images, computed
before every evaluation; the updates leave them alone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ssl_bench.run.evaluate import recompute_batch_norm
from ssl_bench.smoothing import build_smoother


def test_recomputed_statistics_are_the_mean_and_unbiased_variance_of_the_images() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (12, 2, 3, 3), dtype=torch.uint8)
    model = nn.Sequential(nn.BatchNorm2d(2))
    model[0].running_mean.fill_(5.0)
    model.eval()
    recompute_batch_norm(model, images, batch_size=12, prepare=lambda x: x.float() / 255)
    x = images.float() / 255
    assert torch.allclose(model[0].running_mean, x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(model[0].running_var, x.var(dim=(0, 2, 3), unbiased=True), atol=1e-6)
    assert not model.training and model[0].momentum == 0.1            # mode and momentum restored
    # in batches of 4: the cumulative average of the three batch means (equal sizes: the overall mean)
    recompute_batch_norm(model, images, batch_size=4, prepare=lambda x: x.float() / 255)
    assert torch.allclose(model[0].running_mean, x.mean(dim=(0, 2, 3)), atol=1e-6)
    batch_vars = torch.stack([x[i:i + 4].var(dim=(0, 2, 3), unbiased=True) for i in (0, 4, 8)])
    assert torch.allclose(model[0].running_var, batch_vars.mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("strategy", ["tma", "sts", "swa"])
def test_updates_leave_recomputed_statistics_alone(strategy: str) -> None:
    student = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    teacher = copy.deepcopy(student)
    student[1].running_mean.fill_(3.0)
    teacher[1].running_mean.fill_(-1.0)
    smoother = build_smoother(strategy, buffers="recompute", generator=torch.Generator().manual_seed(0))
    smoother.update(teacher, student, step=9, total_steps=10)
    assert torch.equal(teacher[1].running_mean, torch.full((2,), -1.0))
    assert not torch.equal(teacher[0].weight, torch.full_like(teacher[0].weight, 0.0))


def test_a_recompute_teacher_gets_the_statistics_of_the_training_images(tmp_path) -> None:
    from ssl_bench.config import RunConfig
    from ssl_bench.run.build import build_training
    from ssl_bench.run.loop import recompute_teacher_statistics

    config = RunConfig(algorithm="fixmatch", dataset="digits", labels=20, profile="smoke", smooth="tma",
                       buffers="recompute", device="cpu", results_dir=str(tmp_path))
    training = build_training([config])
    teacher = training.teachers[0].model
    bn = next(m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    expected = copy.deepcopy(teacher)
    c = training.config
    recompute_batch_norm(expected, training.x_train, c.batch_size * (1 + c.mu), training.prepare)
    want = next(m for m in expected.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert not torch.equal(bn.running_mean, want.running_mean)          # the initial statistics are not these
    recompute_teacher_statistics(training)   # the loop calls it on every rank before each evaluation
    assert torch.equal(bn.running_mean, want.running_mean) and torch.equal(bn.running_var, want.running_var)
