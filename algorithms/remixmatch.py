"""ReMixMatch (Berthelot, Carlini, Cubuk, Kurakin, Sohn, Zhang & Raffel, "ReMixMatch: Semi-Supervised Learning
with Distribution Alignment and Augmentation Anchoring", ICLR 2020): guess a label from the weak view,
align it with the labelled class distribution and sharpen it (distribution alignment); anchor strongly
augmented views to that guess (augmentation anchoring); MixUp everything as MixMatch; add a pre-mixup loss on
the first strong view and a rotation-prediction loss (Algorithm 1, Sec. 3.3).

Targets come from the student (``targets_from = "student"``): ReMixMatch guesses labels with the model being
trained and evaluates an exponential moving average of its weights, so the smoothed teacher is only the
evaluated model.

State (``setup``): a ``ReMixMatchState`` module holding the rotation head (linear, ``num_features -> 4``) and,
as buffers so that checkpoints carry them, the sliding windows of the last 128 batches behind distribution
alignment. The loop trains the head with the student and saves the module; the algorithm keeps a reference
to it in its declared ``state`` field.

Reference settings (google-research/fixmatch ``cta/cta_remixmatch.py``, the FixMatch paper's ReMixMatch: weak
view plus K strong views, guess from the weak view, ``redux='1st'``), where they differ from FixMatch's:

* Unlabelled ratio mu = 1 (``y_in`` is ``[batch, K + 1]``; FixMatch 7); K = 1 strong view (flag ``K``,
  ``libml/augment.py``), so the views are ``("weak", "strong")``.
* Learning rate 0.002 (``set_default('lr', 0.002)``), weight decay 0.02 (flag ``wd``; FixMatch 0.03 / 5e-4).
* MixUp alpha 0.75 (flag ``beta``), lambda_U 1.5 (``w_match``), pre-mixup lambda_U1 0.5 (``w_kl``), rotation
  lambda_r 0.5 (``w_rot``), T = 0.5 (``remixmatch_no_cta.py`` ``model(T=0.5)``), window 128 batches
  (``dbuf=128``). lambda_U and lambda_U1 ramp up linearly over ``warmup_kimg = 1024`` of ``train_kimg =
  65536`` kibi-images (1/64 of training); the rotation loss is not ramped.
* Distribution alignment towards ``p(y)``: the labelled class distribution (``layers.PData``), uniform for the
  suite's class-balanced splits (``da_target=uniform``); ``da_target=labelled`` estimates it as the reference
  does when the data set gives no distribution: an exponential moving average (decay 0.999, starting
  uniform) of the labelled batches' one-hot means (``layers.PData.update(lx, decay=0.999)``). ``p~(y)``: mean
  of the weak-view predictions over the last 128 batches, the window initialised uniform
  (``layers.PMovingAverage``), updated after the guess.

The original paper differs: K = 8 strong views (``--alg-arg k=8``), Adam. ``remixmatch_no_cta.py`` in the same
repository (weakly augmented views only, ``redux='swap'``, lr 0.03, weight decay 5e-4) is another algorithm
and is not offered.

Other choices:

* Strong views come from the suite's strong augmentation (``--strong-augment``), not CTAugment.
* The labelled images are strongly augmented (``labeled_view = "strong"``): in ``cta/cta_remixmatch.py`` the
  labelled batch the loss trains on (``xt``) is the CTAugment output of ``cta/lib/train.py``
  ``gen_labeled_fn`` (``libml/augment.py`` ``numpy_apply_policies``: ``image=ctaugment.apply(x,
  cta.policy(probe=False))``); here the suite's strong augmentation. ``--alg-arg labeled_view=weak`` gives
  the weak view.
* The weak and all strong views are mixed (reference ``MixMode('xxy.yxy')`` over all K + 1 views), one MixUp
  coefficient per row, drawn from ``batch.generator``. The mixed batch goes through the network in K + 2
  interleaved sub-batches of the labelled batch's size, each with its own BatchNorm statistics, the last
  call updating the running statistics (``remixmatch_no_cta.py``: ``layers.interleave([x] + y, batch)``,
  ``post_ops`` collected after ``batches[:-1]``); ``bn_groups=one_batch`` sends it in one forward.
* Passes as the reference: the weak view (the guess, no gradient), the first strong view (the pre-mixup
  loss, reference ``logits_y[1]``) and its rotated copy (the rotation loss) each go through the student
  alone and leave the BatchNorm running statistics untouched; only the mixed batch updates them (the
  reference keeps the update ops of one of its interleaved calls of the mixed batch).
* Rotation: row ``i`` of the first strong view turned by ``(i mod 4) x 90`` degrees (the reference turns
  quarters of the batch; the assignment of angles to rows does not change the loss's expectation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, generator_of, hp, register

DA_TARGETS = ("uniform", "labelled")
P_DATA_DECAY = 0.999   # libml/layers.py PData.update(entry, decay=0.999)


class ReMixMatchState(nn.Module):
    """ReMixMatch's trainable and running state: the rotation head and the distribution-alignment windows."""

    def __init__(self, num_features: int, num_classes: int, window: int):
        super().__init__()
        self.rotation_head = nn.Linear(num_features, 4)
        # The sliding window of per-batch mean predictions (rows), initialised uniform as the official code
        # (layers.PMovingAverage), and the labelled class distribution's moving average (layers.PData).
        self.register_buffer("p_model_history", torch.full((window, num_classes), 1.0 / num_classes))
        self.register_buffer("p_labelled", torch.full((num_classes,), 1.0 / num_classes))

    @torch.no_grad()
    def record(self, p_model_batch: Tensor, p_labelled_batch: Tensor) -> None:
        """Push this batch's mean prediction on unlabelled data into the window; move the labelled class
        distribution towards this batch's mean one-hot: ``p <- 0.999 p + 0.001 mean(onehot)`` (PData.update)."""
        self.p_model_history.copy_(SF.push_history(self.p_model_history, p_model_batch))
        self.p_labelled.lerp_(p_labelled_batch, 1.0 - P_DATA_DECAY)


