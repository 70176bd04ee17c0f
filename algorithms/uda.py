"""UDA (Xie, Dai, Hovy, Luong & Le, "Unsupervised Data Augmentation for Consistency Training", NeurIPS 2020):
the prediction on a strongly augmented (RandAugment) image is pulled towards the sharpened prediction on the
weakly augmented image, by KL divergence, on confident images only.

Targets come from the student (``targets_from = "student"``): UDA's target is the current model's own
prediction with the gradient stopped (the paper's theta~ "a fixed copy of the current parameters"); the
FixMatch reimplementation behind Table 6 also guesses with the trained model and evaluates an EMA. The
smoothed teacher is therefore only the evaluated model.

Choices and deviations:

* Confidence threshold 0.8 (UDA paper, "Sharpening Predictions": beta = 0.8 for CIFAR-10 and SVHN) and
  target temperature 0.4 (UDA's image setting; also USB's defaults, semilearn/algorithms/uda). The mask is computed on the unsharpened weak-view probabilities, as the UDA code.
  The FixMatch repository's ``uda.py`` flags default to temperature 1 and threshold 0.95; the flags behind
  its Table 2 (= Table 6 here) are not published.
* Masked images count zero in the mean over all unlabelled images (UDA code, FixMatch reimplementation).
* Training Signal Annealing is optional and off by default (``tsa=none``, as the FixMatch reimplementation
  and USB); ``tsa=linear|log|exp`` uses ``batch.progress`` as the paper's ``t/T``; the supervised loss then
  averages over the labelled examples kept (UDA code, ``max(#kept, 1)``).
* No unsupervised ramp-up (UDA has none). The entropy-minimisation term of the reimplementation (weight 0
  by default) is left out.
* The loss is ``KL(q || p_strong)`` (UDA Eq. 1); USB uses the soft cross-entropy, which differs by the
  constant entropy of ``q`` and has the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, register


@register("uda")
@dataclass
class UDA:
    threshold: float = 0.8      # confidence-based masking beta, UDA paper "Sharpening Predictions" (CIFAR-10/SVHN)
    temperature: float = 0.4    # softmax temperature tau of the target, UDA paper "Sharpening Predictions"; USB
    lambda_u: float = 1.0       # weight of the consistency loss, UDA paper Eq. 1 (lambda = 1); reimplementation wu
    tsa: str = "none"           # Training Signal Annealing, UDA paper "Training Signal Annealing" (none/linear/log/exp)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise AlgorithmError(f"uda: threshold={self.threshold} must lie in [0, 1]")
        if self.temperature <= 0 or self.lambda_u < 0:
            raise AlgorithmError(f"uda: temperature={self.temperature} must be > 0 and lambda_u={self.lambda_u} >= 0")
        if self.tsa not in SF.TSA_SCHEDULES:
            raise AlgorithmError(f"uda: tsa={self.tsa!r}; expected one of {SF.TSA_SCHEDULES}")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # Supervised loss with Training Signal Annealing: drop labelled examples already predicted above eta_t.
        eta = SF.tsa_threshold(self.tsa, batch.progress, batch.num_classes)
        p_correct = logits_x.detach().float().softmax(dim=-1).gather(1, batch.y[:, None]).squeeze(1)
        sup_mask = (p_correct <= eta).to(p_correct.dtype)
        supervised = ((F.cross_entropy(logits_x, batch.y, reduction="none") * sup_mask).sum()
                      / sup_mask.sum().clamp_min(1.0))

        # Target: the weak view's prediction, sharpened with temperature tau; kept where it is confident.
        probs_w = logits_w.detach().float().softmax(dim=-1)
        mask = SF.confidence_mask(probs_w, self.threshold)
        targets = SF.sharpen(probs_w, self.temperature)
        consistency = (SF.kl_consistency(logits_s, targets, reduction="none") * mask).mean()

        unsupervised = self.lambda_u * consistency
        return Losses(
            total=supervised + unsupervised,
            terms={"supervised": supervised, "unsupervised": unsupervised},
            logs={"mask_rate": mask.mean(), "tsa_rate": sup_mask.mean()},
        )
