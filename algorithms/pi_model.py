"""Pi-Model (Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017): two stochastic
augmentations of each unlabelled image go through the network being trained, and the squared difference of
the two softmax outputs is penalised, with a weight ramped up from (almost) zero.

Targets come from the student (``targets_from = "student"``): there is no teacher in the Pi-model; the
smoothed teacher is only the evaluated model, as in the FixMatch reimplementation that produced the paper's
Table 6 row (which evaluates an EMA of the weights).

Choices and deviations:

* Stop-gradient on the target branch. The original Pi-model back-propagates through both branches of
  ``||z - z~||^2``. We detach the first branch (as the FixMatch/MixMatch reimplementation behind Table 6 and
  USB do), so the target carries no gradient, which the registry-wide gradient-flow test requires. The two
  branches are exchangeable (same network, independently drawn augmentations of the same kind), so in
  expectation the two-branch gradient is twice the one-branch gradient: detaching is equivalent to halving
  the consistency weight, not to a different objective.
* Ramp-up: the Gaussian ramp ``exp(-5 (1 - t)^2)`` of the paper (there over the first 80 of 300 epochs),
  ending at 40 % of training as the reimplementation's ``warmup_pos = 0.4`` (which ramps linearly;
  ``--alg-arg rampup=linear`` reproduces it exactly).
* Weight 10: the reimplementation's ``consistency_weight`` (google-research/fixmatch ``pi_model.py``), the
  setting behind Table 6, rather than the original's ``w_max = 100`` for its own network and 300 epochs.
* One forward over labelled + both views, so BatchNorm normalises one batch (the reimplementation makes
  separate calls); FixMatch in this suite does the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, register


@register("pi_model")
@dataclass
class PiModel:
    lambda_u: float = 10.0      # consistency weight, FixMatch reimplementation (pi_model.py consistency_weight)
    rampup_end: float = 0.4     # fraction of training at which the ramp-up ends (reimplementation warmup_pos)
    rampup: str = "sigmoid"     # exp(-5(1-t)^2), Laine & Aila 2017 Sec. 2 / Appendix A; "linear" = reimplementation
    targets_from = "student"
    unlabeled_views = ("weak", "weak")  # two independent stochastic augmentations of each image

    def __post_init__(self) -> None:
        if self.lambda_u < 0 or self.rampup_end < 0:
            raise AlgorithmError(f"pi_model: lambda_u={self.lambda_u} and rampup_end={self.rampup_end} must be >= 0")
        if self.rampup not in SF.RAMPUP_SHAPES:
            raise AlgorithmError(f"pi_model: rampup={self.rampup!r}; expected one of {SF.RAMPUP_SHAPES}")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_1, u_2 = batch.u
        logits = student(torch.cat([batch.x, u_1, u_2]))
        logits_x, logits_1, logits_2 = logits.split([len(batch.x), len(u_1), len(u_2)])

        # z~: the first pass is the target (constant); z: the second pass is trained towards it.
        target = logits_1.detach().float().softmax(dim=-1)
        supervised = F.cross_entropy(logits_x, batch.y)
        consistency = SF.mse_consistency(logits_2, target)

        weight = self.lambda_u * SF.rampup(self.rampup, batch.progress, self.rampup_end)
        unsupervised = weight * consistency
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"unsup_weight": weight, "consistency": consistency.detach()},
        )
