"""FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020): pseudo-label the weak view of each unlabelled image, and train the strong
view on the pseudo-labels whose confidence clears a threshold.

Targets come from the student (the official FixMatch and the Spatial Ensemble paper, Sec. 4.1: "uses
identical student and teacher network in the training phase while employing the TMA teacher for
evaluation"), so the smoothing strategy changes the evaluated model, not the targets.

Reference settings (google-research/fixmatch, ``fixmatch.py``; the other algorithms' tables say how they
differ from these): unlabelled ratio mu = 7 (flag ``uratio``), learning rate 0.03 with cosine decay
(``FLAGS.set_default('lr', 0.03)``), weight decay 5e-4 on kernels (flag ``wd``), threshold 0.95 (flag
``confidence``), unlabelled weight 1 (flag ``wu``). CIFAR-100: weight decay 1e-3, from the FixMatch paper
(Sec. 4 / appendix, with WRN-28-8); the repository publishes no CIFAR-100 command, so this value is the
paper's, not the code's.

BatchNorm: one forward over labelled, weak and strong images, which updates the running statistics (the
reference's single ``para_cat`` call, whose update ops are its ``post_ops``). A weak-view probability equal
to the threshold counts as confident (``>=``, reference ``pseudo_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, hp, register


@register("fixmatch")
@dataclass
class FixMatch:
    threshold: float = hp(0.95, low=0.0, high=1.0)  # tau, fixmatch.py flag confidence; paper Sec. 4
    lambda_u: float = hp(1.0, low=0.0)              # unlabelled weight, fixmatch.py flag wu
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {
        # google-research/fixmatch fixmatch.py: flag uratio 7; FLAGS.set_default('lr', 0.03); flag wd 0.0005.
        "*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4},
        # FixMatch paper (arXiv 2001.07685), Sec. 4 / appendix: weight decay 0.001 for CIFAR-100 (not in the
        # repository's files).
        "cifar100": {"weight_decay": 1e-3},
        # SVHN (svhn_noextra) and STL-10 take the '*' settings: the reference has no per-dataset flag besides
        # --dataset (README "Valid dataset names"; fixmatch.py flags), and the paper changes only CIFAR-100's wd.
    }

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_weak, u_strong = batch.u
        # One forward over all three parts, as the official code does, so BatchNorm sees one batch.
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # Pseudo-labels from the weak view: hard argmax, kept only where max probability >= threshold.
        probs = logits_w.detach().float().softmax(dim=-1)
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
