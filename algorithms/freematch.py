"""FreeMatch (Wang, Chen, Heng, Hou, Fan, Wu, Wang, Savvides, Shinozaki, Raj, Schiele & Xie, "FreeMatch:
Self-adaptive Thresholding for Semi-supervised Learning", ICLR 2023): FixMatch whose threshold adapts itself
to the model's confidence (self-adaptive thresholding, SAT) plus a self-adaptive class fairness term.

    tau_t     <- m tau_t + (1 - m) mean_u max_c p_w              global threshold, starts at 1/C
    p~_t      <- m p~_t + (1 - m) mean_u p_w                      class-wise mean confidence, starts uniform
    h~_t      <- m h~_t + (1 - m) hist_u(argmax p_w)              pseudo-label histogram, starts uniform
    tau_t(c)  =  tau_t * p~_t(c) / max_c' p~_t(c')                class-wise thresholds
    L_u       =  mean_u 1[max p_w >= tau_t(argmax p_w)] CE(p_s, argmax p_w)
    L_f       =  sum_c SumNorm(p~_t / h~_t)_c log SumNorm(p-bar_s / h-bar_s)_c      (over the masked rows)
    loss      =  CE(x, y) + lambda_u L_u + lambda_f L_f

where ``p-bar_s`` / ``h-bar_s`` are the mean prediction and the prediction histogram of the strong views that
pass the mask. ``L_f`` is minimised as written in USB's ``entropy_loss`` (the paper writes it as
``-H(., .)`` with ``H`` the cross-entropy, the same quantity).

Targets come from the student (``targets_from = "student"``): thresholds and pseudo-labels are the trained
model's own weak-view predictions; the smoothed teacher is only the evaluated model.

State (``setup``): a ``FreeMatchState`` module holding ``tau_t``, ``p~_t`` and ``h~_t`` as buffers
(checkpointed). The averages move *before* the mask of the same step is computed, as USB's
``FreeMatchThresholingHook.masking`` does, from every rank's weak-view predictions under torchrun
(``gather_from_ranks``, as USB's ``concat_all_gather``).

Reference settings (microsoft/Semi-supervised-learning, "USB", ``semilearn/algorithms/freematch/`` and
``config/classic_cv/freematch/freematch_cifar10_40_0.yaml``; the other CIFAR label budgets agree except for the
weight decay):

* EMA momentum m = 0.999 (``ema_p``); lambda_f = 0.001 (``ent_loss_ratio`` in every classic-CV config; the code's
  argument default is 0.01: ``--alg-arg lambda_f=0.01``); lambda_u = 1 (``ulb_loss_ratio`` is not in the file,
  so USB's ``train.py`` default 1.0); hard pseudo-labels (``hard_label: True``); the batch mean of the
  confidences, not its 0.8-quantile (``use_quantile: False``; ``--alg-arg quantile=true``); no clipping of tau_t
  (``clip_thresh`` default False).
* mu = 7 (``uratio``), lr 0.03, weight decay 5e-4 (CIFAR-10) / 1e-3 (CIFAR-100) (``weight_decay``).
* The fairness term is left out in a step where no image passes the mask (USB ``if mask.sum() > 0``).

Other choices: one forward over labelled, weak and strong images updates the BatchNorm statistics (USB
``use_cat: True``); the mask compares with ``>=`` (USB ``ge``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, gather_from_ranks, hp, register

CONFIG = "USB config/classic_cv/freematch/freematch_cifar10_40_0.yaml"


def class_thresholds(tau: Tensor, p_model: Tensor) -> Tensor:
    """Self-adaptive class-wise thresholds ``tau_t(c) = tau_t * MaxNorm(p~_t)(c)`` (FreeMatch Sec. 3.2)."""
    return tau * p_model / p_model.max()


def _sum_norm(x: Tensor) -> Tensor:
    return x / x.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _inverse_or_zero(x: Tensor) -> Tensor:
    # USB replace_inf_to_zero(1 / x): a class never predicted gets weight 0, not infinity.
    return torch.where(x > 0, 1.0 / x.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def fairness_loss(logits_s: Tensor, mask: Tensor, p_model: Tensor, label_hist: Tensor) -> Tensor:
    """The self-adaptive fairness term L_f over the rows with ``mask == 1`` (USB ``entropy_loss``); 0 if none.

    ``sum_c SumNorm(p~/h~)_c * log(SumNorm(p-bar_s / h-bar_s)_c + 1e-12)``, ``p-bar_s`` the mean softmax of the
    masked strong-view logits and ``h-bar_s`` the histogram of their argmax (a constant). Written with the mask
    as weights, so no boolean indexing (no host-device sync).
    """
    mask = mask.to(torch.float32)
    count = mask.sum()
    probs_s = logits_s.float().softmax(dim=-1)
    num_classes = probs_s.shape[-1]
    hist_s = (F.one_hot(probs_s.detach().argmax(dim=-1), num_classes) * mask[:, None]).sum(0) / count.clamp_min(1)
    mean_prob_s = (probs_s * mask[:, None]).sum(0) / count.clamp_min(1)
    target = _sum_norm(p_model * _inverse_or_zero(label_hist))
    modulated = _sum_norm(mean_prob_s * _inverse_or_zero(hist_s))
    loss = (target * torch.log(modulated + 1e-12)).sum()
    return torch.where(count > 0, loss, torch.zeros_like(loss))


class FreeMatchState(nn.Module):
    """The self-adaptive threshold's running averages: tau_t, p~_t (class-wise), h~_t (pseudo-label histogram)."""

    def __init__(self, num_classes: int):
        super().__init__()
        # USB FreeMatchThresholingHook.__init__: p_model and label_hist uniform, time_p = p_model.mean() = 1/C.
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("label_hist", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("tau", torch.tensor(1.0 / num_classes))

    @torch.no_grad()
    def update(self, probs: Tensor, momentum: float, quantile: bool, clip: bool) -> None:
        """Move the three averages with a (global) batch of weak-view probabilities (USB ``update``)."""
        confidence, labels = probs.max(dim=-1)
        level = torch.quantile(confidence, 0.8) if quantile else confidence.mean()
        tau = SF.ema_update(self.tau, level, momentum)
        self.tau.copy_(tau.clamp(0.0, 0.95) if clip else tau)
        self.p_model.copy_(SF.ema_update(self.p_model, probs.mean(dim=0), momentum))
        hist = torch.bincount(labels, minlength=len(self.p_model)).to(probs.dtype)
        self.label_hist.copy_(SF.ema_update(self.label_hist, hist / hist.sum(), momentum))


@register("freematch")
@dataclass
class FreeMatch:
    ema_p: float = hp(0.999, low=0.0, high=1.0, source=f"m, {CONFIG} ema_p")
    lambda_u: float = hp(1.0, low=0.0, source="USB train.py --ulb_loss_ratio default 1.0 (not set in the config)")
    lambda_f: float = hp(0.001, low=0.0, source=f"{CONFIG} ent_loss_ratio (freematch.py's argument default: 0.01)")
    quantile: bool = hp(False, source=f"{CONFIG} use_quantile")
    clip: bool = hp(False, source="USB semilearn/algorithms/freematch/freematch.py get_argument clip_thresh "
                                  "(not in the config)")
    # Declared state, not a hyper-parameter: the module setup() returns (the loop checkpoints it).
    state: FreeMatchState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {"*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}, "cifar100": {"weight_decay": 1e-3}}
    reference_sources = {"*": f"{CONFIG} uratio / lr / weight_decay",
                         "cifar100": "USB config/classic_cv/freematch/freematch_cifar100_{400,2500,10000}_0.yaml "
                                     "weight_decay"}

    def setup(self, student: nn.Module, num_classes: int) -> nn.Module:
        """Create the running averages at their USB starting values."""
        self.state = FreeMatchState(num_classes)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("freematch: call setup(student, num_classes) before loss(); the loop does this")
        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # 1. Self-adaptive thresholds: move the averages with this (global) batch, then threshold each class.
        probs = logits_w.detach().float().softmax(dim=-1)
        state.update(gather_from_ranks(probs), self.ema_p, self.quantile, self.clip)
        confidence, pseudo_labels = probs.max(dim=-1)
        mask = (confidence >= class_thresholds(state.tau, state.p_model)[pseudo_labels]).to(probs.dtype)

        # 2. Consistency on the confident images, and the fairness term over them.
        supervised = F.cross_entropy(logits_x, batch.y)
        unsupervised = (F.cross_entropy(logits_s, pseudo_labels, reduction="none") * mask).mean()
        fairness = fairness_loss(logits_s, mask, state.p_model, state.label_hist)
        terms = {"supervised": supervised, "unsupervised": self.lambda_u * unsupervised,
                 "fairness": self.lambda_f * fairness}
        return Losses(total=sum(terms.values()), terms=terms,
                      logs={"mask_rate": mask.mean(), "global_threshold": state.tau.detach().clone()})
