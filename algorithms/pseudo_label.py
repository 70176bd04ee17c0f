"""Pseudo-Label (Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural
Networks", ICML 2013 Workshop on Challenges in Representation Learning): the class the network being trained
predicts for an unlabelled image is used as if it were its true label.

Targets come from the student (``targets_from = "student"``): the hard labels are the model's own argmax
(no gradient through argmax); the smoothed teacher is only the evaluated model.

Reference settings (google-research/fixmatch ``pseudo_label.py``, the FixMatch paper's reimplementation),
where they differ from FixMatch's:

* Unlabelled ratio mu = 1 (``y_in`` is ``[batch]``; FixMatch 7), one weak view. Learning rate 0.03 and weight
  decay 5e-4 as FixMatch (``set_default('lr', 0.03)``, flag ``wd``).
* Confidence threshold 0.95 (flag ``threshold``), compared strictly: a probability equal to the threshold is
  not confident (``tf.greater``; FixMatch uses ``>=``). Masked images count zero in the mean.
* Weight 1 (flag ``consistency_weight``) ramped up linearly to 40 % of training (flag ``warmup_pos = 0.4``).

The original paper differs: no threshold (``--alg-arg threshold=0``), and alpha ramped linearly from 0 at
epoch 100 to alpha_f = 3 at epoch 600 (``--alg-arg lambda_u=3``; the delayed start is not offered).

Passes as the reference: the labelled images alone (the only pass that updates the BatchNorm running
statistics, "take only first call to update batch norm"), then the unlabelled images alone (running
statistics untouched); pseudo-label and prediction come from that same unlabelled pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, hp, register


@register("pseudo_label")
@dataclass
class PseudoLabel:
    threshold: float = hp(0.95, low=0.0, high=1.0)  # pseudo_label.py flag threshold; 0 = Lee 2013
    lambda_u: float = hp(1.0, low=0.0)              # pseudo_label.py flag consistency_weight; Lee 2013: 3
    rampup_end: float = hp(0.4, low=0.0, high=1.0)  # pseudo_label.py flag warmup_pos (linear)
    targets_from = "student"
    unlabeled_views = ("weak",)
    reference = {
        # pseudo_label.py: y_in [batch] (mu 1); set_default('lr', 0.03); flag wd 0.0005.
        "*": {"mu": 1, "lr": 0.03, "weight_decay": 5e-4},
    }

    def loss(self, student, teacher, batch: Batch) -> Losses:
        (u,) = batch.u
        logits_x = student(batch.x)   # the pass that updates the BatchNorm running statistics
        with SF.frozen_batchnorm_stats(student):
            logits_u = student(u)

        # Hard pseudo-labels from the model's own prediction, kept where it is strictly above the threshold.
        probs = logits_u.detach().float().softmax(dim=-1)
        pseudo_labels = probs.argmax(dim=-1)
        mask = SF.confidence_mask(probs, self.threshold, inclusive=False)

        supervised = F.cross_entropy(logits_x, batch.y)
        pseudo = (F.cross_entropy(logits_u, pseudo_labels, reduction="none") * mask).mean()

        weight = self.lambda_u * SF.linear_rampup(batch.progress, self.rampup_end)
        unsupervised = weight * pseudo
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"mask_rate": mask.mean(), "unsup_weight": weight},
        )
