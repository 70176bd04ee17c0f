"""AdaMatch (Berthelot, Roelofs, Sohn, Carlini & Kurakin, "AdaMatch: A Unified Approach to Semi-Supervised
Learning and Domain Adaptation", ICLR 2022), as USB runs it for semi-supervised learning: FixMatch with
distribution alignment and a threshold relative to the model's confidence on the labelled batch.

    p~_w     =  DA(p_w) = Normalize(p_w * p-hat_x / p-hat_u)    EMAs of the labelled / unlabelled predictions
    c_tau    =  tau * mean_x max_c p_x                           relative confidence threshold
    loss     =  CE(x, y) + lambda_u * mu(t) * mean_u 1[max p~_w >= c_tau] CE(p_s, argmax p~_w)

Targets come from the student (``targets_from = "student"``): threshold, alignment and pseudo-labels come
from the trained model's own predictions; the smoothed teacher is only the evaluated model.

State (``setup``): an ``AdaMatchState`` module holding the alignment's two averages and their update count as
buffers (checkpointed). They move before the step's alignment, from every rank's predictions under torchrun
(``gather_from_ranks``, USB ``concat_all_gather``); the relative threshold uses the global labelled batch.

Reference settings (microsoft/Semi-supervised-learning, "USB", ``semilearn/algorithms/adamatch/``,
``semilearn/algorithms/hooks/dist_align.py`` and ``config/classic_cv/adamatch/adamatch_cifar10_40_0.yaml``; the
other CIFAR label budgets agree except for the weight decay):

* tau = 0.95 (``p_cutoff``), lambda_u = 1 (``ulb_loss_ratio``), alignment momentum 0.999 (``ema_p``), hard
  pseudo-labels (``hard_label: True``) from the aligned prediction; the alignment's target is the EMA of the
  labelled predictions (``DistAlignEMAHook(p_target_type='model')``, starting uniform), p-hat_u starts at the
  first batch's mean; the mask compares with ``>=``.
* mu = 7 (``uratio``), lr 0.03, weight decay 5e-4 (CIFAR-10) / 1e-3 (CIFAR-100) (``weight_decay``).
* No warm-up of the unlabelled weight: USB's ``train_step`` uses ``lambda_u`` throughout (mu(t) = 1).

The paper differs: its unlabelled weight warms up as ``mu(t) = 1/2 - cos(min(pi, 2 pi t / T)) / 2`` over the first
half of training (``--alg-arg weight_warmup=cosine``); its random logit interpolation and separate BatchNorm
statistics per domain are for domain adaptation and are not offered here.

Other choices: one forward over labelled, weak and strong images updates the BatchNorm statistics (USB
``use_cat: True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, gather_from_ranks, hp, register

WEIGHT_WARMUPS = ("none", "cosine")
CONFIG = "USB config/classic_cv/adamatch/adamatch_cifar10_40_0.yaml"


def relative_threshold(probs_x: Tensor, threshold: float) -> Tensor:
    """AdaMatch's relative threshold ``c_tau = tau * mean_x max_c p_x`` (USB ``AdaMatchThresholdingHook``)."""
    return threshold * probs_x.max(dim=-1).values.mean()


def cosine_warmup(progress: float) -> float:
    """The AdaMatch paper's unlabelled-weight warm-up ``1/2 - cos(min(pi, 2 pi t)) / 2``: 0 -> 1 over half the run."""
    return 0.5 - math.cos(min(math.pi, 2.0 * math.pi * progress)) / 2.0


class AdaMatchState(nn.Module):
    """Distribution alignment's running averages: p-hat_u (unlabelled) and p-hat_x (labelled, the target)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))   # overwritten at step 1
        self.register_buffer("p_target", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def align(self, probs_u: Tensor, probs_x: Tensor, momentum: float) -> None:
        """Move both averages with a (global) batch (USB ``DistAlignEMAHook.update_p``)."""
        p_model, p_target = SF.moving_alignment_averages(self.p_model, self.p_target, self.updates > 0, probs_u,
                                                         probs_x, momentum, "labelled")
        self.p_model.copy_(p_model)
        self.p_target.copy_(p_target)
        self.updates += 1


@register("adamatch")
@dataclass
class AdaMatch:
    threshold: float = hp(0.95, low=0.0, high=1.0, source=f"tau, {CONFIG} p_cutoff")
    lambda_u: float = hp(1.0, low=0.0, source=f"{CONFIG} ulb_loss_ratio")
    ema_p: float = hp(0.999, low=0.0, high=1.0, source=f"{CONFIG} ema_p")
    weight_warmup: str = hp("none", choices=WEIGHT_WARMUPS,
                            source="USB semilearn/algorithms/adamatch/adamatch.py train_step: lambda_u throughout "
                                   "(the paper: cosine)")
    # Declared state, not a hyper-parameter: the module setup() returns (the loop checkpoints it).
    state: AdaMatchState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {"*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}, "cifar100": {"weight_decay": 1e-3}}
    reference_sources = {"*": f"{CONFIG} uratio / lr / weight_decay",
                         "cifar100": "USB config/classic_cv/adamatch/adamatch_cifar100_{400,2500,10000}_0.yaml "
                                     "weight_decay"}

    def setup(self, student: nn.Module, num_classes: int) -> nn.Module:
        """Create the alignment averages (uniform; p-hat_u is replaced by the first batch's mean)."""
        self.state = AdaMatchState(num_classes)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("adamatch: call setup(student, num_classes) before loss(); the loop does this")
        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # 1. Distribution alignment of the weak view towards the labelled predictions (averages move first).
        probs_x = logits_x.detach().float().softmax(dim=-1)
        probs = logits_w.detach().float().softmax(dim=-1)
        global_probs_x = gather_from_ranks(probs_x)
        state.align(gather_from_ranks(probs), global_probs_x, self.ema_p)
        probs = SF.distribution_alignment(probs, state.p_model, state.p_target)

        # 2. Relative confidence threshold: tau times the mean labelled confidence of the (global) batch.
        c_tau = relative_threshold(global_probs_x, self.threshold)
        confidence, pseudo_labels = probs.max(dim=-1)
        mask = (confidence >= c_tau).to(probs.dtype)

        weight = self.lambda_u * (cosine_warmup(batch.progress) if self.weight_warmup == "cosine" else 1.0)
        supervised = F.cross_entropy(logits_x, batch.y)
        unsupervised = (F.cross_entropy(logits_s, pseudo_labels, reduction="none") * mask).mean()
        return Losses(
            total=supervised + weight * unsupervised,
            terms={"supervised": supervised, "unsupervised": weight * unsupervised},
            logs={"mask_rate": mask.mean(), "relative_threshold": c_tau, "unsup_weight": weight},
        )
