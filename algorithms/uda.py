"""UDA (Xie, Dai, Hovy, Luong & Le, "Unsupervised Data Augmentation for Consistency Training", NeurIPS 2020):
the prediction on a strongly augmented (RandAugment) image is pulled towards the (optionally sharpened)
prediction on the weakly augmented image, by KL divergence, on confident images only.

Targets come from the student (``targets_from = "student"``): UDA's target is the current model's own
prediction with the gradient stopped (the paper's theta~ "a fixed copy of the current parameters"); the
FixMatch reimplementation behind Table 6 also guesses with the trained model and evaluates an EMA. The
smoothed teacher is therefore only the evaluated model.

Reference settings (google-research/fixmatch ``uda.py``, the FixMatch paper's reimplementation; its README
publishes no UDA command, so these are the file's flag defaults): the same as FixMatch's (mu = 7 from flag
``uratio``, lr 0.03, weight decay 5e-4, confidence threshold 0.95 from flag ``confidence``, unlabelled weight
1 from flag ``wu``), plus target temperature 1 (flag ``temperature``: no sharpening), Training Signal
Annealing off (flag ``tsa='no'``) and no entropy term (flag ``we = 0``, left out here). With TSA on, its
schedule runs over ``min(train_kimg, 2^14) << tsa_pos`` images with flag ``tsa_pos = 8``, i.e. 2^22 of the
2^26 training images: the first 1/16 of training (``tsa_end``).

The original paper differs: confidence threshold 0.8 and temperature 0.4 on CIFAR-10 / SVHN ("Sharpening
Predictions"; also USB's defaults), TSA over all of training: ``--alg-arg threshold=0.8 --alg-arg
temperature=0.4`` (and ``--alg-arg tsa=linear --alg-arg tsa_end=1`` for its annealing).

Other choices:

* The mask is computed on the unsharpened weak-view probabilities (``>=``, reference ``pseudo_mask``); masked
  images count zero in the mean over all unlabelled images.
* With TSA, the supervised loss averages over the labelled examples kept (reference ``max(#kept, 1)``).
* The loss is ``KL(q || p_strong)`` (UDA Eq. 1, reference ``kl_divergence_from_logits``).
* One forward over labelled, weak and strong images updates the BatchNorm running statistics (the reference's
  single ``para_cat`` call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, Losses, hp, register


@register("uda")
@dataclass
class UDA:
    threshold: float = hp(0.95, low=0.0, high=1.0)                 # uda.py flag confidence (paper: 0.8)
    temperature: float = hp(1.0, low=0.0, open_low=True)           # uda.py flag temperature (paper: 0.4)
    lambda_u: float = hp(1.0, low=0.0)                             # uda.py flag wu
    tsa: str = hp("none", choices=SF.TSA_SCHEDULES)                # uda.py flag tsa='no'
    tsa_end: float = hp(1 / 16, low=0.0, open_low=True, high=1.0)  # uda.py tsa_pos 8: 2^22 of 2^26 images
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {
        # uda.py: flag uratio 7; set_default('lr', 0.03); flag wd 0.0005.
        "*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4},
    }

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_weak, u_strong = batch.u
        logits = student(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = logits.split([len(batch.x), len(u_weak), len(u_strong)])

        # Supervised loss with Training Signal Annealing: drop labelled rows already predicted above eta_t.
        eta = SF.tsa_threshold(self.tsa, min(batch.progress / self.tsa_end, 1.0), batch.num_classes)
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
