"""ssl_bench.functional: each formula against a closed form or a hand-worked example."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import functional as SF

# --- sharpening ---------------------------------------------------------------------------------------------


def test_sharpen_with_t_half_squares_and_renormalises():
    # (0.6^2, 0.4^2) / (0.36 + 0.16) = (0.36, 0.16) / 0.52
    out = SF.sharpen(torch.tensor([[0.6, 0.4], [0.25, 0.75]]), 0.5)
    expected = torch.tensor([[0.36 / 0.52, 0.16 / 0.52], [0.0625 / 0.625, 0.5625 / 0.625]])
    torch.testing.assert_close(out, expected)


def test_sharpen_with_t_one_is_identity_and_of_softmax_is_softmax_over_t():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    p = logits.softmax(-1)
    torch.testing.assert_close(SF.sharpen(p, 1.0), p)
    torch.testing.assert_close(SF.sharpen(p, 0.4), (logits / 0.4).softmax(-1))


def test_sharpen_keeps_zero_probabilities_finite():
    out = SF.sharpen(torch.tensor([[1.0, 0.0]]), 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0]]))


def test_sharpen_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        SF.sharpen(torch.tensor([[0.5, 0.5]]), 0.0)


# --- confidence mask ----------------------------------------------------------------------------------------


def test_confidence_mask_keeps_rows_at_or_above_the_threshold():
    probs = torch.tensor([[0.96, 0.04], [0.6, 0.4], [0.05, 0.95], [0.5, 0.5]])
    torch.testing.assert_close(SF.confidence_mask(probs, 0.95), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(SF.confidence_mask(probs, 0.0), torch.ones(4))


def test_confidence_mask_strict_leaves_out_rows_exactly_at_the_threshold():
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [0.25, 0.75]])   # exact in binary
    torch.testing.assert_close(SF.confidence_mask(probs, 0.75), torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(SF.confidence_mask(probs, 0.75, inclusive=False), torch.zeros(3))


# --- MixUp --------------------------------------------------------------------------------------------------


def test_mixup_with_fixed_lambda_and_swap_partner():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed_x, mixed_y = SF.mixup(x, y, 0.7, torch.tensor([1, 0]))
    expected = torch.tensor([[0.7, 0.3], [0.3, 0.7]])
    torch.testing.assert_close(mixed_x, expected)
    torch.testing.assert_close(mixed_y, expected)


def test_mixup_with_one_lambda_per_row_broadcasts_over_image_dimensions():
    x = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2, 2)
    y = torch.eye(3)
    lam = torch.tensor([1.0, 0.5, 0.75])
    perm = torch.tensor([2, 0, 1])
    mixed_x, mixed_y = SF.mixup(x, y, lam, perm)
    torch.testing.assert_close(mixed_x[0], x[0])
    torch.testing.assert_close(mixed_x[1], 0.5 * x[1] + 0.5 * x[0])
    torch.testing.assert_close(mixed_x[2], 0.75 * x[2] + 0.25 * x[1])
    torch.testing.assert_close(mixed_y, torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]))


def test_mixup_sample_draws_max_of_beta_and_a_permutation_against_scipy():
    # lambda' = max(L, 1 - L), L ~ Beta(a, a): P(lambda' <= x) = 2 F_Beta(x) - 1 for x in [0.5, 1] (symmetry).
    # Kolmogorov-Smirnov against scipy's Beta CDF, an independent implementation.
    alpha = 0.75
    lam, perm = SF.mixup_sample(4000, alpha, torch.Generator().manual_seed(0))
    assert lam.shape == (4000,) and ((lam >= 0.5) & (lam <= 1.0)).all()
    assert torch.equal(perm.sort().values, torch.arange(4000))
    result = scipy.stats.kstest(lam.double().numpy(), lambda x: 2 * scipy.stats.beta.cdf(x, alpha, alpha) - 1)
    assert result.pvalue > 0.01, result
    # The same test rejects a different alpha, so it has the power to notice a wrong distribution.
    wrong = scipy.stats.kstest(lam.double().numpy(), lambda x: 2 * scipy.stats.beta.cdf(x, 0.3, 0.3) - 1)
    assert wrong.pvalue < 1e-6


def test_mixup_sample_draws_only_from_the_generator_it_is_given():
    a = SF.mixup_sample(16, 0.5, torch.Generator().manual_seed(3))
    torch.manual_seed(123)   # the global generator plays no part
    b = SF.mixup_sample(16, 0.5, torch.Generator().manual_seed(3))
    c = SF.mixup_sample(16, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    SF.mixup_sample(16, 0.5, generator)
    assert not torch.equal(generator.get_state(), state)   # the draws advanced the generator that was passed


# --- distribution alignment ---------------------------------------------------------------------------------


def test_distribution_alignment_hand_worked():
    # p * p_target / p_model = (0.5, 0.3, 0.2) * (1/3) / (0.5, 0.25, 0.25) = (1/3, 2/5, 4/15), summing to 1.
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    out = SF.distribution_alignment(probs, torch.tensor([0.5, 0.25, 0.25]), torch.full((3,), 1 / 3))
    torch.testing.assert_close(out, torch.tensor([[1 / 3, 2 / 5, 4 / 15]]), atol=1e-5, rtol=0)


def test_distribution_alignment_is_identity_when_model_matches_target():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    p = torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(SF.distribution_alignment(probs, p, p), probs)


def test_push_history_drops_the_oldest_row_and_appends_the_new_one():
    history = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    out = SF.push_history(history, torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.25, 0.75]]))
    torch.testing.assert_close(out.mean(0), torch.tensor([0.75 / 3, 2.25 / 3]))


# --- BatchNorm running statistics ---------------------------------------------------------------------------


def bn_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(2))
    net(torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1)))   # materialise the lazy layer
    return net.train()


def bn_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


def test_frozen_batchnorm_stats_keeps_running_stats_and_normalises_with_batch_stats():
    net = bn_net()
    x = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    before = bn_state(net)
    with SF.frozen_batchnorm_stats(net):
        frozen_out = net(x)
    frozen_out.sum().backward()   # a pass with gradient still back-propagates
    for key, value in bn_state(net).items():
        assert torch.equal(value, before[key]), key
    # Same output as an ordinary training-mode pass (batch statistics), which does move the statistics.
    torch.testing.assert_close(net(x), frozen_out)
    after = bn_state(net)
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"])
    assert after["1.num_batches_tracked"].item() == before["1.num_batches_tracked"].item() + 1


def test_frozen_batchnorm_stats_restores_tracking_after_an_error_and_leaves_eval_mode_alone():
    net = bn_net()
    with pytest.raises(RuntimeError), SF.frozen_batchnorm_stats(net):
        raise RuntimeError("inside")
    assert net[1].track_running_stats
    net.eval()
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    with SF.frozen_batchnorm_stats(net):
        frozen_eval = net(x)
    torch.testing.assert_close(frozen_eval, net(x))   # evaluation still uses the running statistics


# --- losses -------------------------------------------------------------------------------------------------


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 1, 2])
    one_hot = F.one_hot(y, 4).float()
    torch.testing.assert_close(SF.soft_cross_entropy(logits, one_hot), F.cross_entropy(logits, y))
    torch.testing.assert_close(SF.soft_cross_entropy(logits, one_hot, reduction="none"),
                               F.cross_entropy(logits, y, reduction="none"))


def test_soft_cross_entropy_with_soft_target_hand_worked():
    # logits (0, 0): log softmax = log 0.5 for both classes, so H(q, p) = log 2 for any q.
    out = SF.soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[0.3, 0.7]]))
    assert out.item() == pytest.approx(math.log(2))


def test_mse_consistency_value():
    # softmax(0, 0) = (0.5, 0.5); target (1, 0): ((0.5)^2 + (0.5)^2) / 2 classes = 0.25; second row is exact.
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(SF.mse_consistency(logits, target, reduction="none"),
                               torch.tensor([0.25, 0.0]))
    assert SF.mse_consistency(logits, target).item() == pytest.approx(0.125)


def test_kl_consistency_value_and_zero_at_the_target():
    # KL((1, 0) || (0.5, 0.5)) = 1 * log(1 / 0.5) = log 2; the 0 log 0 term is 0 (not NaN).
    kl = SF.kl_consistency(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert kl.item() == pytest.approx(math.log(2))
    logits = torch.tensor([[1.0, -2.0, 0.3]])
    assert SF.kl_consistency(logits, logits.softmax(-1)).item() == pytest.approx(0.0, abs=1e-6)


def test_reduction_must_be_mean_or_none():
    with pytest.raises(ValueError, match="reduction"):
        SF.soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), reduction="sum")


# --- schedules ----------------------------------------------------------------------------------------------


def test_sigmoid_rampup_at_start_midpoint_end_and_after():
    assert SF.sigmoid_rampup(0.0, 0.4) == pytest.approx(math.exp(-5.0))
    assert SF.sigmoid_rampup(0.2, 0.4) == pytest.approx(math.exp(-5.0 * 0.25))  # t = 0.5
    assert SF.sigmoid_rampup(0.4, 0.4) == pytest.approx(1.0)
    assert SF.sigmoid_rampup(0.9, 0.4) == pytest.approx(1.0)
    assert SF.sigmoid_rampup(0.0, 0.0) == 1.0  # no ramp


def test_linear_rampup_at_start_midpoint_end_and_after():
    assert SF.linear_rampup(0.0, 1 / 64) == 0.0
    assert SF.linear_rampup(1 / 128, 1 / 64) == pytest.approx(0.5)
    assert SF.linear_rampup(1 / 64, 1 / 64) == pytest.approx(1.0)
    assert SF.linear_rampup(1.0, 1 / 64) == 1.0
    assert SF.linear_rampup(0.3, 0.0) == 1.0


def test_rampup_dispatches_by_name_and_rejects_unknown_shapes():
    assert SF.rampup("sigmoid", 0.2, 0.4) == SF.sigmoid_rampup(0.2, 0.4)
    assert SF.rampup("linear", 0.2, 0.4) == SF.linear_rampup(0.2, 0.4)
    with pytest.raises(ValueError, match="shape"):
        SF.rampup("cosine", 0.2, 0.4)
    with pytest.raises(ValueError, match=">= 0"):
        SF.linear_rampup(0.2, -1.0)


def test_tsa_threshold_schedules():
    # eta = alpha (1 - 1/K) + 1/K with K = 10.
    assert SF.tsa_threshold("none", 0.3, 10) == 1.0
    assert SF.tsa_threshold("linear", 0.5, 10) == pytest.approx(0.5 * 0.9 + 0.1)
    assert SF.tsa_threshold("log", 0.0, 10) == pytest.approx(0.1)
    assert SF.tsa_threshold("log", 0.5, 10) == pytest.approx((1 - math.exp(-2.5)) * 0.9 + 0.1)
    assert SF.tsa_threshold("exp", 1.0, 10) == pytest.approx(1.0)
    assert SF.tsa_threshold("exp", 0.0, 10) == pytest.approx(math.exp(-5) * 0.9 + 0.1)
    with pytest.raises(ValueError, match="TSA"):
        SF.tsa_threshold("cosine", 0.5, 10)
