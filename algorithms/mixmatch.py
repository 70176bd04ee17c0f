"""MixMatch (Berthelot, Carlini, Goodfellow, Papernot, Oliver & Raffel, "MixMatch: A Holistic Approach to
Semi-Supervised Learning", NeurIPS 2019): guess a label for each unlabelled image by averaging the model's
predictions over K augmentations and sharpening the average, MixUp labelled and unlabelled examples with
their (guessed) labels, then train with cross-entropy on the mixed labelled part and squared error on the
mixed unlabelled part (Algorithm 1, Eqs. 2-5).

Targets come from the student (``targets_from = "student"``): MixMatch guesses labels with the model being
trained (``p_model(y | u; theta)``, Algorithm 1) and evaluates an exponential moving average of its weights;
the smoothed teacher is therefore only the evaluated model.

Reference settings (google-research/fixmatch ``mixmatch.py``, the FixMatch paper's reimplementation), where
they differ from FixMatch's:

* Unlabelled ratio mu = 1: ``y_in`` is ``[batch, nu]``, one unlabelled image per labelled one (FixMatch 7).
* MixUp alpha 0.5 (flag ``beta``), lambda_U 100 (flag ``w_match``), T = 0.5 (``guess_label(..., T=0.5)``),
  K = 2 weak views (``nu=2``). Learning rate 0.03 and weight decay 5e-4 are FixMatch's (``set_default('lr',
  0.03)``, flag ``wd``).
* lambda_U ramps up linearly over ``warmup_kimg = 1024`` of ``train_kimg = 65536`` kibi-images, both counted
  in images, so over the first 1/64 of training (``rampup_end``); a shortened run ramps over 1/64 of its
  steps.

The original paper differs: alpha 0.75 and lambda_U 75 on CIFAR-10 (150 on CIFAR-100), Adam with decoupled
weight decay (MixMatch paper Sec. 4; google-research/mixmatch ``runs/table1.sh``): ``--alg-arg alpha=0.75
--alg-arg lambda_u=75``. The repository's CTAugment variant (``cta/cta_mixmatch.py``) uses alpha 0.75, lr
0.002, weight decay 0.02: ``--alg-arg alpha=0.75 --lr 0.002 --weight-decay 0.02``.

Other choices:

* One MixUp coefficient per row, ``lambda' = max(lambda, 1 - lambda)``, and one permutation over labelled and
  unlabelled rows together (reference ``MixMode('xxy.yxy')``); drawn from ``batch.generator``.
* BatchNorm groups (``bn_groups``): as the reference, the mixed batch goes through the network in K + 1
  interleaved sub-batches of the labelled batch's size (``mixmatch.py``: ``layers.interleave([x] + y,
  batch)``), each normalised with its own statistics, and only the first call updates the running statistics
  (its ``post_ops``); ``bn_groups=one_batch`` sends the whole mixed batch through in one forward instead. The
  label-guessing passes (one per view, no gradient) leave the running statistics alone, as the reference
  (they precede its ``skip_ops``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, generator_of, hp, register


@register("mixmatch")
@dataclass
class MixMatch:
    temperature: float = hp(0.5, low=0.0, open_low=True)  # sharpening T, mixmatch.py guess_label(T=0.5)
    alpha: float = hp(0.5, low=0.0, open_low=True)        # MixUp Beta(alpha, alpha), mixmatch.py flag beta
    lambda_u: float = hp(100.0, low=0.0)                  # mixmatch.py flag w_match
    rampup_end: float = hp(1 / 64, low=0.0, high=1.0)     # mixmatch.py warmup_kimg=1024 of train_kimg 1 << 16
    bn_groups: str = hp("interleaved", choices=SF.BN_GROUPS)  # mixmatch.py layers.interleave([x] + y, batch)
    targets_from = "student"
    unlabeled_views = ("weak", "weak")  # K = 2 weak augmentations, mixmatch.py model(nu=2), augment d.d.d
    reference = {
        # mixmatch.py: y_in [batch, nu] (one unlabelled image per labelled one); set_default('lr', 0.03);
        # flag wd 0.0005.
        "*": {"mu": 1, "lr": 0.03, "weight_decay": 5e-4},
    }

    def loss(self, student, teacher, batch: Batch) -> Losses:
        x, views = batch.x, batch.u
        k = len(views)
        generator = generator_of(batch, self)

        # 1. Label guessing: average the predictions over the K augmentations (one pass each, as the
        #    reference), then sharpen. These passes leave the BatchNorm running statistics alone.
        with torch.no_grad(), SF.frozen_batchnorm_stats(student):
            probs = torch.stack([student(view).float().softmax(dim=-1) for view in views])
        guess = SF.sharpen(probs.mean(dim=0), self.temperature)

        # 2. MixUp every labelled and unlabelled example with a random partner from the same pool.
        inputs = torch.cat([x, *views])
        targets = torch.cat([F.one_hot(batch.y, batch.num_classes).to(guess.dtype), guess.repeat(k, 1)])
        lam, perm = SF.mixup_sample(len(inputs), self.alpha, generator)
        mixed_inputs, mixed_targets = SF.mixup(inputs, targets, lam, perm)

        # 3. Cross-entropy on the mixed labelled rows, squared error on the mixed unlabelled rows.
        n_u = len(inputs) - len(x)
        logits_x, logits_u = SF.mixed_batch_forward(student, mixed_inputs, len(x), self.bn_groups,
                                                    update_bn_from=0).split([len(x), n_u])
        targets_x, targets_u = mixed_targets.split([len(x), n_u])
        supervised = SF.soft_cross_entropy(logits_x, targets_x)
        l2u = SF.mse_consistency(logits_u, targets_u)

        weight = self.lambda_u * SF.linear_rampup(batch.progress, self.rampup_end)
        unsupervised = weight * l2u
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"unsup_weight": weight, "l2u": l2u.detach()},
        )
