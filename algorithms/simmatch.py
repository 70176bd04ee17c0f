"""SimMatch (Zheng, You, Huang, Wang, Qian & Xu, "SimMatch: Semi-supervised Learning with Similarity
Matching", CVPR 2022): FixMatch's class-level consistency plus an instance-level one, the similarity of each
unlabelled image's embedding to a memory bank of labelled embeddings, the two levels exchanging information
by label propagation.

    e = Normalize(g(f(x)))                          projection head g on the backbone's pooled features f
    p_w  = DA(softmax(z_w))                         alignment towards uniform over the last da_len batches
    q_w  = softmax(e_w . bank / T)                  similarity of the weak view to the L labelled embeddings
    q^   = Normalize(q_w * p_w[label_bank])         unfolding: instance targets scaled by class confidence
    p^   = alpha p_w + (1 - alpha) aggregate_by_label(q_w)          aggregation: class targets from similarity
    L_in = CE(q^, softmax(e_s . bank / T));   L_u = mean_u 1[max p^ >= tau] CE(p^, z_s)
    loss = CE(x, y) + lambda_u L_u + lambda_in L_in
    bank[i] <- Normalize(0.7 bank[i] + 0.3 e_x[i]),  label_bank[i] <- y[i]        for the labelled batch

Targets come from the student (``targets_from = "student"``): USB's SimMatch on CIFAR (``use_ema_teacher =
False`` for cifar10 / cifar100) takes every target, and the labelled embeddings of the bank, from the model
being trained; the smoothed teacher is only the evaluated model.

State (``setup``): a ``SimMatchState`` module holding the projection heads (trained with the student, as
ReMixMatch's rotation head is) and, as buffers (checkpointed), the labelled memory bank (one embedding and label
per image of the split's labelled set, indexed by ``Batch.x_index``; embeddings drawn from the run's seeded
initialisation) and the alignment window. Under torchrun the bank and the window are updated from every rank's
batch (``gather_from_ranks``, USB ``concat_all_gather``).

Reference settings (microsoft/Semi-supervised-learning, "USB", ``semilearn/algorithms/simmatch/simmatch.py``,
``semilearn/algorithms/hooks/dist_align.py`` and ``config/classic_cv/simmatch/simmatch_cifar10_40_0.yaml``; the
other CIFAR label budgets agree except for ``K`` and the weight decay):

* T = 0.1 (``T``), tau = 0.95 (``p_cutoff``), alpha = 0.9 (``smoothing_alpha``), lambda_u = 1
  (``ulb_loss_ratio``), lambda_in = 1 (``in_loss_ratio``), projection 128-d (``proj_size``) by the mean of
  three heads (``use_epass: True``; each ``Linear(F, F) - ReLU - Linear(F, 128)``), the alignment over the last
  32 batches (``da_len: 32``; the code's default is 256), towards the uniform distribution, its window starting
  at zeros (``DistAlignQueueHook``) and pushed before the alignment.
* The bank holds every labelled image (``args.K = args.lb_dest_len``); its momentum 0.7 is fixed in the code for
  CIFAR (``self.ema_bank = 0.7``); unit-norm Gaussian initial embeddings and label 0 (``init``).
* During the first epoch (``epoch == 0``: 1024 of 2^20 steps, ``warmup = 1/1024``) L_in is multiplied by 0 and the
  class targets are the aligned predictions alone.
* The masked class loss uses the soft targets p^ (``consistency_loss(logits_x_ulb_s, probs_x_ulb_w, 'ce')``).
* mu = 7 (``uratio``), lr 0.03, weight decay 5e-4 (CIFAR-10) / 1e-3 (CIFAR-100) (``weight_decay``).

Other choices: one forward over labelled, weak and strong images updates the BatchNorm statistics (USB
``use_cat: True``); logits are ``student.classifier`` of the same pooled features the heads read; an image drawn
twice in one global batch updates its bank entry once, from its last occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import AlgorithmError, Batch, Losses, gather_from_ranks, hp, indices_of, register

CONFIG = "USB config/classic_cv/simmatch/simmatch_cifar10_40_0.yaml"
CODE = "USB semilearn/algorithms/simmatch/simmatch.py"


def propagate(probs: Tensor, similarity: Tensor, bank_labels: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """SimMatch's label propagation (Sec. 3.2): ``(instance targets q^, class targets p^)``.

    ``probs``: ``(n, C)`` class predictions; ``similarity``: ``(n, L)`` softmax similarities to the bank;
    ``bank_labels``: ``(L,)``. Unfolding ``q^ = Normalize(q * probs[:, bank_labels])``; aggregation
    ``p^ = alpha probs + (1 - alpha) sum_{j: label_j = c} q_j`` (USB: ``probs`` itself when ``alpha = 1``).
    """
    unfolded = similarity * probs.gather(1, bank_labels.expand(len(probs), -1))
    unfolded = unfolded / unfolded.sum(dim=1, keepdim=True)
    aggregated = torch.zeros_like(probs).scatter_add(1, bank_labels.expand(len(probs), -1), similarity)
    return unfolded, alpha * probs + (1.0 - alpha) * aggregated


class SimMatchState(nn.Module):
    """The projection heads, the labelled memory bank and the distribution-alignment window."""

    def __init__(self, num_features: int, num_classes: int, num_labeled: int, proj_size: int, heads: int,
                 da_window: int):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(num_features, num_features), nn.ReLU(), nn.Linear(num_features, proj_size))
            for _ in range(heads))
        # USB init: randn(proj_size, K) normalised per sample, labels 0; a window of zeros (DistAlignQueueHook).
        self.register_buffer("bank", F.normalize(torch.randn(num_labeled, proj_size), dim=1))
        self.register_buffer("bank_labels", torch.zeros(num_labeled, dtype=torch.long))
        self.register_buffer("p_model_history", torch.zeros(da_window, num_classes))

    def embed(self, features: Tensor) -> Tensor:
        """The unit-norm embedding: the mean of the heads' outputs (USB ``use_epass``), L2-normalised."""
        return F.normalize(torch.stack([head(features.float()) for head in self.heads]).mean(dim=0), dim=1)

    @torch.no_grad()
    def update_bank(self, embeddings: Tensor, labels: Tensor, index: Tensor, momentum: float) -> None:
        """``bank[i] <- Normalize(m bank[i] + (1 - m) e_i)``, ``labels[i] <- y_i`` (USB ``update_bank``)."""
        moved = F.normalize(momentum * self.bank[index] + (1.0 - momentum) * embeddings, dim=1)
        self.bank.copy_(SF.scatter_last(self.bank, index, moved))
        self.bank_labels.copy_(SF.scatter_last(self.bank_labels, index, labels))


