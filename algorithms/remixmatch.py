"""ReMixMatch (Berthelot, Carlini, Cubuk, Kurakin, Sohn, Zhang & Raffel, "ReMixMatch: Semi-Supervised Learning
with Distribution Alignment and Augmentation Anchoring", ICLR 2020): guess a label from the weak view,
align it with the labelled class distribution and sharpen it (distribution alignment); anchor strongly
augmented views to that guess (augmentation anchoring); MixUp everything as MixMatch; add a pre-mixup loss on
one strong view and a rotation-prediction loss (Algorithm 1, Sec. 3.3).

Targets come from the student (``targets_from = "student"``): ReMixMatch guesses labels with the model being
trained and evaluates an exponential moving average of its weights, so the smoothed teacher is only the
evaluated model.

State (``setup``): a ``ReMixMatchState`` module holding the rotation head (linear, ``num_features -> 4``) and,
as buffers so that checkpoints carry them, the sliding windows of the last 128 batches behind distribution
alignment. The loop trains the head with the student and saves the module.

Choices and deviations:

* K = 2 strong views (``unlabeled_views = ("weak", "strong", "strong")``) instead of the paper's K = 8, as
  USB. The paper's unlabelled batch equals the labelled one (64 images, 9 views); the suite's loop uses
  FixMatch's mu = 7, so K = 2 already sends 3 x 448 unlabelled images through the network per step.
* Strong views come from the suite's RandAugment + Cutout, not CTAugment (the augmentation module is shared
  by all algorithms).
* Distribution alignment: ``p~ = Normalize(p * p(y) / p~(y))`` with ``p~(y)`` the mean of the student's
  weak-view predictions over the last 128 batches (window initialised uniform, as the official code) and
  ``p(y)`` uniform by default, which is the labelled distribution of the suite's class-balanced splits;
  ``--alg-arg da_target=labelled`` estimates ``p(y)`` from the labelled batches over the same window instead
  (for imbalanced splits). The windows are updated after the guess is made (the official code updates them
  after the step).
* lambda_U = 1.5, pre-mixup lambda_U1 = 0.5, rotation lambda_r = 0.5, T = 0.5, alpha = 0.75 (paper Sec. 4 /
  official flags). lambda_U and lambda_U1 are ramped up linearly over the first 1/64 of training (official
  ``warmup_kimg = 1024`` of 65536), the rotation loss is not ramped (official code).
* The weak and both strong views are all mixed (official code mixes all K + 1 views), with one MixUp
  coefficient per row and one forward over the mixed batch (no ``interleave``, see ``mixmatch.py``).
* Rotation: the first strong view, its rows rotated by 0/90/180/270 degrees in turn (row ``i`` by
  ``(i mod 4) x 90``; the official code also splits the batch in quarters). The pre-mixup loss and the
  rotation loss share one ``student.features`` forward over the strong view and its rotated copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, register

DA_TARGETS = ("uniform", "labelled")


class ReMixMatchState(nn.Module):
    """ReMixMatch's trainable and running state: the rotation head and the distribution-alignment windows."""

    def __init__(self, num_features: int, num_classes: int, window: int):
        super().__init__()
        self.rotation_head = nn.Linear(num_features, 4)
        # Sliding windows of per-batch mean distributions (rows), initialised uniform as the official code.
        self.register_buffer("p_model_history", torch.full((window, num_classes), 1.0 / num_classes))
        self.register_buffer("p_labelled_history", torch.full((window, num_classes), 1.0 / num_classes))

    @torch.no_grad()
    def record(self, p_model_batch: Tensor, p_labelled_batch: Tensor) -> None:
        """Push this batch's mean prediction on unlabelled data and mean labelled one-hot into the windows."""
        self.p_model_history.copy_(SF.push_history(self.p_model_history, p_model_batch))
        self.p_labelled_history.copy_(SF.push_history(self.p_labelled_history, p_labelled_batch))


