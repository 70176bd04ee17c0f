"""SoftMatch (Chen, Tao, Wang, Zhang, Heng, Qi, Huang, Savvides, Shinozaki, Raj, Xie & Wang, "SoftMatch:
Addressing the Quantity-Quality Trade-off in Semi-supervised Learning", ICLR 2023): every pseudo-label
counts, weighted by a truncated Gaussian of its confidence whose mean and variance follow the model.

    p~_w       =  DA(p_w) = Normalize(p_w * u / p-hat)       uniform alignment, p-hat an EMA of mean_u p_w
    mu_t       <- m mu_t + (1 - m) mean_u max p~_w            starts at 1/C
    sigma2_t   <- m sigma2_t + (1 - m) var_u max p~_w         unbiased batch variance, starts at 1
    lambda(p)  =  exp(-(min(max p - mu_t, 0))^2 / (2 sigma2_t / n_sigma^2))      1 above the mean
    loss       =  CE(x, y) + lambda_u * mean_u lambda(p~_w) CE(p_s, argmax p_w)

Targets come from the student (``targets_from = "student"``): weights and pseudo-labels are the trained
model's own weak-view predictions; the smoothed teacher is only the evaluated model.

State (``setup``): a ``SoftMatchState`` module holding, as buffers (checkpointed), the alignment's p-hat (and
its target), the count of updates, and mu_t, sigma2_t. All move *before* the weights of the same step are
computed, as USB's hooks do, from every rank's predictions under torchrun (``gather_from_ranks``, USB
``concat_all_gather``; the variance is the global batch's, not a mean of per-rank variances).

Reference settings (microsoft/Semi-supervised-learning, "USB", ``semilearn/algorithms/softmatch/``,
``semilearn/algorithms/hooks/dist_align.py`` and ``config/classic_cv/softmatch/softmatch_cifar10_40_0.yaml``; the
other CIFAR label budgets agree except for the weight decay):

* m = 0.999 (``ema_p``, for the alignment and the Gaussian), n_sigma = 2 (``n_sigma``), lambda_u = 1
  (``ulb_loss_ratio``), hard pseudo-labels (``hard_label: True``), alignment on (``dist_align: True``) towards
  the uniform distribution (``dist_uniform: True``; ``da_target=labelled`` follows an EMA of the labelled
  predictions instead, USB's ``p_target_type='model'``), one Gaussian for all classes (``per_class: False``;
  the per-class variant is not offered).
* ``DistAlignEMAHook``: p-hat starts at the first batch's mean (``p_model = None`` until then), the alignment
  adds 1e-6 to both distributions (``ssl_bench.functional.distribution_alignment``).
* As in USB the pseudo-label is the argmax of the *unaligned* weak prediction (``gen_ulb_targets`` gets
  ``logits_x_ulb_w``); the weight uses the aligned one.
* mu = 7 (``uratio``), lr 0.03, weight decay 5e-4 (CIFAR-10) / 1e-3 (CIFAR-100) (``weight_decay``).

Other choices: one forward over labelled, weak and strong images updates the BatchNorm statistics (USB
``use_cat: True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, gather_from_ranks, hp, register

CONFIG = "USB config/classic_cv/softmatch/softmatch_cifar10_40_0.yaml"


def truncated_gaussian_weight(confidence: Tensor, mean: Tensor | float, variance: Tensor | float,
                              n_sigma: float) -> Tensor:
    """SoftMatch's weight ``exp(-(min(c - mu, 0))^2 / (2 sigma^2 / n_sigma^2))``: 1 for ``c >= mu``."""
    gap = torch.clamp(confidence - mean, max=0.0)
    return torch.exp(-gap.square() / (2.0 * variance / n_sigma ** 2))


class SoftMatchState(nn.Module):
    """Distribution alignment's running averages and the Gaussian's running mean and variance."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))   # overwritten at step 1
        self.register_buffer("p_target", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        # USB SoftMatchWeightingHook.__init__: prob_max_mu_t = 1/C, prob_max_var_t = 1.
        self.register_buffer("mean", torch.tensor(1.0 / num_classes))
        self.register_buffer("variance", torch.tensor(1.0))

    @torch.no_grad()
    def align(self, probs_u: Tensor, probs_x: Tensor, momentum: float, da_target: str) -> None:
        """Move p-hat (and, for ``labelled``, the target) with a (global) batch (USB ``DistAlignEMAHook``)."""
        p_model, p_target = SF.moving_alignment_averages(self.p_model, self.p_target, self.updates > 0, probs_u,
                                                         probs_x, momentum, da_target)
        self.p_model.copy_(p_model)
        self.p_target.copy_(p_target)
        self.updates += 1

    @torch.no_grad()
    def update_gaussian(self, confidence: Tensor, momentum: float) -> None:
        """Move mu_t and sigma2_t with the (global) batch's aligned confidences (USB ``update``)."""
        self.mean.copy_(SF.ema_update(self.mean, confidence.mean(), momentum))
        self.variance.copy_(SF.ema_update(self.variance, confidence.var(correction=1), momentum))


@register("softmatch")
@dataclass
class SoftMatch:
    ema_p: float = hp(0.999, low=0.0, high=1.0, source=f"m, {CONFIG} ema_p")
    n_sigma: float = hp(2.0, low=0.0, open_low=True, source=f"{CONFIG} n_sigma")
    lambda_u: float = hp(1.0, low=0.0, source=f"{CONFIG} ulb_loss_ratio")
    dist_align: bool = hp(True, source=f"{CONFIG} dist_align")
    da_target: str = hp("uniform", choices=SF.ALIGNMENT_TARGETS, source=f"{CONFIG} dist_uniform: True")
    # Declared state, not a hyper-parameter: the module setup() returns (the loop checkpoints it).
    state: SoftMatchState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {"*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}, "cifar100": {"weight_decay": 1e-3}}
    reference_sources = {"*": f"{CONFIG} uratio / lr / weight_decay",
                         "cifar100": "USB config/classic_cv/softmatch/softmatch_cifar100_{400,2500,10000}_0.yaml "
                                     "weight_decay"}

    def setup(self, student: nn.Module, num_classes: int) -> nn.Module:
        """Create the alignment and Gaussian averages at their USB starting values."""
        self.state = SoftMatchState(num_classes)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("softmatch: call setup(student, num_classes) before loss(); the loop does this")
        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # 1. Uniform distribution alignment of the weak-view prediction (the averages move first).
        probs = logits_w.detach().float().softmax(dim=-1)
        if self.dist_align:
            probs_x = logits_x.detach().float().softmax(dim=-1)
            state.align(gather_from_ranks(probs), gather_from_ranks(probs_x), self.ema_p, self.da_target)
            probs = SF.distribution_alignment(probs, state.p_model, state.p_target)

        # 2. Truncated-Gaussian weights from the running mean and variance of the aligned confidence.
        confidence = probs.max(dim=-1).values
        state.update_gaussian(gather_from_ranks(confidence), self.ema_p)
        weight = truncated_gaussian_weight(confidence, state.mean, state.variance, self.n_sigma)

        pseudo_labels = logits_w.detach().argmax(dim=-1)   # USB: from the unaligned logits
        supervised = F.cross_entropy(logits_x, batch.y)
        unsupervised = (F.cross_entropy(logits_s, pseudo_labels, reduction="none") * weight).mean()
        return Losses(
            total=supervised + self.lambda_u * unsupervised,
            terms={"supervised": supervised, "unsupervised": self.lambda_u * unsupervised},
            logs={"mask_rate": weight.mean(), "confidence_mean": state.mean.detach().clone()},
        )
