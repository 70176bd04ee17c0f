"""Each algorithm's loss on a tiny hand-made batch against a hand-worked value.

Loss weights are read from the built algorithm (their reference values are pinned once, in
``test_algorithm_reference.py``); masks, targets, mixing and ramps are worked out here.

The "model" is a linear map ``logits = flatten(x) @ W^T`` with ``W`` chosen by the test (``W = I`` makes each
input row its own logits), so every mask, target, mixed row and loss can be written out by hand. Expected
values use plain torch arithmetic written here (``logsumexp``, explicit softmax / squares), not
``ssl_bench.functional``. Each test also compares the gradient w.r.t. ``W`` with that of the hand-written loss
whose targets are constants: if an algorithm let gradient flow through its targets, the gradients differ.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, build_algorithm

# --- a model whose logits the test controls -----------------------------------------------------------------


class LinearLogits(nn.Module):
    """``logits = flatten(x) @ W^T``; ``features`` = the flattened input, ``classifier`` = the map ``W``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.num_features = weight.shape[1]
        self.classifier = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def ce_rows(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy with integer labels, written out: logsumexp(z) - z_y."""
    return torch.logsumexp(z, dim=-1) - z.gather(1, y[:, None]).squeeze(1)


def soft_ce_rows(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return -(q * (z - torch.logsumexp(z, dim=-1, keepdim=True))).sum(-1)


def ce(logit_row, label) -> float:
    """Cross-entropy of one row of python floats: log sum exp - z_label."""
    return math.log(sum(math.exp(v) for v in logit_row)) - logit_row[label]


def assert_same_gradient(total: torch.Tensor, expected: torch.Tensor, weight: torch.Tensor) -> None:
    (got,) = torch.autograd.grad(total, weight, retain_graph=True)
    (want,) = torch.autograd.grad(expected, weight, retain_graph=True)
    torch.testing.assert_close(got, want)


def assert_terms_sum_to_total(losses) -> None:
    torch.testing.assert_close(sum(losses.terms.values()), losses.total)


# --- FixMatch -----------------------------------------------------------------------------------------------


def test_fixmatch_mask_pseudo_labels_and_total_hand_worked():
    model = LinearLogits(torch.eye(2))
    x, y = t([[2, 0], [0, 1]]), torch.tensor([0, 1])
    u_weak = t([[3, 0], [0.5, 0], [0, 4]])   # confidences sigmoid(3)=.953, sigmoid(0.5)=.622, sigmoid(4)=.982
    u_strong = t([[1, 0], [0, 2], [2, 1]])
    alg = build_algorithm("fixmatch", {"lambda_u": "2"})   # a weight other than 1, so it must be applied
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u_weak, u_strong), progress=0.5, num_classes=2))

    # Mask (1, 0, 1) at tau = 0.95; pseudo-labels (0, -, 1); the masked row counts zero in the mean over 3.
    supervised = (ce([2, 0], 0) + ce([0, 1], 1)) / 2
    unsupervised = (ce([1, 0], 0) + 0.0 + ce([2, 1], 1)) / 3
    assert losses.logs["mask_rate"].item() == pytest.approx(2 / 3)
    assert losses.terms["supervised"].item() == pytest.approx(supervised, rel=1e-6)
    assert losses.terms["unsupervised"].item() == pytest.approx(2 * unsupervised, rel=1e-6)
    assert losses.total.item() == pytest.approx(supervised + 2 * unsupervised, rel=1e-6)
    assert_terms_sum_to_total(losses)

    w = model.classifier.weight
    expected = ce_rows(x @ w.T, y).mean() + 2 * (ce_rows(u_strong @ w.T, torch.tensor([0, 0, 1]))
                                                 * t([1, 0, 1])).mean()
    assert_same_gradient(losses.total, expected, w)


def test_fixmatch_weak_probability_exactly_at_the_threshold_is_confident():
    # Logits (0, 0, -100) give probabilities exactly (0.5, 0.5, ~0) in float32 (exp(0) / 2 is exact; e^-100 is
    # lost in the sum). tau = 0.5 keeps that row (fixmatch.py: pseudo_mask = max p >= confidence); the row
    # (0, 0, 0), at 1/3, is masked.
    model = LinearLogits(torch.eye(3))
    u_weak = t([[0, 0, -100], [0, 0, 0]])
    assert softmax(u_weak)[0, :2].tolist() == [0.5, 0.5]
    alg = build_algorithm("fixmatch", {"threshold": "0.5"})
    batch = Batch(x=t([[1, 0, 0]]), y=torch.tensor([0]), u=(u_weak, u_weak), progress=0.5, num_classes=3)
    losses = alg.loss(model, None, batch)
    assert losses.logs["mask_rate"].item() == 0.5


# --- Pi-Model -----------------------------------------------------------------------------------------------


def test_pi_model_mse_between_two_passes_with_linear_rampup():
    model = LinearLogits(t([[1, 0], [0.5, 1]]))
    w = model.classifier.weight
    x, y = t([[1, 0], [0, 2]]), torch.tensor([0, 1])
    u_1, u_2 = t([[2, 0], [0, 1]]), t([[1, 1], [0, 3]])
    alg = build_algorithm("pi_model")
    # progress 0.2 of a linear ramp ending at 0.4 (pi_model.py warmup_pos): half the weight.
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u_1, u_2), progress=0.2, num_classes=2))

    weight = alg.lambda_u * 0.5
    target = softmax(u_1 @ w.T).detach()   # the first pass is the constant target
    consistency = ((softmax(u_2 @ w.T) - target) ** 2).sum(-1).div(2).mean()
    expected = ce_rows(x @ w.T, y).mean() + weight * consistency
    assert losses.logs["unsup_weight"] == pytest.approx(weight)
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert_terms_sum_to_total(losses)
    assert_same_gradient(losses.total, expected, w)


# --- Mean Teacher -------------------------------------------------------------------------------------------


def test_mean_teacher_student_view_against_teacher_view_and_teacher_gets_no_gradient():
    student = LinearLogits(torch.eye(2))
    teacher = LinearLogits(t([[2, 0], [0, 0.5]])).requires_grad_(False)
    x, y = t([[1, 0], [0, 1]]), torch.tensor([0, 1])
    u_teacher, u_student = t([[1, 0], [0, 2]]), t([[0.5, 0], [1, 1]])
    alg = build_algorithm("mean_teacher")
    assert alg.targets_from == "teacher"
    batch = Batch(x=x, y=y, u=(u_teacher, u_student), progress=1.0, num_classes=2)
    losses = alg.loss(student, teacher, batch)

    w = student.classifier.weight
    target = softmax(u_teacher @ teacher.classifier.weight.T)   # teacher logits (2, 0) and (0, 1)
    consistency = ((softmax(u_student @ w.T) - target) ** 2).sum(-1).div(2).mean()
    expected = ce_rows(x @ w.T, y).mean() + alg.lambda_u * consistency   # ramp finished at progress 1
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert_terms_sum_to_total(losses)
    assert_same_gradient(losses.total, expected, w)
    losses.total.backward()
    assert teacher.classifier.weight.grad is None
    assert student.classifier.weight.grad is not None


# --- Pseudo-Label -------------------------------------------------------------------------------------------


def test_pseudo_label_trains_confident_rows_on_their_own_argmax():
    model = LinearLogits(torch.eye(2))
    x, y = t([[2, 0], [0, 1]]), torch.tensor([0, 1])
    u = t([[3, 0], [0.5, 0], [0, 4]])   # mask (1, 0, 1), pseudo-labels (0, 0, 1)
    alg = build_algorithm("pseudo_label", {"lambda_u": "3"})   # a weight other than 1, so it must be applied
    # Linear ramp over 40 % of training: half the weight at progress 0.2.
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u,), progress=0.2, num_classes=2))

    supervised = (ce([2, 0], 0) + ce([0, 1], 1)) / 2
    pseudo = (ce([3, 0], 0) + 0.0 + ce([0, 4], 1)) / 3
    assert losses.logs["mask_rate"].item() == pytest.approx(2 / 3)
    assert losses.total.item() == pytest.approx(supervised + 0.5 * alg.lambda_u * pseudo, rel=1e-6)
    assert_terms_sum_to_total(losses)

    w = model.classifier.weight
    pseudo_rows = ce_rows(u @ w.T, torch.tensor([0, 0, 1])) * t([1, 0, 1])
    expected = ce_rows(x @ w.T, y).mean() + 0.5 * alg.lambda_u * pseudo_rows.mean()
    assert_same_gradient(losses.total, expected, w)


def test_pseudo_label_probability_exactly_at_the_threshold_is_not_confident():
    # pseudo_label.py compares strictly (tf.greater): p = 0.5 exactly (logits (0, 0, -100), see the FixMatch
    # test) does not clear tau = 0.5; the row (1e-3, 0, -100), just above 0.5, does.
    model = LinearLogits(torch.eye(3))
    u = t([[0, 0, -100], [1e-3, 0, -100]])
    alg = build_algorithm("pseudo_label", {"threshold": "0.5"})
    batch = Batch(x=t([[1, 0, 0]]), y=torch.tensor([0]), u=(u,), progress=1.0, num_classes=3)
    losses = alg.loss(model, None, batch)
    assert losses.logs["mask_rate"].item() == 0.5


def test_pseudo_label_with_threshold_zero_is_lee_2013():
    model = LinearLogits(torch.eye(2))
    u = t([[3, 0], [0.5, 0], [0, 4]])
    alg = build_algorithm("pseudo_label", {"threshold": "0"})
    batch = Batch(x=t([[1, 0]]), y=torch.tensor([0]), u=(u,), progress=1.0, num_classes=2)
    losses = alg.loss(model, None, batch)
    assert losses.logs["mask_rate"].item() == 1.0
    expected = (ce([3, 0], 0) + ce([0.5, 0], 0) + ce([0, 4], 1)) / 3
    assert losses.terms["unsupervised"].item() == pytest.approx(expected, rel=1e-6)


# --- UDA ----------------------------------------------------------------------------------------------------


def kl_row(q, z) -> float:
    log_p = [v - math.log(sum(math.exp(u) for u in z)) for v in z]
    return sum(qi * (math.log(qi) - lp) for qi, lp in zip(q, log_p, strict=True) if qi > 0)


def test_uda_paper_setting_sharpened_kl_on_confident_rows_hand_worked():
    model = LinearLogits(torch.eye(2))
    x, y = t([[2, 0], [0, 1]]), torch.tensor([0, 1])
    u_weak = t([[2, 0], [0.5, 0], [0, 3]])   # confidences 0.881, 0.622, 0.953 -> mask (1, 0, 1) at 0.8
    u_strong = t([[1, 0], [0, 2], [2, 1]])
    alg = build_algorithm("uda", {"threshold": "0.8", "temperature": "0.4"})   # the UDA paper's CIFAR-10
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u_weak, u_strong), progress=0.5, num_classes=2))

    # Targets softmax(z_weak / 0.4): row 0 (e^5, 1) / (e^5 + 1), row 2 (1, e^7.5) / (1 + e^7.5).
    q0 = [math.exp(5) / (math.exp(5) + 1), 1 / (math.exp(5) + 1)]
    q2 = [1 / (1 + math.exp(7.5)), math.exp(7.5) / (1 + math.exp(7.5))]
    unsupervised = (kl_row(q0, [1, 0]) + 0.0 + kl_row(q2, [2, 1])) / 3
    supervised = (ce([2, 0], 0) + ce([0, 1], 1)) / 2
    assert losses.logs["mask_rate"].item() == pytest.approx(2 / 3)
    assert losses.terms["unsupervised"].item() == pytest.approx(unsupervised, rel=1e-5)
    assert losses.total.item() == pytest.approx(supervised + unsupervised, rel=1e-5)
    assert_terms_sum_to_total(losses)

    w = model.classifier.weight
    q = t([q0, [0.5, 0.5], q2])
    expected = ce_rows(x @ w.T, y).mean() + (soft_ce_rows(u_strong @ w.T, q) * t([1, 0, 1])).mean()
    assert_same_gradient(losses.total, expected, w)   # KL and soft CE differ by a constant


def test_uda_reference_defaults_unsharpened_kl_at_threshold_095():
    # uda.py flags: confidence 0.95, temperature 1 (the target is the weak view's own softmax).
    model = LinearLogits(torch.eye(2))
    x, y = t([[2, 0], [0, 1]]), torch.tensor([0, 1])
    u_weak = t([[3, 0], [2, 0], [0, 4]])     # confidences 0.953, 0.881, 0.982 -> mask (1, 0, 1)
    u_strong = t([[1, 0], [0, 2], [2, 1]])
    losses = build_algorithm("uda").loss(model, None, Batch(x=x, y=y, u=(u_weak, u_strong), progress=0.5,
                                                            num_classes=2))
    q0 = [math.exp(3) / (math.exp(3) + 1), 1 / (math.exp(3) + 1)]
    q2 = [1 / (1 + math.exp(4)), math.exp(4) / (1 + math.exp(4))]
    assert losses.logs["mask_rate"].item() == pytest.approx(2 / 3)
    assert losses.terms["unsupervised"].item() == pytest.approx((kl_row(q0, [1, 0]) + kl_row(q2, [2, 1])) / 3,
                                                                rel=1e-5)


def test_uda_linear_tsa_drops_labelled_rows_above_eta():
    model = LinearLogits(torch.eye(2))
    # eta = 0.5 * (1 - 1/2) + 1/2 = 0.75 at t/T = 0.5; p(correct) = 0.881 (dropped) and 0.622 (kept).
    x, y = t([[2, 0], [0, 0.5]]), torch.tensor([0, 1])
    u = t([[0, 0]])
    alg = build_algorithm("uda", {"tsa": "linear", "tsa_end": "1"})   # the paper's T = all of training
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u, u), progress=0.5, num_classes=2))
    assert losses.terms["supervised"].item() == pytest.approx(ce([0, 0.5], 1), rel=1e-6)
    assert losses.logs["tsa_rate"].item() == pytest.approx(0.5)
    # The reference schedule ends at 1/16 of training (uda.py tsa_pos = 8): t/T = 0.5 at progress 1/32.
    alg = build_algorithm("uda", {"tsa": "linear"})
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u, u), progress=1 / 32, num_classes=2))
    assert losses.logs["tsa_rate"].item() == pytest.approx(0.5)


# --- MixMatch -----------------------------------------------------------------------------------------------


def test_mixmatch_guess_sharpen_mixup_and_losses_hand_worked(monkeypatch):
    model = LinearLogits(torch.eye(2))
    x, y = t([[1, 0], [0, 1]]), torch.tensor([0, 1])
    u_1, u_2 = t([[2, 0], [0, 1]]), t([[1, 0], [0, 3]])
    lam = t([0.9, 0.8, 0.7, 0.6, 0.75, 0.55])
    perm = torch.tensor([5, 4, 3, 2, 1, 0])

    generator = torch.Generator()

    def fixed_mixup_sample(num, alpha, gen):
        assert num == 6 and alpha == 0.5 and gen is generator   # mixmatch.py flag beta 0.5; the batch's draws
        return lam, perm

    monkeypatch.setattr(SF, "mixup_sample", fixed_mixup_sample)
    alg = build_algorithm("mixmatch")
    batch = Batch(x=x, y=y, u=(u_1, u_2), progress=0.5, num_classes=2, generator=generator)
    losses = alg.loss(model, None, batch)

    # Guess: mean of the K = 2 predictions, sharpened with T = 0.5 (square and renormalise).
    p_bar = (softmax(u_1) + softmax(u_2)) / 2
    guess = p_bar ** 2 / (p_bar ** 2).sum(-1, keepdim=True)
    inputs = torch.cat([x, u_1, u_2])
    targets = torch.cat([torch.eye(2), guess, guess])
    mixed_in = lam[:, None] * inputs + (1 - lam[:, None]) * inputs[perm]
    mixed_t = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
    assert mixed_in[0].tolist() == pytest.approx([0.9 * 1 + 0.1 * 0, 0.9 * 0 + 0.1 * 3])   # x_0 with u_2[1]

    w = model.classifier.weight
    logits = mixed_in @ w.T
    l_x = soft_ce_rows(logits[:2], mixed_t[:2]).mean()
    l_u = ((softmax(logits[2:]) - mixed_t[2:]) ** 2).mean()   # 1 / (L |U'|) sum of squares
    expected = l_x + alg.lambda_u * l_u                        # lambda_U ramp finished (1/64 < 0.5)
    assert losses.terms["supervised"].item() == pytest.approx(l_x.item(), rel=1e-6)
    assert losses.logs["l2u"].item() == pytest.approx(l_u.item(), rel=1e-6)
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert_terms_sum_to_total(losses)
    assert_same_gradient(losses.total, expected, w)


def test_mixmatch_lambda_u_ramps_linearly_over_the_first_64th():
    model = LinearLogits(torch.eye(2))
    batch = Batch(x=t([[1, 0]]), y=torch.tensor([0]), u=(t([[1, 0]]), t([[0, 1]])), progress=1 / 128,
                  num_classes=2, generator=torch.Generator())
    alg = build_algorithm("mixmatch")
    losses = alg.loss(model, None, batch)
    assert losses.logs["unsup_weight"] == pytest.approx(alg.lambda_u / 2)   # half-way up the ramp


# --- ReMixMatch ---------------------------------------------------------------------------------------------


def img(a, b, c, d) -> list:
    return [[[a, b], [c, d]]]   # one channel, 2 x 2


def test_remixmatch_alignment_mixup_pre_mixup_rotation_hand_worked(monkeypatch):
    # Logits are the top row of each 2 x 2 image.
    model = LinearLogits(t([[1, 0, 0, 0], [0, 1, 0, 0]]))
    alg = build_algorithm("remixmatch", {"k": "2"})   # two strong views
    state = alg.setup(model, 2)
    with torch.no_grad():
        state.rotation_head.weight.copy_(torch.eye(4))
        state.rotation_head.bias.zero_()
        state.p_model_history[:] = t([0.75, 0.25])   # the model has over-predicted class 0 lately
    x, y = t([img(1, 0, 0, 0), img(0, 1, 0, 0)]), torch.tensor([0, 1])
    u_weak = t([img(2, 0, 1, 1), img(0, 1, 0, 0)])
    s_1 = t([img(1, 0, 0, 2), img(0, 2, 1, 0)])
    s_2 = t([img(0, 0, 1, 1), img(1, 1, 0, 0)])
    lam = t([0.9, 0.8, 0.7, 0.6, 0.75, 0.55, 0.95, 0.65])
    perm = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0])
    monkeypatch.setattr(SF, "mixup_sample", lambda num, alpha, generator: (lam, perm))
    losses = alg.loss(model, None, Batch(x=x, y=y, u=(u_weak, s_1, s_2), progress=1.0, num_classes=2,
                                         generator=torch.Generator()))

    # Guess: p * p(y) / p~(y) = p * (0.5, 0.5) / (0.75, 0.25), proportional to (p_0, 3 p_1); then T = 0.5.
    p = softmax(t([[2, 0], [0, 1]]))
    aligned = p * t([1, 3])
    aligned = aligned / aligned.sum(-1, keepdim=True)
    guess = aligned ** 2 / (aligned ** 2).sum(-1, keepdim=True)

    w = model.classifier.weight
    inputs = torch.cat([x, u_weak, s_1, s_2])
    targets = torch.cat([torch.eye(2), guess, guess, guess])
    mixed_in = lam[:, None, None, None] * inputs + (1 - lam[:, None, None, None]) * inputs[perm]
    mixed_t = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
    logits = mixed_in.flatten(1) @ w.T
    l_x = soft_ce_rows(logits[:2], mixed_t[:2]).mean()
    l_u = soft_ce_rows(logits[2:], mixed_t[2:]).mean()
    pre_mixup = soft_ce_rows(s_1.flatten(1) @ w.T, guess).mean()
    # Rotation: row 0 unrotated (label 0); row 1 [[0, 2], [1, 0]] turned 90 degrees -> [[2, 0], [0, 1]]
    # (label 1).
    rotation = (ce([1, 0, 0, 2], 0) + ce([2, 0, 0, 1], 1)) / 2
    expected = l_x + alg.lambda_u * l_u + alg.lambda_u1 * pre_mixup + alg.lambda_rot * rotation

    assert losses.terms["supervised"].item() == pytest.approx(l_x.item(), rel=1e-5)
    assert losses.terms["unsupervised"].item() == pytest.approx(alg.lambda_u * l_u.item(), rel=1e-5)
    assert losses.terms["pre_mixup"].item() == pytest.approx(alg.lambda_u1 * pre_mixup.item(), rel=1e-5)
    assert losses.terms["rotation"].item() == pytest.approx(alg.lambda_rot * rotation, rel=1e-6)
    assert losses.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert_terms_sum_to_total(losses)
    assert_same_gradient(losses.total, expected, w)

    # The window slid by one batch (this batch's mean weak prediction at the end); the labelled distribution
    # moved 0.1 % towards this batch's mean one-hot, [0.5, 0.5], from uniform: it stays [0.5, 0.5].
    torch.testing.assert_close(state.p_model_history[-1], p.mean(0))
    torch.testing.assert_close(state.p_model_history[-2], t([0.75, 0.25]))
    torch.testing.assert_close(state.p_labelled, t([0.5, 0.5]))


def test_remixmatch_state_is_one_module_with_head_and_windows_and_loss_needs_setup():
    alg = build_algorithm("remixmatch", {"da_window": "8"})
    batch = Batch(x=t([img(1, 0, 0, 0)]), y=torch.tensor([0]), u=(t([img(1, 0, 0, 0)]),) * 2, progress=1.0,
                  num_classes=2, generator=torch.Generator())
    with pytest.raises(AlgorithmError, match="setup"):
        alg.loss(LinearLogits(t([[1, 0, 0, 0], [0, 1, 0, 0]])), None, batch)
    state = alg.setup(LinearLogits(t([[1, 0, 0, 0], [0, 1, 0, 0]])), 2)
    assert set(state.state_dict()) == {"rotation_head.weight", "rotation_head.bias",
                                       "p_model_history", "p_labelled"}
    assert state.p_model_history.shape == (8, 2)


def test_hyperparameters_are_validated_where_they_enter():
    with pytest.raises(AlgorithmError, match="rampup"):
        build_algorithm("mean_teacher", {"rampup": "cosine"})
    with pytest.raises(AlgorithmError, match="threshold"):
        build_algorithm("uda", {"threshold": "1.5"})
    with pytest.raises(AlgorithmError, match="da_target"):
        build_algorithm("remixmatch", {"da_target": "guess"})


def test_remixmatch_rotation_turns_row_i_by_i_mod_4_quarters():
    from ssl_bench.algorithm import load_algorithm_class

    module = sys.modules[load_algorithm_class("remixmatch").__module__]
    images = torch.arange(6 * 1 * 2 * 3, dtype=torch.float32).reshape(6, 1, 2, 3)[:, :, :, :2]  # 2x2 images
    rotated, labels = module.rotate_quarters(images)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]
    for i in range(6):  # reference: one row at a time
        assert torch.equal(rotated[i], torch.rot90(images[i], i % 4, dims=(-2, -1))), i
    assert not torch.equal(rotated[1], images[1])