def rotate_quarters(images: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate row ``i`` of an ``(N, C, H, W)`` batch by ``(i mod 4) x 90`` degrees; return it and the labels."""
    labels = torch.arange(len(images), device=images.device) % 4
    rotated = images.clone()
    for k in (1, 2, 3):  # strided slices, not boolean masks: no host-device sync on a GPU
        rotated[k::4] = torch.rot90(images[k::4], k, dims=(-2, -1))
    return rotated, labels


@register("remixmatch")
@dataclass
class ReMixMatch:
    temperature: float = 0.5    # sharpening T, ReMixMatch paper Sec. 4 (as MixMatch)
    alpha: float = 0.75         # MixUp Beta(alpha, alpha), ReMixMatch paper Sec. 4 / official --beta
    lambda_u: float = 1.5       # mixed unlabelled cross-entropy, ReMixMatch paper Sec. 4 / official w_match
    lambda_u1: float = 0.5      # pre-mixup loss on the first strong view, ReMixMatch Sec. 3.3 / official w_kl
    lambda_rot: float = 0.5     # rotation loss, ReMixMatch Sec. 3.3 / official w_rot
    rampup_end: float = 1 / 64  # linear ramp of lambda_u, lambda_u1: official warmup_kimg 1024 of 65536 kimg
    da_window: int = 128        # batches in the running average of predictions, ReMixMatch Sec. 3.2
    da_target: str = "uniform"  # p(y): "uniform" (balanced splits) or "labelled" (running mean of labelled batches)
    targets_from = "student"
    unlabeled_views = ("weak", "strong", "strong")  # K = 2 strong views (paper: 8), see the module docstring

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.alpha <= 0:
            raise AlgorithmError(f"remixmatch: temperature={self.temperature} and alpha={self.alpha} must be > 0")
        if min(self.lambda_u, self.lambda_u1, self.lambda_rot, self.rampup_end) < 0:
            raise AlgorithmError("remixmatch: lambda_u, lambda_u1, lambda_rot and rampup_end must be >= 0")
        if self.da_window < 1:
            raise AlgorithmError(f"remixmatch: da_window={self.da_window} must be >= 1")
        if self.da_target not in DA_TARGETS:
            raise AlgorithmError(f"remixmatch: da_target={self.da_target!r}; expected one of {DA_TARGETS}")

    def setup(self, student: nn.Module, num_classes: int) -> nn.Module:
        """Create the rotation head and the distribution-alignment windows (trained and checkpointed by the loop)."""
        self.state = ReMixMatchState(student.num_features, num_classes, self.da_window)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = getattr(self, "state", None)
        if state is None:
            raise AlgorithmError("remixmatch: call setup(student, num_classes) before loss(); the loop does this")
        x, (u_weak, *u_strong) = batch.x, batch.u
        num_classes = batch.num_classes
        labels_x = F.one_hot(batch.y, num_classes).float()

        # 1. Guess a label from the weak view: distribution alignment, then sharpening (no gradient).
        with torch.no_grad():
            probs_weak = student(u_weak).float().softmax(dim=-1)
            p_model = state.p_model_history.mean(dim=0)
            if self.da_target == "uniform":
                p_target = torch.full_like(p_model, 1.0 / num_classes)
            else:
                p_target = state.p_labelled_history.mean(dim=0)
            guess = SF.sharpen(SF.distribution_alignment(probs_weak, p_model, p_target), self.temperature)

        # 2. MixUp the labelled batch with the weak and all strong views, all labelled with the guess.
        inputs = torch.cat([x, u_weak, *u_strong])
        targets = torch.cat([labels_x, guess.repeat(1 + len(u_strong), 1)])
        lam, perm = SF.mixup_sample(len(inputs), self.alpha, inputs.device)
        mixed_inputs, mixed_targets = SF.mixup(inputs, targets, lam, perm)
        logits_x, logits_u = student(mixed_inputs).split([len(x), len(inputs) - len(x)])
        targets_x, targets_u = mixed_targets.split([len(x), len(inputs) - len(x)])
        supervised = SF.soft_cross_entropy(logits_x, targets_x)
        mixed_u = SF.soft_cross_entropy(logits_u, targets_u)

        # 3. Pre-mixup loss (first strong view against the guess) and rotation loss (its rotated copy).
        strong_1 = u_strong[0]
        rotated, rotation_labels = rotate_quarters(strong_1)
        features = student.features(torch.cat([strong_1, rotated]))
        features_s1, features_rot = features.split([len(strong_1), len(rotated)])
        pre_mixup = SF.soft_cross_entropy(student.classifier(features_s1), guess)
        rotation = F.cross_entropy(state.rotation_head(features_rot), rotation_labels)

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
