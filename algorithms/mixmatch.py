"""MixMatch (Berthelot, Carlini, Goodfellow, Papernot, Oliver & Raffel, "MixMatch: A Holistic Approach to
Semi-Supervised Learning", NeurIPS 2019): guess a label for each unlabelled image by averaging the model's
predictions over K augmentations and sharpening the average, MixUp labelled and unlabelled examples with
their (guessed) labels, then train with cross-entropy on the mixed labelled part and squared error on the
mixed unlabelled part (Algorithm 1, Eqs. 2-5).

Targets come from the student (``targets_from = "student"``): MixMatch guesses labels with the model being
trained (``p_model(y | u; theta)``, Algorithm 1) and evaluates an exponential moving average of its weights;
the smoothed teacher is therefore only the evaluated model.

Choices and deviations:

* T = 0.5, K = 2, alpha = 0.75 (paper Sec. 4 and the official run scripts, ``--beta=0.75``; the code's flag
  default is 0.5). lambda_U = 75 for CIFAR-10 (official ``runs/table1.sh``, ``--w_match=75``; 150 for
  CIFAR-100; the paper suggests 100 as a starting point, the code's flag default): set
  ``--alg-arg lambda_u=150`` for CIFAR-100.
* lambda_U is ramped up linearly over the first 1/64 of training: the paper's "first 16,000 steps" of about
  one million (code: ``warmup_kimg = 1024`` of ``train_kimg = 65536``). The loop's ``progress`` is relative
  to the run's own length, so short runs ramp over 1/64 of their steps.
* One MixUp coefficient per row, ``lambda' = max(lambda, 1 - lambda)`` (official code); the partner
  permutation runs over labelled and unlabelled rows together (the paper's shuffled W).
* The mixed batch goes through the student in one forward, so BatchNorm normalises labelled and unlabelled
  rows together; the official code's ``interleave`` (BatchNorm statistics from one representative sub-batch
  when the batch is split across calls) is not needed. The label-guessing forward is a separate train-mode
  pass without gradient; it also updates BatchNorm running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, register


@register("mixmatch")
@dataclass
class MixMatch:
    temperature: float = 0.5    # sharpening T, MixMatch paper Sec. 3.2 / 4
    alpha: float = 0.75         # MixUp Beta(alpha, alpha), MixMatch paper Sec. 4; official runs --beta=0.75
    lambda_u: float = 75.0      # CIFAR-10: official runs/table1.sh --w_match=75 (CIFAR-100: 150; paper's default 100)
    rampup_end: float = 1 / 64  # linear ramp of lambda_U over the first 16k of ~1M steps, MixMatch paper Sec. 4
    targets_from = "student"
    unlabeled_views = ("weak", "weak")  # K = 2 augmentations per unlabelled image, MixMatch paper Sec. 4

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.alpha <= 0:
            raise AlgorithmError(f"mixmatch: temperature={self.temperature} and alpha={self.alpha} must be > 0")
        if self.lambda_u < 0 or self.rampup_end < 0:
            raise AlgorithmError(f"mixmatch: lambda_u={self.lambda_u} and rampup_end={self.rampup_end} must be >= 0")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        x, views = batch.x, batch.u
        k, n_u = len(views), len(views[0])

        # 1. Label guessing: average the model's predictions over the K augmentations, then sharpen.
        with torch.no_grad():
            probs = student(torch.cat(views)).float().softmax(dim=-1).reshape(k, n_u, -1)
            guess = SF.sharpen(probs.mean(dim=0), self.temperature)

        # 2. MixUp every labelled and unlabelled example with a random partner from the same pool.
        inputs = torch.cat([x, *views])
        targets = torch.cat([F.one_hot(batch.y, batch.num_classes).to(guess.dtype), guess.repeat(k, 1)])
        lam, perm = SF.mixup_sample(len(inputs), self.alpha, inputs.device)
        mixed_inputs, mixed_targets = SF.mixup(inputs, targets, lam, perm)

        # 3. Cross-entropy on the mixed labelled rows, squared error on the mixed unlabelled rows.
        logits_x, logits_u = student(mixed_inputs).split([len(x), k * n_u])
        targets_x, targets_u = mixed_targets.split([len(x), k * n_u])
        supervised = SF.soft_cross_entropy(logits_x, targets_x)
        l2u = SF.mse_consistency(logits_u, targets_u)

        weight = self.lambda_u * SF.linear_rampup(batch.progress, self.rampup_end)
        unsupervised = weight * l2u
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"unsup_weight": weight, "l2u": l2u.detach()},
        )
