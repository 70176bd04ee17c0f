"""Write tests/data/smoothing_golden.pt: teacher states after 5 updates of every built-in configuration.

Produced once by the Smoother at commit c62e06e (before strategies became registry entries); the test
tests/test_smoothing_registry.py::test_builtins_reproduce_the_golden_teachers checks that the registry's
none / tma / se / sts give the same tensors bit for bit (same masks, same generator draws).
    python tests/data/make_smoothing_golden.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ssl_bench.smoothing import build_smoother


class Golden(nn.Module):
    """Two dtypes of parameters, a 0-d parameter, BatchNorm buffers (float and int64)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 4)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.extra = nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))


def golden_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher, student = Golden(), Golden()
    with torch.no_grad():
        for module, fill in ((teacher, 3), (student, 7)):
            for t in module.parameters():
                t.normal_()
            for b in module.buffers():
                b.uniform_(0.5, 1.5) if b.is_floating_point() else b.fill_(fill)
    return teacher, student


def golden_configs() -> list[dict]:
    configs = [dict(strategy="none"), dict(strategy="tma", m=0.9), dict(strategy="tma", m=0.9, buffers="average")]
    for strategy in ("se", "sts"):
        for granularity in ("layer", "channel", "neuron"):
            for p in (0.5, 0.7):
                for buffers in ("copy", "average"):
                    configs.append(dict(strategy=strategy, p=p, m=0.9, granularity=granularity, buffers=buffers))
    return configs


def config_key(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(config.items()))


def golden_run(config: dict, build=build_smoother) -> dict[str, torch.Tensor]:
    teacher, student = golden_pair()
    smoother = build(**config, seed=11)
    for step in range(5):
        with torch.no_grad():
            for i, t in enumerate(student.parameters()):
                t.add_(0.01 * (step + 1) * (i + 1))
            for b in student.buffers():
                b.add_(1) if not b.is_floating_point() else b.mul_(1.01)
        smoother.update(teacher, student)
    return {k: v.clone() for k, v in teacher.state_dict().items()}


if __name__ == "__main__":
    out = {config_key(c): golden_run(c) for c in golden_configs()}
    torch.save(out, Path(__file__).with_name("smoothing_golden.pt"))
    print(f"{len(out)} configurations")
