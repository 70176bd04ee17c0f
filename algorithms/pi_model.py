"""Pi-Model (Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017): two stochastic
augmentations of each unlabelled image go through the network being trained, and the squared difference of
the two softmax outputs is penalised, with a weight ramped up from zero.

Targets come from the student (``targets_from = "student"``): there is no teacher in the Pi-model; the
smoothed teacher is only the evaluated model, as in the FixMatch reimplementation that produced the paper's
Table 6 row (which evaluates an EMA of the weights).

Reference settings (google-research/fixmatch ``pi_model.py``, the FixMatch paper's reimplementation), where
they differ from FixMatch's:

* Unlabelled ratio mu = 1 (``y_in`` is ``[batch, 2]``; FixMatch 7). Learning rate 0.03 and weight decay 5e-4
  as FixMatch (``set_default('lr', 0.03)``, flag ``wd``).
* Consistency weight 10 (flag ``consistency_weight``), ramped up linearly to 40 % of training (flag
  ``warmup_pos = 0.4``).
* Stop-gradient on the first branch (reference ``logits_teacher = tf.stop_gradient(logits_y)``).

The original paper differs: the Gaussian ramp ``exp(-5 (1 - t)^2)`` over its first 80 of 300 epochs
(``--alg-arg rampup=sigmoid --alg-arg rampup_end=0.267``), ``w_max = 100`` for its own network
(``--alg-arg lambda_u=100``), and gradient through both branches (not offered: the two branches are
exchangeable, so in expectation that only doubles the consistency gradient, i.e. ``lambda_u`` x 2).

Passes as the reference: the labelled images alone (the only pass that updates the BatchNorm running
statistics, "take only first call to update batch norm"), then each unlabelled view alone (normalised with
its own batch's statistics, running statistics untouched).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, hp, register


@register("pi_model")
@dataclass
class PiModel:
    lambda_u: float = hp(10.0, low=0.0)                   # pi_model.py flag consistency_weight
    rampup_end: float = hp(0.4, low=0.0, high=1.0)        # pi_model.py flag warmup_pos
    rampup: str = hp("linear", choices=SF.RAMPUP_SHAPES)  # pi_model.py: linear; Laine & Aila: sigmoid
    targets_from = "student"
    unlabeled_views = ("weak", "weak")  # two independent stochastic augmentations of each image
    reference = {
        # pi_model.py: y_in [batch, 2] (mu 1); set_default('lr', 0.03); flag wd 0.0005.
        "*": {"mu": 1, "lr": 0.03, "weight_decay": 5e-4},
    }

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_1, u_2 = batch.u
        logits_x = student(batch.x)   # the pass that updates the BatchNorm running statistics
        with SF.frozen_batchnorm_stats(student):
            with torch.no_grad():     # z~: the first pass is the target (a constant)
                target = student(u_1).float().softmax(dim=-1)
            logits_2 = student(u_2)   # z: the second pass is trained towards it

        supervised = F.cross_entropy(logits_x, batch.y)
        consistency = SF.mse_consistency(logits_2, target)

        weight = self.lambda_u * SF.rampup(self.rampup, batch.progress, self.rampup_end)
        unsupervised = weight * consistency
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"unsup_weight": weight, "consistency": consistency.detach()},
        )
