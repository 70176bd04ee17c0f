"""Evaluation: top-1 accuracy, calibration (ECE, NLL), and the two smoothness quantities of the paper's Figure 3."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_bench.teacher_metrics import CalibrationMeter


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int, prepare) -> float:
    """Top-1 accuracy in percent of ``model`` (put in eval mode, restored afterwards) on uint8 ``images``.

    ``prepare`` turns a uint8 batch into the model's float input (normalisation, memory format).
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, len(images), batch_size):
        logits = model(prepare(images[start:start + batch_size]))
        correct += (logits.argmax(dim=-1) == labels[start:start + batch_size]).sum()
    model.train(was_training)
    return 100.0 * correct.item() / len(images)


@torch.no_grad()
def accuracy_and_calibration(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int,
                             prepare) -> dict[str, float]:
    """Top-1 (percent), expected calibration error (15 equal-width confidence bins, as a fraction) and negative
    log-likelihood (nats per image) of ``model`` in eval mode, from one pass over uint8 ``images``
    (``ssl_bench.teacher_metrics.CalibrationMeter``: the top-1 equals :func:`accuracy`'s)."""
    was_training = model.training
    model.eval()
    meter = CalibrationMeter()
    for start in range(0, len(images), batch_size):
        meter.update(model(prepare(images[start:start + batch_size])), labels[start:start + batch_size])
    model.train(was_training)
    return meter.compute()


@torch.no_grad()
def parameter_vector(model: nn.Module) -> Tensor:
    """All floating-point parameters as one flat fp32 vector (a snapshot for Figure 3's left panel)."""
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


@torch.no_grad()
def output_probabilities(model: nn.Module, inputs: Tensor) -> Tensor:
    """Softmax outputs in eval mode on a fixed batch (a snapshot for Figure 3's right panel)."""
    was_training = model.training
    model.eval()
    probs = model(inputs).float().softmax(dim=-1)
    model.train(was_training)
    return probs


def mean_squared_difference(a: Tensor | None, b: Tensor) -> float | None:
    """Mean over entries of (a - b)^2, or None when there is no previous snapshot."""
    if a is None:
        return None
    return float(((a - b) ** 2).mean())
