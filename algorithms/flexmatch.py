"""FlexMatch (Zhang, Wang, Hou, Wu, Wang, Okumura & Shinozaki, "FlexMatch: Boosting Semi-Supervised Learning
with Curriculum Pseudo Labeling", NeurIPS 2021): FixMatch whose confidence threshold is lowered per class
while that class is still being learnt (Curriculum Pseudo Labelling, Sec. 3.2-3.3).

    sigma_c   = #{unlabelled images whose last confident (>= tau) prediction was class c}
    beta_c    = sigma_c / max(max_c' sigma_c', #images never confidently predicted)   (with the warm-up)
    T_c       = M(beta_c) * tau,   M(x) = x / (2 - x)                 (the convex mapping)
    loss      = CE(x, y) + lambda_u * mean_u 1[max p_w >= T_argmax p_w] * CE(p_s, argmax p_w)

Targets come from the student (``targets_from = "student"``): the pseudo-labels, and the learning status
behind the thresholds, are the trained model's own predictions on the weak view; the smoothed teacher is only
the evaluated model (USB's FlexMatch also evaluates an EMA of the weights it pseudo-labels with).

State (``setup``): a ``FlexMatchState`` module with, as buffers (checkpointed), the label each unlabelled image
was last confidently predicted as (-1: never; one entry per image of the split's unlabelled set, indexed by
``Batch.u_index``) and the class-wise learning status ``beta``. Under torchrun both are updated from every
rank's batch (``gather_from_ranks``), so every rank holds the state one process of the global batch would.

Reference settings (microsoft/Semi-supervised-learning, "USB", ``semilearn/algorithms/flexmatch/`` and
``config/classic_cv/flexmatch/flexmatch_cifar10_40_0.yaml``; the ``*_cifar10_{40,250,4000}_0`` and
``*_cifar100_{400,2500,10000}_0`` files agree except for the weight decay):

* tau = 0.95 (``p_cutoff``), lambda_u = 1 (``ulb_loss_ratio``), hard pseudo-labels (``hard_label: True``, so
  ``T`` is unused), threshold warm-up on (``thresh_warmup: True``), the convex mapping (``FlexMatchThresholdingHook
  .masking``, the line not commented out).
* mu = 7 (``uratio``), lr 0.03 (``lr``), weight decay 5e-4 on CIFAR-10 and 1e-3 on CIFAR-100 (``weight_decay``),
  the rest as FixMatch's (SGD, Nesterov, cosine, EMA 0.999, batch 64, 2^20 steps).
* As in USB: the mask of a step uses the status *before* the step's predictions are recorded; the status is
  recomputed only while the images are not all of one label (``max(counter) < ulb_dest_len``); an image is
  recorded once its probability reaches tau (``>=``).

The paper's alternatives are offered by name: ``mapping=linear`` (``M(x) = x``, its Sec. 3.3 comparison; USB's
commented-out ``(x + 1) / 2`` variant is not offered) and ``warmup=false`` (the status normalised by the most
selected class only).

Other choices: one forward over labelled, weak and strong images updates the BatchNorm statistics (USB
``use_cat: True``); an image drawn twice in one global batch keeps the label of its last occurrence (USB's
indexed assignment leaves that undefined on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, gather_from_ranks, hp, indices_of, register

MAPPINGS = ("convex", "linear")
CONFIG = "USB config/classic_cv/flexmatch/flexmatch_cifar10_40_0.yaml"


def mapped_thresholds(beta: Tensor, threshold: float, mapping: str = "convex") -> Tensor:
    """Class-wise thresholds ``T_c = M(beta_c) * tau`` (FlexMatch Sec. 3.3): ``M(x) = x / (2 - x)`` or ``x``."""
    if mapping == "convex":
        return threshold * beta / (2.0 - beta)
    if mapping == "linear":
        return threshold * beta
    raise ValueError(f"mapping={mapping!r}; expected one of {MAPPINGS}")


def learning_status(selected: Tensor, num_classes: int, warmup: bool) -> Tensor:
    """beta_c from the per-image selected labels (-1: never selected) (FlexMatch Sec. 3.2-3.3).

    ``sigma_c`` counts the images whose last confident prediction was ``c``; beta divides it by the largest
    ``sigma`` or, with the warm-up, by the largest of the ``sigma``s and the number of unselected images.
    """
    counts = torch.bincount(selected + 1, minlength=num_classes + 1)   # counts[0]: never selected
    sigma = counts[1:].to(torch.float32)
    denominator = counts.max() if warmup else counts[1:].max()
    return sigma / denominator.clamp_min(1).to(torch.float32)


class FlexMatchState(nn.Module):
    """The label each unlabelled image was last confidently predicted as, and the class-wise learning status."""

    def __init__(self, num_unlabeled: int, num_classes: int):
        super().__init__()
        self.register_buffer("selected_label", torch.full((num_unlabeled,), -1, dtype=torch.long))
        self.register_buffer("beta", torch.zeros(num_classes))

    @torch.no_grad()
    def record(self, index: Tensor, probs: Tensor, threshold: float, warmup: bool) -> None:
        """Record the confident predictions of a (global) batch and recompute beta (USB ``masking``/``update``)."""
        confidence, label = probs.max(dim=-1)
        selected = SF.scatter_last(self.selected_label, index, label, valid=confidence >= threshold)
        self.selected_label.copy_(selected)
        counts = torch.bincount(selected + 1, minlength=len(self.beta) + 1)
        # USB recomputes the status only while the images do not all carry one label (all -1 at the start).
        mixed = counts.max() < len(selected)
        self.beta.copy_(torch.where(mixed, learning_status(selected, len(self.beta), warmup), self.beta))


@register("flexmatch")
@dataclass
class FlexMatch:
    threshold: float = hp(0.95, low=0.0, high=1.0, source=f"tau, {CONFIG} p_cutoff")
    lambda_u: float = hp(1.0, low=0.0, source=f"{CONFIG} ulb_loss_ratio")
    warmup: bool = hp(True, source=f"{CONFIG} thresh_warmup (the paper's Eq. without warm-up: false)")
    mapping: str = hp("convex", choices=MAPPINGS, source="USB semilearn/algorithms/flexmatch/utils.py masking, "
                                                         "the line not commented out")
    # Declared state, not a hyper-parameter: the module setup() returns (the loop checkpoints it).
    state: FlexMatchState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {"*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}, "cifar100": {"weight_decay": 1e-3}}
    reference_sources = {"*": f"{CONFIG} uratio / lr / weight_decay",
                         "cifar100": "USB config/classic_cv/flexmatch/flexmatch_cifar100_{400,2500,10000}_0.yaml "
                                     "weight_decay"}

    def setup(self, student: nn.Module, num_classes: int, *, num_unlabeled: int) -> nn.Module:
        """Create the per-image selected labels (all -1) and the learning status (all 0)."""
        self.state = FlexMatchState(num_unlabeled, num_classes)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("flexmatch: call setup(student, num_classes, num_unlabeled=...) before loss(); "
                                 "the loop does this")
        _, u_index = indices_of(batch, self)
        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # 1. Pseudo-label the weak view; keep it where its confidence clears its class's flexible threshold,
        #    computed from the learning status before this step.
        probs = logits_w.detach().float().softmax(dim=-1)
        confidence, pseudo_labels = probs.max(dim=-1)
        class_thresholds = mapped_thresholds(state.beta, self.threshold, self.mapping)
        mask = (confidence >= class_thresholds[pseudo_labels]).to(probs.dtype)

        # 2. Record this (global) batch's confident predictions and update the learning status.
        state.record(gather_from_ranks(u_index), gather_from_ranks(probs), self.threshold, self.warmup)

        supervised = F.cross_entropy(logits_x, batch.y)
        unsupervised = (F.cross_entropy(logits_s, pseudo_labels, reduction="none") * mask).mean()
        return Losses(
            total=supervised + self.lambda_u * unsupervised,
            terms={"supervised": supervised, "unsupervised": self.lambda_u * unsupervised},
            logs={"mask_rate": mask.mean(), "mean_threshold": class_thresholds.mean()},
        )
