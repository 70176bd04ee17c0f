"""A tiny CNN for tests and smoke runs: three conv + BatchNorm + LeakyReLU layers, average pool, linear.

It has the same interface as the WRN (``features``, ``num_features``, ``classifier``) and contains BatchNorm,
so running statistics and the integer ``num_batches_tracked`` buffer are exercised by every test that uses it.
Unlike the WRN it keeps PyTorch's default BN momentum (0.1), so one training step visibly moves the running
statistics -- what buffer-handling tests (teacher smoothing, checkpoint round trips) need to see.
"""

from __future__ import annotations

import torch
from torch import nn

# Three stride-2 stages: 32x32 -> 16 -> 8 -> 4; a few ms for a batch of 64 on one core.
TINY_WIDTHS = (8, 16, 32)
# The `small` model of the `cpu` profile: 0.1 s for forward + backward of 240 images on one core here, where a
# WRN-10-1 took 0.45 s and WRN-28-2 several seconds.
SMALL_WIDTHS = (32, 64, 128)


class TinyCNN(nn.Module):
    """conv3x3/2 -> BN -> LeakyReLU(0.1), three times; mean over H, W; Linear (with bias)."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = TINY_WIDTHS):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels in widths:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.LeakyReLU(0.1),
            ]
            in_channels = out_channels
        self.body = nn.Sequential(*layers)
        self.num_features = in_channels
        self.classifier = nn.Linear(in_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
