"""How good a teacher is beyond top-1: calibration (ECE, NLL) and accuracy under corruptions, as pure functions.

Every function takes logits and labels (tensors on any device) and returns 0-d tensors, so an evaluation loop
can accumulate them on the device and read them back once per evaluation.  The per-corruption summary
(:func:`corruption_summary`) works on plain floats.

* :func:`expected_calibration_error`: the usual ECE (Naeini et al., AAAI 2015; Guo et al., "On Calibration of
  Modern Neural Networks", ICML 2017, Eq. 3) with 15 equal-width confidence bins (Guo et al.'s M = 15):
  ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|, bin m = ((m - 1) / M, m / M], confidence = the top softmax
  probability, accuracy = whether that class is the label.
* :func:`negative_log_likelihood`: the mean of -log softmax(logits)[label] (natural log).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Guo et al. (ICML 2017), Sec. 2 and their experiments: M = 15 bins.
ECE_BINS = 15


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, classes) and labels (N,); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")


def top1_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of rows whose arg-max is the label (0-d float tensor)."""
    _check(logits, labels)
    return (logits.argmax(dim=1) == labels).float().mean()


def negative_log_likelihood(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood of the labels under softmax(logits), in nats (0-d tensor)."""
    _check(logits, labels)
    return F.cross_entropy(logits.float(), labels, reduction="mean")


def calibration_bins(logits: Tensor, labels: Tensor, num_bins: int = ECE_BINS) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin: count, summed confidence, summed correctness (float tensors of length ``num_bins``).

    Bin m (0-based) holds confidences in (m / M, (m + 1) / M]; sums rather than means so that a loop can add
    them over batches and call :func:`ece_from_bins` once.  No host reads (``index_add_``, not ``bincount``).
    """
    _check(logits, labels)
    probs = logits.float().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0.0, 1.0, num_bins + 1, device=logits.device)[1:-1]
    index = torch.bucketize(confidence, edges, right=False)       # edges[i-1] < c <= edges[i]
    zeros = torch.zeros(num_bins, device=logits.device)
    return (zeros.index_add(0, index, torch.ones_like(confidence)), zeros.index_add(0, index, confidence),
            zeros.index_add(0, index, correct))


def ece_from_bins(count: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> Tensor:
    """sum_m |B_m| / n * |acc(B_m) - conf(B_m)| = sum_m |correct_m - confidence_m| / n (empty bins add 0)."""
    return (correct_sum - confidence_sum).abs().sum() / count.sum()


def expected_calibration_error(logits: Tensor, labels: Tensor, num_bins: int = ECE_BINS) -> Tensor:
    """The expected calibration error with ``num_bins`` equal-width bins (module docstring), a 0-d tensor."""
    return ece_from_bins(*calibration_bins(logits, labels, num_bins))


def corruption_summary(accuracy: Mapping[tuple[str, int], float],
                       benchmark: tuple[str, ...] | None = None) -> dict[str, float]:
    """Means of per-(corruption, severity) accuracies: ``mean`` (all), ``severity<k>``, ``<corruption>``.

    ``benchmark``: the corruptions the headline ``mean`` averages over (CIFAR-10-C's 15 of Hendrycks &
    Dietterich, :data:`ssl_bench.data.corruptions.BENCHMARK_CORRUPTIONS`); the others are still reported by name.
    """
    if not accuracy:
        raise ValueError("no corruption accuracies to summarise")
    names = sorted({c for c, _ in accuracy})
    severities = sorted({s for _, s in accuracy})
    headline = [c for c in names if benchmark is None or c in benchmark]
    if not headline:
        raise ValueError(f"none of the corruptions {names} is a benchmark corruption {benchmark}")
    out = {"mean": sum(v for (c, _), v in accuracy.items() if c in headline)
           / sum(1 for c, _ in accuracy if c in headline)}
    for s in severities:
        values = [v for (c, k), v in accuracy.items() if k == s and c in headline]
        out[f"severity{s}"] = sum(values) / len(values)
    for c in names:
        values = [v for (name, _), v in accuracy.items() if name == c]
        out[c] = sum(values) / len(values)
    return out


class CalibrationMeter:
    """Accumulates top-1, ECE bins and NLL over the batches of one evaluation, on the device.

    ``update(logits, labels)`` per batch (no host reads); ``compute()`` once per evaluation returns plain
    floats ``{"top1": %, "ece": fraction, "nll": nats}``, equal to the functions above on the whole set.
    """

    def __init__(self, num_bins: int = ECE_BINS) -> None:
        self.num_bins = num_bins
        self._bins: list[Tensor] | None = None
        self._nll_sum: Tensor | None = None
        self._n = 0

    def update(self, logits: Tensor, labels: Tensor) -> None:
        bins = calibration_bins(logits, labels, self.num_bins)
        nll = F.cross_entropy(logits.float(), labels, reduction="sum")
        if self._bins is None:
            self._bins, self._nll_sum = list(bins), nll
        else:
            self._bins = [a + b for a, b in zip(self._bins, bins, strict=True)]
            self._nll_sum = self._nll_sum + nll
        self._n += labels.shape[0]

    def compute(self) -> dict[str, float]:
        if self._bins is None:
            raise ValueError("CalibrationMeter.compute() before any update()")
        count, confidence, correct = self._bins
        return {"top1": 100.0 * float(correct.sum()) / self._n, "ece": float(ece_from_bins(count, confidence, correct)),
                "nll": float(self._nll_sum) / self._n}


@torch.no_grad()
def corruption_accuracies(models: Mapping[str, nn.Module], cells: Iterable[tuple[str, int, Tensor, Tensor]],
                          batch_size: int, prepare: Callable[[Tensor], Tensor]
                          ) -> dict[str, dict[tuple[str, int], float]]:
    """Top-1 (percent) of every model (in eval mode) on each (corruption, severity, uint8 images, labels) cell.

    Returns ``{name: {(corruption, severity): accuracy}}``.  The cells are the outer loop, so each corrupted
    set is made (or read from disk) once for all the models of a training.  ``prepare``: uint8 batch -> model
    input, as for clean evaluation (``ssl_bench.run.evaluate.accuracy``).  One host read per cell.  Feed it
    ``OfficialCorruptions`` (moving each cell to the device) or ``synthetic_corruptions(test_images, seed)``
    zipped with the test labels (``ssl_bench.run.evaluate.corruption_cells`` does either).
    """
    modes = {name: model.training for name, model in models.items()}
    out: dict[str, dict[tuple[str, int], float]] = {name: {} for name in models}
    try:
        for model in models.values():
            model.eval()
        for corruption, severity, images, labels in cells:
            correct = torch.zeros(len(models), dtype=torch.long, device=labels.device)
            for start in range(0, len(images), batch_size):
                x, y = prepare(images[start:start + batch_size]), labels[start:start + batch_size]
                correct += torch.stack([(model(x).argmax(dim=-1) == y).sum() for model in models.values()])
            for name, right in zip(models, correct.tolist(), strict=True):
                out[name][(corruption, severity)] = 100.0 * right / len(images)
    finally:
        for name, model in models.items():
            model.train(modes[name])
    return out