def rotate_quarters(images: Tensor) -> tuple[Tensor, Tensor]:
    """Turn row ``i`` of an ``(N, C, H, W)`` batch by ``(i mod 4) x 90`` degrees; return it and the labels."""
    labels = torch.arange(len(images), device=images.device) % 4
    rotated = images.clone()
    for k in (1, 2, 3):  # strided slices, not boolean masks: no host-device sync on a GPU
        rotated[k::4] = torch.rot90(images[k::4], k, dims=(-2, -1))
    return rotated, labels


@register("remixmatch")
@dataclass
class ReMixMatch:
    temperature: float = hp(0.5, low=0.0, open_low=True)  # sharpening T, remixmatch_no_cta.py model(T=0.5)
    alpha: float = hp(0.75, low=0.0, open_low=True)       # MixUp Beta(alpha, alpha), cta_remixmatch.py beta
    lambda_u: float = hp(1.5, low=0.0)                    # mixed unlabelled loss, cta_remixmatch.py w_match
    lambda_u1: float = hp(0.5, low=0.0)                   # pre-mixup loss, cta_remixmatch.py flag w_kl
    lambda_rot: float = hp(0.5, low=0.0)                  # rotation loss, cta_remixmatch.py flag w_rot
    rampup_end: float = hp(1 / 64, low=0.0, high=1.0)     # warmup_kimg 1024 of train_kimg 1 << 16
    da_window: int = hp(128, low=1)                       # batches averaged, remixmatch_no_cta.py dbuf=128
    da_target: str = hp("uniform", choices=DA_TARGETS)    # p(y): layers.PData = labelled distribution
    # strong views, libml/augment.py flag K (paper: 8); at most 64: each view is a forward pass per step
    k: int = hp(1, low=1, high=64)
    labeled_view: str = hp("strong", choices=("weak", "strong"))  # cta/lib/train.py gen_labeled_fn: CTAugment
    bn_groups: str = hp("interleaved", choices=SF.BN_GROUPS)      # remixmatch_no_cta.py layers.interleave
    # Declared state, not a hyper-parameter: the module setup() returns (the loop trains and checkpoints it).
    state: ReMixMatchState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    reference = {
        # cta/cta_remixmatch.py: y_in [batch, K + 1] (mu 1); set_default('lr', 0.002); flag wd 0.02.
        "*": {"mu": 1, "lr": 0.002, "weight_decay": 0.02},
    }

    @property
    def unlabeled_views(self) -> tuple[str, ...]:
        """The weak view, then K strong views (libml/augment.py ``many_augment_function``)."""
        return ("weak",) + ("strong",) * self.k

    def setup(self, student: nn.Module, num_classes: int) -> nn.Module:
        """Create the rotation head and the distribution-alignment windows (the loop trains, saves them)."""
        self.state = ReMixMatchState(student.num_features, num_classes, self.da_window)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("remixmatch: call setup(student, num_classes) before loss(); "
                                 "the loop does this")
        generator = generator_of(batch, self)
        x, (u_weak, *u_strong) = batch.x, batch.u
        num_classes = batch.num_classes
        labels_x = F.one_hot(batch.y, num_classes).float()

        # 1. Guess a label from the weak view: distribution alignment, then sharpening (no gradient, and no
        #    update of the BatchNorm running statistics).
        with torch.no_grad(), SF.frozen_batchnorm_stats(student):
            probs_weak = student(u_weak).float().softmax(dim=-1)
        p_model = state.p_model_history.mean(dim=0)
        if self.da_target == "uniform":
            p_target = torch.full_like(p_model, 1.0 / num_classes)
        else:
            p_target = state.p_labelled / state.p_labelled.sum()   # PData.__call__ renormalises
        guess = SF.sharpen(SF.distribution_alignment(probs_weak, p_model, p_target), self.temperature)

        # 2. MixUp the labelled batch with the weak and all strong views, all labelled with the guess; this
        #    forward is the one that updates the BatchNorm running statistics.
        inputs = torch.cat([x, u_weak, *u_strong])
        targets = torch.cat([labels_x, guess.repeat(1 + len(u_strong), 1)])
        lam, perm = SF.mixup_sample(len(inputs), self.alpha, generator)
        mixed_inputs, mixed_targets = SF.mixup(inputs, targets, lam, perm)
        logits_x, logits_u = SF.mixed_batch_forward(student, mixed_inputs, len(x), self.bn_groups,
                                                    update_bn_from=-1).split([len(x), len(inputs) - len(x)])
        targets_x, targets_u = mixed_targets.split([len(x), len(inputs) - len(x)])
        supervised = SF.soft_cross_entropy(logits_x, targets_x)
        mixed_u = SF.soft_cross_entropy(logits_u, targets_u)

        # 3. Pre-mixup loss (first strong view against the guess) and rotation loss (its rotated copy), each
        #    its own pass, with gradient, leaving the running statistics alone.
        strong_1 = u_strong[0]
        rotated, rotation_labels = rotate_quarters(strong_1)
        with SF.frozen_batchnorm_stats(student):
            pre_mixup = SF.soft_cross_entropy(student(strong_1), guess)
            rotation = F.cross_entropy(state.rotation_head(student.features(rotated)), rotation_labels)

        # 4. Slide the distribution-alignment windows (after the guess, as the official post-step update).
        state.record(probs_weak.mean(dim=0), labels_x.mean(dim=0))

        ramp = SF.linear_rampup(batch.progress, self.rampup_end)
        terms = {
            "supervised": supervised,
            "unsupervised": self.lambda_u * ramp * mixed_u,
            "pre_mixup": self.lambda_u1 * ramp * pre_mixup,
            "rotation": self.lambda_rot * rotation,
        }
        return Losses(
            total=sum(terms.values()),
            terms=terms,
            logs={"unsup_weight": self.lambda_u * ramp, "rotation_loss": rotation.detach()},
        )
