"""Pseudo-Label (Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural
Networks", ICML 2013 Workshop on Challenges in Representation Learning): the class the network being trained
predicts for an unlabelled image is used as if it were its true label.

Targets come from the student (``targets_from = "student"``): the hard labels are the model's own argmax
(no gradient through argmax); the smoothed teacher is only the evaluated model.

Choices and deviations (we follow the FixMatch/MixMatch reimplementation, which produced Table 6's row):

* Confidence threshold 0.95: only pseudo-labels whose maximum probability is at least 0.95 are trained on
  (google-research/fixmatch ``pseudo_label.py``); Lee 2013 has no threshold, ``--alg-arg threshold=0``
  reproduces it. The loss is averaged over all unlabelled images, masked ones counting zero.
* Weight 1 ramped up linearly over the first 40 % of training (reimplementation ``consistency_weight = 1``,
  ``warmup_pos = 0.4``); Lee 2013 ramps alpha linearly from 0 at epoch 100 to alpha_f = 3 at epoch 600.
* One weak view; pseudo-label and prediction come from the same forward pass (as Lee and the
  reimplementation), over labelled + unlabelled images together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, register


@register("pseudo_label")
@dataclass
class PseudoLabel:
    threshold: float = 0.95     # FixMatch reimplementation (pseudo_label.py threshold); 0 = Lee 2013
    lambda_u: float = 1.0       # FixMatch reimplementation (consistency_weight); Lee 2013 alpha_f = 3
    rampup_end: float = 0.4     # linear warm-up over 40 % of training (reimplementation warmup_pos)
    targets_from = "student"
    unlabeled_views = ("weak",)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise AlgorithmError(f"pseudo_label: threshold={self.threshold} must lie in [0, 1]")
        if self.lambda_u < 0 or self.rampup_end < 0:
            raise AlgorithmError(f"pseudo_label: lambda_u={self.lambda_u} and rampup_end={self.rampup_end} "
                                 "must be >= 0")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        (u,) = batch.u
        logits = student(torch.cat([batch.x, u]))
        logits_x, logits_u = logits.split([len(batch.x), len(u)])

        # Hard pseudo-labels from the model's own prediction, kept where it is confident.
        probs = logits_u.detach().float().softmax(dim=-1)
        pseudo_labels = probs.argmax(dim=-1)
        mask = SF.confidence_mask(probs, self.threshold)

        supervised = F.cross_entropy(logits_x, batch.y)
        pseudo = (F.cross_entropy(logits_u, pseudo_labels, reduction="none") * mask).mean()

        weight = self.lambda_u * SF.linear_rampup(batch.progress, self.rampup_end)
        unsupervised = weight * pseudo
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"mask_rate": mask.mean(), "unsup_weight": weight},
        )
