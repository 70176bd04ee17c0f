"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
targets improve semi-supervised deep learning results", NeurIPS 2017): the student is trained to agree with
the smoothed teacher; the consistency cost is the squared difference of their softmax outputs on two
different augmentations of the same images, weighted by a ramp-up.

Targets come from the smoothed teacher (``targets_from = "teacher"``): this is the algorithm where the
smoothing strategy (TMA, SE, STS) changes the targets themselves. The teacher runs in train mode (BatchNorm
on batch statistics, as the reference's EMA pass with ``training=True``) under ``teacher_forward`` (no
graph, running statistics untouched).

Reference settings (google-research/fixmatch ``mean_teacher.py``, the FixMatch paper's reimplementation),
where they differ from FixMatch's:

* Unlabelled ratio mu = 1 (``y_in`` is ``[batch, 2]``; FixMatch 7). Learning rate 0.03 and weight decay 5e-4
  as FixMatch (``set_default('lr', 0.03)``, flag ``wd``).
* Consistency weight 50 (flag ``consistency_weight``), ramped up linearly to 40 % of training (flag
  ``warmup_pos = 0.4``).
* The teacher's weights are the loop's smoother, not this file: the reference's EMA decay 0.999 (flag
  ``ema``) is what ``--smooth tma`` with the default ``--m`` gives.

The original paper differs: the sigmoid-shaped ramp ``exp(-5 (1 - t)^2)`` (``--alg-arg rampup=sigmoid``;
the paper ramps over its first epochs, ``--alg-arg rampup_end=...`` sets the fraction) and, for its
CIFAR-10 Shake-Shake run, weight 100 (official PyTorch code, ``experiments/cifar10_test.py``:
``--alg-arg lambda_u=100``).

Other choices:

* Student on view 2, teacher on view 1 (two independent weak augmentations).
* Passes as the reference: the labelled images alone (the only pass that updates the BatchNorm running
  statistics, "take only first call to update batch norm"), the teacher's view, the student's view (each
  normalised with its own batch's statistics, running statistics untouched).
* The student's logits come from the student's own forward (the USB bug, microsoft/Semi-supervised-learning
  issue #226, took them from the teacher's no-grad outputs, so the consistency trained nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, hp, register, teacher_forward


@register("mean_teacher")
@dataclass
class MeanTeacher:
    lambda_u: float = hp(50.0, low=0.0)                 # mean_teacher.py flag consistency_weight
    rampup_end: float = hp(0.4, low=0.0, high=1.0)      # mean_teacher.py flag warmup_pos
    rampup: str = hp("linear", choices=SF.RAMPUP_SHAPES)  # mean_teacher.py: linear; paper: sigmoid
    targets_from = "teacher"
    unlabeled_views = ("weak", "weak")  # view 0 -> teacher, view 1 -> student (independent augmentations)
    reference = {
        # mean_teacher.py: y_in [batch, 2] (mu 1); set_default('lr', 0.03); flag wd 0.0005.
        "*": {"mu": 1, "lr": 0.03, "weight_decay": 5e-4},
    }

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_teacher, u_student = batch.u
        logits_x = student(batch.x)   # the pass that updates the BatchNorm running statistics
        with SF.frozen_batchnorm_stats(student):
            logits_u = student(u_student)

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
