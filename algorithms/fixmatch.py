"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020): pseudo-label the weak view of each unlabelled image, and train the strong
view on the pseudo-labels whose confidence clears a threshold.

Targets come from the student (the official FixMatch and the Spatial Ensemble paper, Sec. 4.1: "uses
identical student and teacher network in the training phase while employing the TMA teacher for
evaluation"), so the smoothing strategy changes the evaluated model, not the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, register


@register("fixmatch")
@dataclass
class FixMatch:
    threshold: float = 0.95  # tau, FixMatch paper Sec. 4 / Table 9 (CIFAR)
    lambda_u: float = 1.0    # weight of the unlabelled loss, FixMatch paper Sec. 4
    targets_from = "student"
    unlabeled_views = ("weak", "strong")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_weak, u_strong = batch.u
        # One forward over all three parts, as the official code does, so BatchNorm sees one batch.
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # Pseudo-labels from the weak view: hard argmax, kept only where max probability >= threshold.
        probs = logits_w.detach().softmax(dim=-1)
        pseudo_labels = probs.argmax(dim=-1)
        mask = SF.confidence_mask(probs, self.threshold)

        supervised = F.cross_entropy(logits_x, batch.y)
        # Averaged over all mu*B unlabelled images, masked ones count as zero (FixMatch Eq. 2).
        unsupervised = (F.cross_entropy(logits_s, pseudo_labels, reduction="none") * mask).mean()

        return Losses(
            total=supervised + self.lambda_u * unsupervised,
            terms={"supervised": supervised, "unsupervised": self.lambda_u * unsupervised},
            logs={"mask_rate": mask.mean()},
        )
