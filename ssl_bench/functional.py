"""The shared math of SSL algorithms: pure functions, one formula each, no state, no hidden randomness.

Every algorithm file in ``algorithms/`` imports what it shares from here (``from ssl_bench import functional
as SF``) instead of copying it. Notation follows the papers: ``p`` is a row of class probabilities, ``T`` a
temperature, ``lambda`` a MixUp coefficient, ``t`` training progress in ``[0, 1]`` (the loop's
``batch.progress = step / total_steps``).

Losses upcast logits to float32, so their values do not depend on bf16 autocast.

The only function that draws random numbers is :func:`mixup_sample`; it draws from the generator it is
given (the loop's seeded, checkpointed ``batch.generator``), never from torch's global one.
:func:`frozen_batchnorm_stats` lets a forward pass leave BatchNorm running statistics alone, for the passes
the reference code does not update them with.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RAMPUP_SHAPES = ("sigmoid", "linear")
TSA_SCHEDULES = ("none", "linear", "log", "exp")
REDUCTIONS = ("mean", "none")


def _reduce(per_row: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_row.mean()
    if reduction == "none":
        return per_row
    raise ValueError(f"reduction={reduction!r}; expected one of {REDUCTIONS}")


# --- targets ------------------------------------------------------------------------------------------------


def sharpen(probs: Tensor, temperature: float) -> Tensor:
    """Temperature sharpening of class distributions (MixMatch Eq. 7; UDA's softmax temperature control).

    ``Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T)`` along the last dimension. ``T = 1`` returns ``p``;
    ``T -> 0`` approaches the one-hot argmax. For ``p = softmax(z)`` this equals ``softmax(z / T)``.
    Computed in log space (``softmax(log p / T)``) so small probabilities raised to ``1/T`` do not underflow.
    """
    if temperature <= 0:
        raise ValueError(f"sharpening temperature must be > 0, got {temperature}")
    return torch.softmax(torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny)) / temperature, dim=-1)


def confidence_mask(probs: Tensor, threshold: float, inclusive: bool = True) -> Tensor:
    """Which rows are confident enough to train on: ``1[max_c p_c >= threshold]`` as a float ``(N,)`` mask.

    FixMatch Eq. 2 and google-research/fixmatch ``fixmatch.py`` / ``uda.py`` compare with ``>=``;
    ``inclusive=False`` gives ``>`` (that repository's ``pseudo_label.py``, ``tf.greater``).
    ``threshold = 0`` with ``>=`` keeps every row.
    """
    top = probs.max(dim=-1).values
    return (top >= threshold if inclusive else top > threshold).to(probs.dtype)


def distribution_alignment(probs: Tensor, p_model: Tensor, p_target: Tensor, eps: float = 1e-6) -> Tensor:
    """ReMixMatch distribution alignment (Berthelot et al. 2020, Sec. 3.2).

    ``p~ = Normalize(p * p_target / p_model)``, where ``p_model`` is the running average of the model's
    predictions on unlabelled data and ``p_target`` the labelled (marginal) class distribution;
    ``Normalize(x)_i = x_i / sum_j x_j``. ``eps`` is added to both distributions as in the official code, so
    an unseen class cannot divide by zero.
    """
    weighted = probs * (p_target + eps) / (p_model + eps)
    return weighted / weighted.sum(dim=-1, keepdim=True)


def push_history(history: Tensor, row: Tensor) -> Tensor:
    """A sliding window of the last ``W`` rows: drop ``history[0]``, append ``row``; ``(W, C) -> (W, C)``.

    ``push_history(h, r).mean(0)`` is the running average "over the last W batches" of ReMixMatch's
    distribution alignment (W = 128).
    """
    return torch.cat([history[1:], row.to(history.dtype).unsqueeze(0)])


# --- MixUp --------------------------------------------------------------------------------------------------


def mixup_sample(num: int, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw one MixUp coefficient per row and the partner permutation (MixMatch Eqs. 8-9).

    ``lambda ~ Beta(alpha, alpha)``, ``lambda' = max(lambda, 1 - lambda)`` (so ``lambda' >= 0.5``: each mixed
    row stays closer to its own example), one per row as in the official MixMatch code; the partner of row
    ``i`` is row ``perm[i]`` of a uniform random permutation. Both are drawn from ``generator`` on its
    device (no host-device copy).
    """
    if alpha <= 0:
        raise ValueError(f"MixUp alpha must be > 0, got {alpha}")
    device = generator.device
    # torch.distributions.Beta takes no generator; Beta(a, a) is the first coordinate of Dirichlet(a, a), and
    # torch._sample_dirichlet (what torch.distributions.Dirichlet samples with) does take one.
    concentration = torch.full((num, 2), float(alpha), device=device)
    lam = torch._sample_dirichlet(concentration, generator=generator)[:, 0]
    lam = torch.maximum(lam, 1.0 - lam)
    perm = torch.randperm(num, generator=generator, device=device)
    return lam, perm


def mixup(x: Tensor, targets: Tensor, lam: Tensor | float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of inputs and their target distributions with partner rows ``perm`` (MixMatch Eqs. 10-11).

    ``x'_i = lambda_i x_i + (1 - lambda_i) x_perm[i]`` and ``p'_i = lambda_i p_i + (1 - lambda_i) p_perm[i]``.
    ``lam`` is one float or one coefficient per row (broadcast over the remaining dimensions).
    """
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    lam_x = lam.reshape(-1, *([1] * (x.dim() - 1))) if lam.dim() else lam
    lam_t = lam.to(targets.dtype)
    lam_t = lam_t.reshape(-1, *([1] * (targets.dim() - 1))) if lam.dim() else lam_t
    return lam_x * x + (1 - lam_x) * x[perm], lam_t * targets + (1 - lam_t) * targets[perm]


# --- BatchNorm running statistics ---------------------------------------------------------------------------


# torch's BatchNorm layers, whose forward reads ``track_running_stats`` at call time.
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every BatchNorm layer's running statistics as they were.

    The layers still normalise with the batch's statistics in training mode, as the reference code's extra
    passes do (they run with ``training=True`` but their update ops are not among the ``post_ops`` it
    runs, google-research/fixmatch ``mixmatch.py``, ``remixmatch_no_cta.py``, ``mean_teacher.py``).
    Implemented by switching ``track_running_stats`` off for the duration: torch's BatchNorm then uses
    batch statistics and updates neither ``running_mean``/``running_var`` nor ``num_batches_tracked``.
    Copying the buffers back afterwards would not do: the in-place copy invalidates them for the backward
    pass of a pass with gradient (ReMixMatch's rotation pass). Evaluation mode is unaffected. Layers of
    the ``BATCHNORM_TYPES`` (and their subclasses, e.g. timm's ``BatchNormAct2d``) are frozen.
    """
    layers = [m for m in module.modules() if isinstance(m, BATCHNORM_TYPES) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


# --- losses -------------------------------------------------------------------------------------------------


def soft_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy against target distributions: ``H(q, p) = -sum_c q_c log softmax(z)_c`` per row.

    Equals ``F.cross_entropy(z, y)`` when ``q`` is ``one_hot(y)``. MixMatch's labelled loss on mixed labels,
    ReMixMatch's unlabelled and pre-mixup losses. ``reduction``: ``"mean"`` over rows or ``"none"``.
    """
    return _reduce(-(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1), reduction)


def mse_consistency(logits: Tensor, target_probs: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error between probabilities: ``||softmax(z) - q||^2 / C`` per row (C classes).

    The consistency cost of the Pi-model (Laine & Aila 2017) and Mean Teacher (Tarvainen & Valpola 2017),
    and MixMatch's ``L_U = 1/(L |U'|) sum ||q - p_model(y|u)||^2`` (Eq. 4) with ``reduction="mean"``.
    """
    per_row = (torch.softmax(logits.float(), dim=-1) - target_probs).pow(2).mean(dim=-1)
    return _reduce(per_row, reduction)


def kl_consistency(logits: Tensor, target_probs: Tensor, reduction: str = "mean") -> Tensor:
    """``KL(q || softmax(z)) = sum_c q_c (log q_c - log softmax(z)_c)`` per row (``0 log 0 = 0``).

    UDA's consistency loss (Xie et al. 2020, Eq. 1) with the target ``q`` held fixed. It differs from
    :func:`soft_cross_entropy` by the entropy of ``q``, a constant: the gradient is the same.
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    per_row = (torch.xlogy(target_probs, target_probs) - target_probs * log_p).sum(dim=-1)
    return _reduce(per_row, reduction)


# --- schedules ----------------------------------------------------------------------------------------------


def _phase(progress: float, end: float) -> float:
    if end < 0:
        raise ValueError(f"ramp-up end must be >= 0 (a fraction of training), got {end}")
    if end == 0:
        return 1.0
    return min(max(progress / end, 0.0), 1.0)


def sigmoid_rampup(progress: float, end: float) -> float:
    """The Gaussian ("sigmoid-shaped") ramp-up of Laine & Aila 2017 and Mean Teacher: ``exp(-5 (1 - t)^2)``.

    ``t = clip(progress / end, 0, 1)``: ``exp(-5)`` at the start, 1 from ``progress >= end`` on;
    ``end = 0`` means no ramp (always 1).
    """
    t = _phase(progress, end)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(progress: float, end: float) -> float:
    """Linear ramp-up ``t = clip(progress / end, 0, 1)``: 0 at the start, 1 from ``progress >= end`` on.

    The warm-up of the MixMatch / FixMatch code bases (``warmup_pos``, ``warmup_kimg``); ``end = 0`` means 1.
    """
    return _phase(progress, end)


def rampup(shape: str, progress: float, end: float) -> float:
    """:func:`sigmoid_rampup` or :func:`linear_rampup` by name (``shape`` in ``RAMPUP_SHAPES``)."""
    if shape == "sigmoid":
        return sigmoid_rampup(progress, end)
    if shape == "linear":
        return linear_rampup(progress, end)
    raise ValueError(f"ramp-up shape {shape!r}; expected one of {RAMPUP_SHAPES}")


def tsa_threshold(schedule: str, progress: float, num_classes: int) -> float:
    """UDA's Training Signal Annealing threshold (Xie et al. 2020, Sec. 3.2).

    ``eta_t = alpha_t (1 - 1/K) + 1/K`` with ``alpha_t = t`` (linear), ``1 - exp(-5 t)`` (log) or
    ``exp(5 (t - 1))`` (exp); ``"none"`` gives 1 (nothing masked). Labelled examples whose probability of
    the correct class exceeds ``eta_t`` are left out of the supervised loss.
    """
    t = min(max(progress, 0.0), 1.0)
    if schedule == "none":
        return 1.0
    if schedule == "linear":
        alpha = t
    elif schedule == "log":
        alpha = 1.0 - math.exp(-5.0 * t)
    elif schedule == "exp":
        alpha = math.exp(5.0 * (t - 1.0))
    else:
        raise ValueError(f"TSA schedule {schedule!r}; expected one of {TSA_SCHEDULES}")
    return alpha * (1.0 - 1.0 / num_classes) + 1.0 / num_classes


# --- BatchNorm groups of a mixed batch (MixMatch, ReMixMatch) -------------------------------------------------


def interleave_offsets(batch: int, groups: int) -> list[int]:
    """Row offsets of ``groups`` slices of a ``batch``-row chunk, as equal as possible, the larger ones last
    (google-research/fixmatch ``libml/layers.py`` ``interleave_offsets``)."""
    sizes = [batch // groups] * groups
    for i in range(batch - sum(sizes)):
        sizes[-i - 1] += 1
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


def interleave(chunks: list[Tensor]) -> list[Tensor]:
    """Swap slice ``i`` of chunk 0 with slice ``i`` of chunk ``i`` (``libml/layers.py`` ``interleave``).

    With ``G = len(chunks)`` chunks of ``B`` rows each (the labelled batch first, then the unlabelled views),
    every returned chunk holds about ``B / G`` rows of the labelled batch and the rest of one unlabelled view,
    so each forward pass (and each BatchNorm) sees a mixture of the reference's batch size. The map is its own
    inverse: ``interleave(interleave(c)) == c``, which un-interleaves the logits.
    """
    batch = len(chunks[0])
    if any(len(c) != batch for c in chunks):
        raise ValueError(f"interleave needs chunks of one size, got {[len(c) for c in chunks]}")
    offsets = interleave_offsets(batch, len(chunks))
    pieces = [[c[offsets[p]:offsets[p + 1]] for p in range(len(chunks))] for c in chunks]
    for i in range(1, len(chunks)):
        pieces[0][i], pieces[i][i] = pieces[i][i], pieces[0][i]
    return [torch.cat(p) for p in pieces]


def interleaved_forward(model: nn.Module, chunks: list[Tensor], update_bn_from: int) -> list[Tensor]:
    """The model's outputs for ``chunks`` computed as the reference does for a mixed batch: one forward per
    interleaved sub-batch, each normalised with its own BatchNorm statistics, and only sub-batch
    ``update_bn_from`` (0 or -1) updating the running statistics. Returns the outputs in ``chunks``' order.

    MixMatch keeps the first call's update ops (``mixmatch.py``: ``post_ops`` collected after
    ``batches[0]``), ReMixMatch the last call's (``remixmatch_no_cta.py``: after ``batches[:-1]``).
    """
    batches = interleave(chunks)
    keep = update_bn_from % len(batches)
    outputs = []
    for i, sub_batch in enumerate(batches):
        if i == keep:
            outputs.append(model(sub_batch))
        else:
            with frozen_batchnorm_stats(model):
                outputs.append(model(sub_batch))
    return interleave(outputs)


BN_GROUPS = ("interleaved", "one_batch")


def mixed_batch_forward(model: nn.Module, mixed: Tensor, batch: int, bn_groups: str, update_bn_from: int) -> Tensor:
    """The model's output for a mixed batch of ``k * batch`` rows (labelled rows first, then each unlabelled
    view): ``interleaved`` = the reference's ``k`` interleaved sub-batches of ``batch`` rows
    (``interleaved_forward``); ``one_batch`` = one forward over all rows."""
    if bn_groups == "one_batch":
        return model(mixed)
    return torch.cat(interleaved_forward(model, list(mixed.split(batch)), update_bn_from))


# --- running statistics (state kept by the algorithm's module; these compute its next value) --------------------


def ema_update(average: Tensor, value: Tensor, momentum: float, started: Tensor | bool = True) -> Tensor:
    """Exponential moving average ``m * average + (1 - m) * value``; ``value`` itself where not ``started``.

    ``started=False`` (a bool or a boolean tensor, so no host-device sync) starts the average at the first value,
    as USB's ``DistAlignEMAHook`` does with its ``p_model`` (None until the first batch); FreeMatch's and
    SoftMatch's confidence averages start from a fixed prior instead (``started=True``).
    """
    moved = average * momentum + value * (1.0 - momentum)
    if isinstance(started, bool):
        return moved if started else value.to(moved.dtype).expand_as(moved).clone()
    return torch.where(started, moved, value.to(moved.dtype))


def scatter_last(table: Tensor, index: Tensor, rows: Tensor, valid: Tensor | None = None) -> Tensor:
    """A copy of ``table`` with ``table[index[i]] = rows[i]`` for every valid ``i``; the last ``i`` wins a repeat.

    Per-image state (FlexMatch's selected labels, SimMatch's labelled memory bank) is written by index, and an
    image can appear twice in one (global) batch. An indexed assignment with repeated indices leaves the winner
    undefined on a GPU; this picks the last row, as a sequential loop would, with no host-device sync:
    ``table`` is ``(N, ...)``, ``index`` ``(n,)`` in ``[0, N)``, ``rows`` ``(n, ...)``, ``valid`` ``(n,)`` bool.
    """
    order = torch.arange(len(index), device=index.device)
    if valid is not None:
        order = torch.where(valid, order, -1)
    last = torch.full((len(table),), -1, dtype=torch.long, device=index.device)
    last = last.scatter_reduce(0, index, order, reduce="amax")   # the last valid row per entry, or -1
    written = rows.to(table.dtype)[last.clamp_min(0)]
    keep = (last >= 0).reshape(-1, *([1] * (table.dim() - 1)))
    return torch.where(keep, written, table)


ALIGNMENT_TARGETS = ("uniform", "labelled")


def moving_alignment_averages(p_model: Tensor, p_target: Tensor, started: Tensor | bool, probs_u: Tensor,
                              probs_x: Tensor, momentum: float, target: str) -> tuple[Tensor, Tensor]:
    """The next ``(p_model, p_target)`` of EMA distribution alignment (USB ``DistAlignEMAHook.update_p``).

    ``p_model``: EMA of the mean unlabelled prediction ``mean(probs_u)``, starting at the first batch's mean
    (``started=False``). ``p_target``: unchanged for ``target="uniform"``; for ``"labelled"`` the EMA of the mean
    labelled prediction ``mean(probs_x)`` (USB's ``p_target_type='model'``, starting uniform). Align with
    :func:`distribution_alignment`. Used by SoftMatch (uniform) and AdaMatch (labelled).
    """
    if target not in ALIGNMENT_TARGETS:
        raise ValueError(f"alignment target {target!r}; expected one of {ALIGNMENT_TARGETS}")
    p_model = ema_update(p_model, probs_u.mean(dim=0), momentum, started=started)
    if target == "labelled":
        p_target = ema_update(p_target, probs_x.mean(dim=0), momentum)
    return p_model, p_target
