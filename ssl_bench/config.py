"""Run configuration: the budget profiles and the resolved settings of one run.

A profile names a compute budget honestly. Only ``full`` is the paper's protocol; every other profile
is scaled down and its numbers are not comparable with published ones (the run record says which
profile produced each number).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ssl_bench.smoothing import BUFFER_POLICIES, GRANULARITIES, STRATEGIES


@dataclass(frozen=True)
class Profile:
    """A training budget: steps, batch composition, evaluation cadence and (optionally) a model."""

    name: str
    steps: int
    batch_size: int          # labelled images per step
    mu: int                  # unlabelled images per labelled image
    eval_every: int          # steps between evaluations
    model: str | None        # None: the dataset's default (WRN-28-2 for CIFAR-10, WRN-28-8 for CIFAR-100)
    description: str
    m: float = 0.999         # TMA/STS momentum; FixMatch's 0.999 averages over ~1000 steps

    @property
    def evaluations(self) -> int:
        return self.steps // self.eval_every


PROFILES: dict[str, Profile] = {
    # The paper's protocol (Spatial Ensemble paper Sec. 4.1, following FixMatch): 2^20 steps of 64 labelled +
    # 448 unlabelled images. FixMatch evaluates every 2^16 training images = 1024 steps of 64.
    "full": Profile("full", 2**20, 64, 7, 1024, None,
                    "the paper's protocol: 2^20 steps, batch 64+448, WRN-28-2/8; GPU-days in common implementations"),
    # 2^15 steps at the paper's batch and model: under an hour on one GPU even at USB's reported ~20 h per 2^20-step
    # run (USB issue #177: 2^15 / (2^20 / 20 h) = 37 min). Not measured here (no GPU); see bench_step.py --device cuda.
    "short": Profile("short", 2**15, 64, 7, 512, None,
                     "scaled: 2^15 steps (1/32 of the protocol) at the paper's batch and model; meant for about a GPU hour"),
    # A few CPU minutes: a 95 k-weight CNN, batch 16 + 112, 1024 steps, 64 evaluations (so the median of the
    # last 20 covers the last third of training). Real images, but not comparable with the paper.
    # m = 0.99: with 0.999 the teacher would average over about as many steps as the whole run has and still
    # carry its random initialisation at the end (measured: teacher 16 % vs student 37 % at 250 labels).
    "cpu": Profile("cpu", 1024, 16, 7, 16, "small",
                   "scaled: 1024 steps, batch 16+112, a 95k-weight CNN, m=0.99; minutes on a CPU with the CIFAR-10 subset",
                   m=0.99),
    # Seconds, for tests: checks that everything runs, measures nothing.
    "smoke": Profile("smoke", 8, 8, 2, 4, "tiny", "seconds: 8 steps of a tiny CNN, for tests; measures nothing"),
}

# FixMatch's optimisation settings (FixMatch paper Sec. 4 and Table 9; Spatial Ensemble paper Sec. 4.1).
DEFAULT_LR = 0.03
DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = {"cifar100": 1e-3}    # 5e-4 for everything else (CIFAR-10)
FALLBACK_WEIGHT_DECAY = 5e-4
# Paper Sec. 4.1: "The masking probability p is set to ... 0.5 for FixMatch"; m = 0.999 is FixMatch's EMA.
DEFAULT_P = 0.5
DEFAULT_M = 0.999


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """FixMatch's cosine decay: lr(k) = lr0 * cos(7 pi k / (16 K)) (FixMatch paper, Sec. 4 / Table 9)."""
    return math.cos(7.0 * math.pi * step / (16.0 * total_steps))


@dataclass
class RunConfig:
    """Everything that determines a run's numbers. Saved in ``config.json`` beside every result."""

    algorithm: str = "fixmatch"
    alg_args: dict[str, str] = field(default_factory=dict)
    smooth: str = "sts"
    p: float = DEFAULT_P
    m: float | None = None              # None: the profile's (FixMatch's 0.999 for full/short)
    granularity: str = "layer"
    buffers: str = "copy"
    dataset: str = "cifar10"
    labels: int = 40
    seed: int = 0
    split_seed: int | None = None       # None: the run's seed
    profile: str = "full"
    steps: int | None = None            # None: the profile's
    eval_every: int | None = None
    batch_size: int | None = None
    mu: int | None = None
    model: str | None = None            # None: the profile's, else the dataset's default
    lr: float = DEFAULT_LR
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float | None = None   # None: FixMatch's for the dataset
    device: str = "auto"
    amp: bool = False                   # bf16 autocast (CUDA)
    channels_last: bool = False
    compile: bool = False
    data_root: str | None = None
    download: bool = False
    results_dir: str = "results"
    eval_batch_size: int = 1024
    log_every: int = 50

    def validate(self) -> None:
        """Fail at the boundary with a message that names the value and the valid choices."""
        if self.smooth not in STRATEGIES:
            raise ValueError(f"--smooth {self.smooth!r} is not a smoothing strategy; choose from {list(STRATEGIES)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"--granularity {self.granularity!r} is unknown; choose from {list(GRANULARITIES)}")
        if self.buffers not in BUFFER_POLICIES:
            raise ValueError(f"--buffers {self.buffers!r} is unknown; choose from {list(BUFFER_POLICIES)}")
        if self.profile not in PROFILES:
            raise ValueError(f"--profile {self.profile!r} is unknown; choose from {list(PROFILES)}")
        for name in ("p", "m"):
            value = getattr(self, name)
            if value is not None and not (0.0 <= value <= 1.0):
                raise ValueError(f"--{name} {value} is outside [0, 1]")
        for name in ("steps", "eval_every", "batch_size", "mu", "labels", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} {value} must be a positive integer")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed} must be >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device {self.device!r}: expected auto, cpu, cuda or cuda:N")

    def resolved(self, dataset_family: str | None, default_model: str) -> RunConfig:
        """Fill every ``None`` from the profile and the dataset, so the saved config is complete."""
        prof = PROFILES[self.profile]
        return dataclasses.replace(
            self,
            split_seed=self.seed if self.split_seed is None else self.split_seed,
            m=prof.m if self.m is None else self.m,
            steps=self.steps or prof.steps,
            eval_every=self.eval_every or prof.eval_every,
            batch_size=self.batch_size or prof.batch_size,
            mu=self.mu or prof.mu,
            model=self.model or prof.model or default_model,
            weight_decay=(self.weight_decay if self.weight_decay is not None
                          else DEFAULT_WEIGHT_DECAY.get(dataset_family or "", FALLBACK_WEIGHT_DECAY)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; this ssl-bench knows {sorted(known)}")
        return cls(**data)
