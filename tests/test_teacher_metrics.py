"""ECE, NLL and the corruption summary against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.teacher_metrics import (
    calibration_bins,
    corruption_summary,
    ece_from_bins,
    expected_calibration_error,
    negative_log_likelihood,
    top1_accuracy,
)

# Four samples, two classes; softmax(log p) = p.  Top confidences 0.9 (right), 0.9 (wrong), 0.65 (right),
# 0.55 (right): 15 bins of width 1/15, so 0.9 is in bin 13 (0.8667, 0.9333], 0.65 in bin 9 (0.6, 0.6667] and
# 0.55 in bin 8 (0.5333, 0.6].
PROBS = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.35, 0.65], [0.55, 0.45]])
LABELS = torch.tensor([0, 1, 1, 0])
LOGITS = PROBS.log()


def test_ece_hand_computed() -> None:
    # bin 13: 2 samples, accuracy 1/2, confidence 0.9 -> 2/4 * 0.4; bin 9: 1/4 * |1 - 0.65|; bin 8: 1/4 * 0.45
    expected = 0.5 * 0.4 + 0.25 * 0.35 + 0.25 * 0.45
    assert expected_calibration_error(LOGITS, LABELS).item() == pytest.approx(expected, abs=1e-6)
    count, conf, correct = calibration_bins(LOGITS, LABELS)
    assert count.tolist() == [0] * 8 + [1, 1] + [0] * 3 + [2, 0]
    assert correct[13].item() == 1 and conf[13].item() == pytest.approx(1.8)


def test_ece_of_a_perfectly_calibrated_set_is_zero_and_bins_add_over_batches() -> None:
    # confidence 0.75 on 4 samples, 3 right: accuracy equals confidence in the bin
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs.log(), labels).item() == pytest.approx(0.0, abs=1e-6)
    halves = [calibration_bins(LOGITS[i:i + 2], LABELS[i:i + 2]) for i in (0, 2)]
    summed = [a + b for a, b in zip(*halves, strict=True)]
    assert ece_from_bins(*summed).item() == pytest.approx(expected_calibration_error(LOGITS, LABELS).item())


def test_nll_and_top1_hand_computed() -> None:
    expected = -(math.log(0.9) + math.log(0.1) + math.log(0.65) + math.log(0.55)) / 4
    assert negative_log_likelihood(LOGITS, LABELS).item() == pytest.approx(expected, rel=1e-6)
    assert top1_accuracy(LOGITS, LABELS).item() == 0.75


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(4, 2\) and \(3,\)"):
        expected_calibration_error(LOGITS, LABELS[:3])


def test_corruption_summary() -> None:
    accuracy = {("fog", 1): 0.9, ("fog", 2): 0.7, ("pixelate", 1): 0.8, ("pixelate", 2): 0.6,
                ("saturate", 1): 0.1, ("saturate", 2): 0.1}
    out = corruption_summary(accuracy, benchmark=("fog", "pixelate"))
    assert out["mean"] == pytest.approx(0.75)                   # saturate is not a benchmark corruption
    assert out["severity1"] == pytest.approx(0.85) and out["severity2"] == pytest.approx(0.65)
    assert out["fog"] == pytest.approx(0.8) and out["saturate"] == pytest.approx(0.1)
    assert corruption_summary(accuracy)["mean"] == pytest.approx(3.2 / 6)


def test_meter_over_batches_equals_the_whole_set() -> None:
    from ssl_bench.teacher_metrics import CalibrationMeter

    torch.manual_seed(0)
    logits, labels = torch.randn(50, 5), torch.randint(0, 5, (50,))
    meter = CalibrationMeter()
    for i in range(0, 50, 16):
        meter.update(logits[i:i + 16], labels[i:i + 16])
    out = meter.compute()
    assert out["ece"] == pytest.approx(expected_calibration_error(logits, labels).item(), abs=1e-6)
    assert out["nll"] == pytest.approx(negative_log_likelihood(logits, labels).item(), rel=1e-5)
    assert out["top1"] == pytest.approx(100 * top1_accuracy(logits, labels).item())


def test_corruption_accuracies_per_cell() -> None:
    from torch import nn

    from ssl_bench.teacher_metrics import corruption_accuracies

    class Brightest(nn.Module):          # predicts class 1 when the image's mean pixel is above 127
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bright = (x.float().mean(dim=(1, 2, 3)) > 127).float()
            return torch.stack([1 - bright, bright], dim=1)

    class Darkest(Brightest):            # the opposite prediction
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).flip(1)

    dark, light = torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.full((4, 3, 2, 2), 200, dtype=torch.uint8)
    labels = torch.tensor([1, 1, 0, 0])
    cells = [("fog", 1, torch.cat([light[:2], dark[:2]]), labels), ("fog", 2, light, labels)]
    model, inverted = Brightest().train(), Darkest().eval()
    out = corruption_accuracies({"a": model, "b": inverted}, cells, batch_size=3, prepare=lambda x: x)
    assert out == {"a": {("fog", 1): 100.0, ("fog", 2): 50.0}, "b": {("fog", 1): 0.0, ("fog", 2): 50.0}}
    assert model.training and not inverted.training          # each model's mode restored
