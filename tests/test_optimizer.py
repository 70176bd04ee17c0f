"""The optimizer is part of the protocol: SGD with Nesterov momentum 0.9, weight decay on kernels only, and
FixMatch's cosine learning-rate decay, each against a hand-computed value.

Reference (google-research/fixmatch, fixmatch.py): ``tf.train.MomentumOptimizer(lr, 0.9, use_nesterov=True)``
minimising ``loss + wd * sum(l2_loss(v) for kernels)``, so the gradient of the decay term is ``wd * v`` on
kernels and 0 on biases / BatchNorm parameters; ``lr *= cos(lrate * 7 pi / (2 * 8))`` with
``lrate = step / total``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_bench.config import cosine_lr_factor
from ssl_bench.run.build import build_optimizer


def test_two_sgd_steps_match_a_hand_computed_nesterov_update_with_decay_on_kernels_only():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.copy_(torch.tensor([0.5]))
    lr, momentum, wd = 0.1, 0.9, 0.01
    optimizer = build_optimizer([layer.weight], [layer.bias], lr, momentum, wd)
    x = torch.tensor([[3.0, 1.0]])

    # Loss = output, so d/dw = x = (3, 1) and d/db = 1 at every step, whatever the parameters.
    w, b = [1.0, -2.0], 0.5
    buf_w, buf_b = [0.0, 0.0], 0.0
    for step in range(2):
        optimizer.zero_grad()
        layer(x).sum().backward()
        optimizer.step()
        # By hand: g = grad + wd * w (kernel only); buf = momentum * buf + g (buf = g at the first step);
        # Nesterov step: w -= lr * (g + momentum * buf).
        g_w = [3.0 + wd * w[0], 1.0 + wd * w[1]]
        g_b = 1.0                                       # no decay on the bias
        buf_w = [g if step == 0 else momentum * bw + g for bw, g in zip(buf_w, g_w, strict=True)]
        buf_b = g_b if step == 0 else momentum * buf_b + g_b
        w = [wi - lr * (g + momentum * bw) for wi, g, bw in zip(w, g_w, buf_w, strict=True)]
        b = b - lr * (g_b + momentum * buf_b)
        assert layer.weight.detach().flatten().tolist() == pytest.approx(w, rel=1e-6), step
        assert layer.bias.item() == pytest.approx(b, rel=1e-6), step
        if step == 0:   # the first step in closed form: p1 = p0 - lr (1 + momentum) g0
            assert layer.bias.item() == pytest.approx(0.5 - 0.1 * 1.9, rel=1e-6)


@pytest.mark.parametrize("total", [8, 1024, 2**20])
def test_cosine_learning_rate_factor_at_start_middle_and_end(total):
    # lr(k) = lr0 cos(7 pi k / (16 K)): 1 at k = 0, cos(7 pi / 32) at K / 2, cos(7 pi / 16) at K.
    assert cosine_lr_factor(0, total) == 1.0
    assert cosine_lr_factor(total // 2, total) == pytest.approx(math.cos(7 * math.pi / 32), rel=1e-12)
    assert cosine_lr_factor(total, total) == pytest.approx(math.cos(7 * math.pi / 16), rel=1e-12)
    assert cosine_lr_factor(total, total) == pytest.approx(0.19509032201612825, rel=1e-12)   # cos(78.75 deg)
