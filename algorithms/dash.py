"""Dash (Xu, Shang, Ye, Qian, Li, Sun, Li & Jin, "Dash: Semi-Supervised Learning with Dynamic Thresholding",
ICML 2021), as USB runs it on FixMatch: after a supervised warm-up, train on the unlabelled images whose
pseudo-label loss lies below a threshold that shrinks geometrically.

    warm-up (t < t_w):   loss = CE(x, y)                                   labelled images only
    rho_t  = max(C * gamma^-k * rho_hat, rho_min),   k = floor((t - t_w) / t_d)      the dynamic threshold
    q      = softmax(z_w / T) while rho_t > rho_min, else onehot(argmax z_w)         soft, then hard targets
    loss   = CE(x, y) + lambda_u * mean_u 1[CE(z_w, q) <= rho_t] * CE(z_s, q)

Targets come from the student (``targets_from = "student"``): the pseudo-labels and the losses compared with
rho_t are the trained model's weak-view predictions; the smoothed teacher is only the evaluated model.

State (``setup``): a ``DashState`` module holding rho_hat as a buffer (checkpointed; -1 until it is
measured). The schedule's count k is a function of training progress, so a resumed run continues it exactly.

Reference settings (microsoft/Semi-supervised-learning, "USB", ``semilearn/algorithms/dash/`` and
``config/classic_cv/dash/dash_cifar10_40_0.yaml``; the other CIFAR label budgets agree except for the weight
decay):

* gamma = 1.27 (``gamma``), C = 1.0001 (``C``), rho_min = 0.05 (``rho_min``), T = 0.5 (``T``), lambda_u = 1
  (``ulb_loss_ratio``); soft targets until rho_t reaches rho_min, then hard (``DashThresholdingHook.update``:
  ``use_hard_label = rho == rho_min``); the mask compares with ``<=`` (``loss_w.le(rho)``).
* Warm-up: ``num_wu_iter: 2048`` supervised steps (labelled images only, so only they move the BatchNorm
  statistics); here the first 2048 / 2^20 = 1/512 of the run (``warmup``). USB runs them *before* its 2^20 steps
  and restarts its step counter; here they are part of the budget.
* rho_t is recomputed every ``10 * num_iter_per_epoch`` steps (``it % (10 * num_iter_per_epoch) == 0``, with
  ``epoch: 1024``, ``num_train_iter: 1048576``: every 10240 steps = 10/1024 of the run, ``decay_every``),
  counting from the end of the warm-up.
* mu = 7 (``uratio``), lr 0.03, weight decay 5e-4 (CIFAR-10) / 1e-3 (CIFAR-100) (``weight_decay``).

**Not the reference**: USB sets rho_hat to the loss of its evaluation (test) set after the warm-up (``rho_init =
eval_dict['eval/loss']``). ssl-bench never shows test labels to an algorithm, so rho_hat here is the student's
mean labelled cross-entropy on the (global) batch of the first step after the warm-up. Whether the Dash paper's
rho_hat is a labelled-set loss could not be confirmed from USB's files.

Other choices: after the warm-up one forward over labelled, weak and strong images updates the BatchNorm
statistics (USB ``use_cat: True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, gather_from_ranks, hp, register

CONFIG = "USB config/classic_cv/dash/dash_cifar10_40_0.yaml"


def dash_threshold(rho_hat: Tensor | float, decays: int, C: float, gamma: float, rho_min: float) -> Tensor:
    """Dash's dynamic threshold ``max(C * gamma^-k * rho_hat, rho_min)`` after ``k = decays`` decays."""
    return (torch.as_tensor(rho_hat) * (C * gamma ** -decays)).clamp(min=rho_min)


def decays_done(progress: float, warmup: float, decay_every: float) -> int:
    """How many times the threshold has decayed at ``progress`` (0 from the end of the warm-up on)."""
    return max(0, math.floor((progress - warmup) / decay_every))


class DashState(nn.Module):
    """The base threshold rho_hat (-1 until the first step after the warm-up measures it)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("rho_hat", torch.tensor(-1.0))


@register("dash")
@dataclass
class Dash:
    gamma: float = hp(1.27, low=1.0, open_low=True, source=f"{CONFIG} gamma")
    C: float = hp(1.0001, low=0.0, open_low=True, source=f"{CONFIG} C")
    rho_min: float = hp(0.05, low=0.0, source=f"{CONFIG} rho_min")
    temperature: float = hp(0.5, low=0.0, open_low=True, source=f"{CONFIG} T")
    lambda_u: float = hp(1.0, low=0.0, source=f"{CONFIG} ulb_loss_ratio")
    warmup: float = hp(2048 / 2 ** 20, low=0.0, high=1.0,
                       source=f"{CONFIG} num_wu_iter 2048 of num_train_iter 1048576")
    decay_every: float = hp(10 / 1024, low=0.0, open_low=True,
                            source="USB semilearn/algorithms/dash/utils.py it % (10 * num_iter_per_epoch), "
                                   f"{CONFIG} epoch 1024")
    # Declared state, not a hyper-parameter: the module setup() returns (the loop checkpoints it).
    state: DashState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {"*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}, "cifar100": {"weight_decay": 1e-3}}
    reference_sources = {"*": f"{CONFIG} uratio / lr / weight_decay",
                         "cifar100": "USB config/classic_cv/dash/dash_cifar100_{400,2500,10000}_0.yaml weight_decay"}

    def setup(self, student: nn.Module, num_classes: int) -> nn.Module:
        """Create rho_hat (unmeasured)."""
        self.state = DashState()
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("dash: call setup(student, num_classes) before loss(); the loop does this")
        zero = batch.x.new_zeros(())
        if batch.progress < self.warmup:
            # 1. Warm-up: the labelled images only (USB Dash.warmup), nothing unlabelled is used.
            supervised = F.cross_entropy(student(batch.x), batch.y)
            return Losses(total=supervised, terms={"supervised": supervised},
                          logs={"mask_rate": zero, "rho": zero})

        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])
        supervised = F.cross_entropy(logits_x, batch.y)

        # 2. rho_hat, once: the mean labelled loss of the (global) batch right after the warm-up.
        with torch.no_grad():
            measured = gather_from_ranks(supervised.detach().float().reshape(1)).mean()
            state.rho_hat.copy_(torch.where(state.rho_hat < 0, measured, state.rho_hat))
        decays = decays_done(batch.progress, self.warmup, self.decay_every)
        rho = dash_threshold(state.rho_hat, decays, self.C, self.gamma, self.rho_min)

        # 3. Targets: sharpened while rho is above its floor, hard once it reached it; keep the rows whose
        #    weak-view loss against their own target is at most rho.
        weak = logits_w.detach().float()
        hard = F.one_hot(weak.argmax(dim=-1), batch.num_classes).to(weak.dtype)
        targets = torch.where(rho <= self.rho_min, hard, (weak / self.temperature).softmax(dim=-1))
        mask = (SF.soft_cross_entropy(weak, targets, reduction="none") <= rho).to(weak.dtype)

        unsupervised = (SF.soft_cross_entropy(logits_s, targets, reduction="none") * mask).mean()
        return Losses(
            total=supervised + self.lambda_u * unsupervised,
            terms={"supervised": supervised, "unsupervised": self.lambda_u * unsupervised},
            logs={"mask_rate": mask.mean(), "rho": rho},
        )
