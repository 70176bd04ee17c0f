"""Evaluation: top-1 accuracy, calibration (ECE, NLL), the two smoothness quantities of the paper's Figure 3, and
accuracy under corruptions at the end of training (:class:`CorruptionPlan`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_bench.data.base import DatasetNotFoundError
from ssl_bench.data.corruptions import (
    BENCHMARK_CORRUPTIONS,
    OFFICIAL,
    SYNTHETIC_NAME,
    OfficialCorruptions,
    load_official_corruptions,
    synthetic_corruptions,
)
from ssl_bench.errors import UserError
from ssl_bench.teacher_metrics import CalibrationMeter, corruption_accuracies, corruption_summary

# --corruptions: which corrupted test set every teacher (and the student) is evaluated on once, at the end.
#   auto        the official CIFAR-10-C / CIFAR-100-C files when the data root holds them and the data set's test
#               set is the official one (never downloaded unasked: 2.9 GB), else synthetic-c
#   official    the official files (downloaded with --download, checked before training starts)
#   synthetic-c five torch-made corruptions x 5 severities (ssl_bench.data.corruptions; NOT CIFAR-10-C numbers)
#   none        no corruption evaluation
CORRUPTION_CHOICES = ("auto", "official", SYNTHETIC_NAME, "none")
# The synthetic set is made from the test images with this seed in every run, so that all runs (all seeds, all
# trainings) are judged on the same corrupted images and their differences pair exactly.
SYNTHETIC_SEED = 0


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
def recompute_batch_norm(model: nn.Module, images: Tensor, batch_size: int, prepare) -> None:
    """Replace ``model``'s BatchNorm running statistics by their values over ``images`` (uint8, every training
    image, in order), one pass in batches of ``batch_size``: SWA's recipe for an averaged model, whose averaged
    weights never produced the statistics it holds (Izmailov et al., UAI 2018, Sec. 3.2).

    ``torch.optim.swa_utils.update_bn`` does the pass (running averages with momentum None: the cumulative mean
    over batches).  Unlike timgaripov/swa's ``bn_update`` the images are neither augmented nor shuffled, so the
    pass draws nothing from the run's generators and a resumed run recomputes the same statistics.
    """
    batches = (prepare(images[start:start + batch_size]) for start in range(0, len(images), batch_size))
    torch.optim.swa_utils.update_bn(batches, model)


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


@dataclass(frozen=True)
class CorruptionPlan:
    """Which corrupted test set a training is judged on at its end, and how its cells are made.

    Evaluated once, after the last step, because one pass is 25 (synthetic-c) to 95 (CIFAR-10-C) times the clean
    test set per model, and the Spatial Ensemble paper's robustness figure (ImageNet-C) judges final models.
    """

    name: str                                    # the record's name of the set: synthetic-c, cifar10-c, cifar100-c
    official: OfficialCorruptions | None         # the files, or None for synthetic-c

    @property
    def benchmark(self) -> tuple[str, ...] | None:
        """The corruptions the headline mean averages (the official 15; every synthetic one)."""
        return BENCHMARK_CORRUPTIONS if self.official is not None else None

    def cells(self, x_test: Tensor, y_test: Tensor) -> Iterator[tuple[str, int, Tensor, Tensor]]:
        """(corruption, severity, uint8 NCHW images, labels) on the test set's device, one cell at a time."""
        if self.official is None:
            for corruption, severity, images in synthetic_corruptions(x_test, SYNTHETIC_SEED):
                yield corruption, severity, images, y_test
            return
        for corruption, severity, images, labels in self.official:
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
            yield corruption, severity, x.to(x_test.device), torch.from_numpy(labels).to(y_test.device)


def _official_matches(official: OfficialCorruptions, y_test: Tensor) -> bool:
    """The files' labels are this data set's test labels (not a subset's, not another order)."""
    labels = official.labels(1)
    return len(labels) == len(y_test) and np.array_equal(labels, y_test.cpu().numpy())


def plan_corruptions(choice: str, dataset_name: str, y_test: Tensor, data_root: Any,
                     download: bool) -> CorruptionPlan | None:
    """The corruption set of a training (``--corruptions``), checked before training starts.

    ``official`` is refused with one line when the data set has no official files or its test set is not the
    official one (a subset); ``auto`` then falls back to ``synthetic-c``.
    """
    if choice == "none":
        return None
    if choice == SYNTHETIC_NAME:
        return CorruptionPlan(SYNTHETIC_NAME, None)
    if choice not in CORRUPTION_CHOICES:
        raise UserError(f"--corruptions {choice!r} is not valid; choose from {list(CORRUPTION_CHOICES)}")
    from ssl_bench.data import resolve_data_root

    if dataset_name not in OFFICIAL:
        if choice == "official":
            raise UserError(f"--corruptions official: {dataset_name!r} has no official corruption files (there are "
                            f"{', '.join(a.name for a in OFFICIAL.values())}); pass --corruptions synthetic-c")
        return CorruptionPlan(SYNTHETIC_NAME, None)
    try:
        official = load_official_corruptions(resolve_data_root(data_root), dataset_name,
                                             download=download and choice == "official")
    except DatasetNotFoundError as exc:
        if choice == "official":
            raise UserError(f"--corruptions official: {exc}; or pass --corruptions synthetic-c") from None
        return CorruptionPlan(SYNTHETIC_NAME, None)
    if not _official_matches(official, y_test):
        if choice == "official":
            raise UserError(f"--corruptions official: the labels of {official.folder} are not the test labels of "
                            f"{dataset_name!r} ({len(official.labels(1))} files' vs {len(y_test)} test images); "
                            "pass --corruptions synthetic-c")
        return CorruptionPlan(SYNTHETIC_NAME, None)
    return CorruptionPlan(official.name, official)


def evaluate_corruptions(plan: CorruptionPlan, models: Mapping[str, nn.Module], x_test: Tensor, y_test: Tensor,
                         batch_size: int, prepare: Callable[[Tensor], Tensor]
                         ) -> dict[str, tuple[dict[tuple[str, int], float], dict[str, float]]]:
    """Per model: its accuracy on every (corruption, severity) cell and their summary (``corruption_summary``)."""
    cells = corruption_accuracies(models, plan.cells(x_test, y_test), batch_size, prepare)
    return {name: (acc, corruption_summary(acc, plan.benchmark)) for name, acc in cells.items()}