@register("simmatch")
@dataclass
class SimMatch:
    temperature: float = hp(0.1, low=0.0, open_low=True, source=f"{CONFIG} T")
    threshold: float = hp(0.95, low=0.0, high=1.0, source=f"tau, {CONFIG} p_cutoff")
    alpha: float = hp(0.9, low=0.0, high=1.0, source=f"{CONFIG} smoothing_alpha")
    lambda_u: float = hp(1.0, low=0.0, source=f"{CONFIG} ulb_loss_ratio")
    lambda_in: float = hp(1.0, low=0.0, source=f"{CONFIG} in_loss_ratio")
    proj_size: int = hp(128, low=1, source=f"{CONFIG} proj_size")
    heads: int = hp(3, low=1, source=f"{CONFIG} use_epass: True (3 heads averaged; 1 without)")
    da_window: int = hp(32, low=1, source=f"{CONFIG} da_len (simmatch.py's argument default: 256)")
    bank_momentum: float = hp(0.7, low=0.0, high=1.0, source=f"{CODE} __init__ self.ema_bank = 0.7 (CIFAR)")
    warmup: float = hp(1 / 1024, low=0.0, high=1.0,
                       source=f"{CODE} train_step 'if self.epoch == 0'; {CONFIG} epoch 1024")
    # Declared state, not a hyper-parameter: the module setup() returns (the loop trains and checkpoints it).
    state: SimMatchState | None = field(default=None, init=False, repr=False, compare=False)
    targets_from = "student"
    unlabeled_views = ("weak", "strong")
    reference = {"*": {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}, "cifar100": {"weight_decay": 1e-3}}
    reference_sources = {"*": f"{CONFIG} uratio / lr / weight_decay",
                         "cifar100": "USB config/classic_cv/simmatch/simmatch_cifar100_{400,2500,10000}_0.yaml "
                                     "weight_decay"}

    def setup(self, student: nn.Module, num_classes: int, *, num_labeled: int) -> nn.Module:
        """Create the projection heads, the labelled memory bank and the alignment window."""
        self.state = SimMatchState(student.num_features, num_classes, num_labeled, self.proj_size, self.heads,
                                   self.da_window)
        return self.state

    def loss(self, student, teacher, batch: Batch) -> Losses:
        state = self.state
        if state is None:
            raise AlgorithmError("simmatch: call setup(student, num_classes, num_labeled=...) before loss(); "
                                 "the loop does this")
        x_index, _ = indices_of(batch, self)
        u_weak, u_strong = batch.u
        n_x, n_u = len(batch.x), len(u_weak)
        features = student.features(torch.cat([batch.x, u_weak, u_strong]))
        logits_x, logits_w, logits_s = student.classifier(features).split([n_x, n_u, n_u])
        embed_x, embed_w, embed_s = state.embed(features).split([n_x, n_u, n_u])
        bank = state.bank.clone()
        supervised = F.cross_entropy(logits_x, batch.y)

        with torch.no_grad():
            # 1. Class predictions of the weak view, aligned towards uniform over the window (pushed first).
            probs = logits_w.detach().float().softmax(dim=-1)
            state.p_model_history.copy_(SF.push_history(state.p_model_history,
                                                        gather_from_ranks(probs).mean(dim=0)))
            uniform = torch.full_like(probs[0], 1.0 / batch.num_classes)
            probs = SF.distribution_alignment(probs, state.p_model_history.mean(dim=0), uniform)
            # 2. Label propagation between the class predictions and the similarities to the labelled bank.
            similarity = (embed_w.detach() @ bank.T / self.temperature).softmax(dim=1)
            instance_targets, class_targets = propagate(probs, similarity, state.bank_labels, self.alpha)
        warm = batch.progress < self.warmup   # USB epoch 0: no instance loss, no propagation into class targets
        if warm:
            class_targets = probs

        # 3. Instance consistency of the strong view to the bank, class consistency on the confident images.
        instance = SF.soft_cross_entropy(embed_s @ bank.T / self.temperature, instance_targets)
        if warm:
            instance = instance * 0.0
        mask = SF.confidence_mask(class_targets, self.threshold)
        unsupervised = (SF.soft_cross_entropy(logits_s, class_targets, reduction="none") * mask).mean()

        # 4. Write the labelled batch's embeddings into the bank.
        state.update_bank(gather_from_ranks(embed_x.detach()), gather_from_ranks(batch.y),
                          gather_from_ranks(x_index), self.bank_momentum)

        terms = {"supervised": supervised, "unsupervised": self.lambda_u * unsupervised,
                 "instance": self.lambda_in * instance}
        return Losses(total=sum(terms.values()), terms=terms, logs={"mask_rate": mask.mean()})
