"""The supervised baseline: the labelled loss alone, trained with the same loop, augmentation, optimizer,
schedule and teacher as every SSL algorithm, so an algorithm's gain over it is what its unlabelled loss adds.

It uses no unlabelled images (``unlabeled_views = ()``: the loop draws none), and its targets are the
labels, so ``targets_from = "student"`` (the smoothed teacher is only the evaluated model, as for FixMatch).

Loop settings: FixMatch's learning rate and weight decay for every dataset family (taken from
``fixmatch.py``'s ``reference``, so there is one source), because FixMatch is the suite's main algorithm and
the baseline is meant to differ from it in the unlabelled loss only; ``mu`` is unused (no unlabelled images).
The reference's own ``fully_supervised/fs_baseline.py`` (all labels, Adam with lr 0.002, decoupled weight
decay ``wd * lr`` with wd 0.02 in ``runs/all.sh``, label smoothing 0.001) trains a different protocol, the
fully-labelled ceiling, and is not reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from ssl_bench_algorithms.fixmatch import FixMatch

from ssl_bench.algorithm import Batch, Losses, register


@register("supervised")
@dataclass
class Supervised:
    targets_from = "student"
    unlabeled_views = ()
    # FixMatch's lr and weight decay per family (algorithms/fixmatch.py, which gives their sources).
    reference = {family: {key: value for key, value in settings.items() if key in ("lr", "weight_decay")}
                 for family, settings in FixMatch.reference.items()}

    def loss(self, student, teacher, batch: Batch) -> Losses:
        supervised = F.cross_entropy(student(batch.x), batch.y)
        return Losses(total=supervised, terms={"supervised": supervised})
