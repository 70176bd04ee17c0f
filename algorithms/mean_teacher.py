"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
targets improve semi-supervised deep learning results", NeurIPS 2017): the student is trained to agree with
the smoothed teacher; the consistency cost is the squared difference of their softmax outputs on two
different augmentations of the same images, weighted by a sigmoid-shaped ramp-up.

Targets come from the smoothed teacher (``targets_from = "teacher"``): this is the algorithm where the
smoothing strategy (TMA, SE, STS) changes the targets themselves. The teacher runs in train mode (BatchNorm
on batch statistics, as the original) under ``teacher_forward`` (no graph).

Choices and deviations:

* The teacher's weights are the loop's smoother, not this file: the paper's EMA decay (0.99 during ramp-up,
  0.999 after) is whatever ``--smooth``/``--m`` say.
* Ramp-up: the paper's ``exp(-5 (1 - t)^2)`` ending at 40 % of training, as the FixMatch reimplementation
  behind Table 6 (``warmup_pos = 0.4``; it ramps linearly, ``--alg-arg rampup=linear`` reproduces that).
* Weight 50: the reimplementation's ``consistency_weight`` (google-research/fixmatch ``mean_teacher.py``), the
  setting behind Table 6; the original's CIFAR-10 Shake-Shake run (official PyTorch code,
  ``experiments/cifar10_test.py``) uses 100 with a 5-epoch ramp-up.
* Student on view 2, teacher on view 1 (two independent weak augmentations); the student's labelled and
  unlabelled images go through one forward, so BatchNorm normalises one batch.
* The student's logits come from the student's own forward (the USB bug, microsoft/Semi-supervised-learning
  issue #226, took them from the teacher's no-grad outputs, so the consistency trained nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, register, teacher_forward


@register("mean_teacher")
@dataclass
class MeanTeacher:
    lambda_u: float = 50.0      # consistency weight, FixMatch reimplementation (mean_teacher.py consistency_weight)
    rampup_end: float = 0.4     # fraction of training at which the ramp-up ends (reimplementation warmup_pos)
    rampup: str = "sigmoid"     # exp(-5(1-t)^2), Mean Teacher paper Sec. 3 / Appendix B; "linear" = reimplementation
    targets_from = "teacher"
    unlabeled_views = ("weak", "weak")  # view 0 -> teacher, view 1 -> student (independent augmentations)

    def __post_init__(self) -> None:
        if self.lambda_u < 0 or self.rampup_end < 0:
            raise AlgorithmError(f"mean_teacher: lambda_u={self.lambda_u} and rampup_end={self.rampup_end} "
                                 "must be >= 0")
        if self.rampup not in SF.RAMPUP_SHAPES:
            raise AlgorithmError(f"mean_teacher: rampup={self.rampup!r}; expected one of {SF.RAMPUP_SHAPES}")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_teacher, u_student = batch.u
        logits = student(torch.cat([batch.x, u_student]))
        logits_x, logits_u = logits.split([len(batch.x), len(u_student)])

        # The teacher's prediction on the other augmentation is the target (a constant).
        target = teacher_forward(teacher, u_teacher).float().softmax(dim=-1)
        supervised = F.cross_entropy(logits_x, batch.y)
        consistency = SF.mse_consistency(logits_u, target)

        weight = self.lambda_u * SF.rampup(self.rampup, batch.progress, self.rampup_end)
        unsupervised = weight * consistency
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"unsup_weight": weight, "consistency": consistency.detach()},
        )
