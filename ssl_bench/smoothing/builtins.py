"""The built-in smoothing strategies: none, tma, se, sts (Huang et al., NeurIPS 2021) and swa.

Each is one registry entry: its settings (fields) and its update rule.  With P_i ~ Ber(p) per unit
(P_i = 1: *preserve* unit i) and m_t the momentum at step t (:func:`momentum_at`):

* ``none``  theta^T <- theta^S                                             (no smoothing)
* ``tma``   theta^T <- m_t theta^T + (1 - m_t) theta^S                     (Eq. 4, "EMA")
* ``se``    theta_i^T <- P_i theta_i^T + (1 - P_i) theta_i^S               (Eq. 1/2, Algorithm 1)
* ``sts``   theta_i^T <- P_i theta_i^T + (1 - P_i) [m_t theta_i^T + (1 - m_t) theta_i^S]   (Eq. 3, Alg. 2)
* ``swa``   theta^T <- the uniform average of the student's weights at steps start*T, start*T + every, ...
            (Izmailov et al., UAI 2018; on Pi / Mean Teacher: Athiwaratkun et al., ICLR 2019)

BatchNorm statistics (``buffers``): ``copy`` takes the student's after every update (the reference's, see
registry.SHARED_SETTINGS).  ``average`` moves them with the strategy's own rule: for tma / sts a lerp with
weight 1 - m_t, which is **EMAN**'s rule (Cai et al., "Exponential Moving Average Normalization for
Self-supervised and Semi-supervised Learning", CVPR 2021, Eq. 3-4: mu' <- m mu' + (1 - m) mu,
sigma'^2 <- m sigma'^2 + (1 - m) sigma^2, with the momentum of the parameters); for swa the same uniform
average as the weights (``torch.optim.swa_utils.AveragedModel(use_buffers=True)``).  Integer buffers
(``num_batches_tracked``) are always copied.  For ``none`` / ``se`` (no temporal momentum: m = 0 in Eq. 3)
"average" would be a copy, so they read no buffer setting.

``recompute`` (any strategy that reads ``buffers``) is SWA's own recipe: the updates leave the statistics alone
and the training loop recomputes them with one pass over the training images before every evaluation of the
teacher (``torch.optim.swa_utils.update_bn``; :func:`ssl_bench.run.evaluate.recompute_batch_norm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ssl_bench.smoothing.kernels import Gate, Update
from ssl_bench.smoothing.registry import SHARED_SETTINGS, SmoothingError, register, setting, shared

SCHEDULES: tuple[str, ...] = SHARED_SETTINGS["schedule"].choices       # constant, cosine, warmup


def momentum_at(schedule: str, m: float, step: int, total_steps: int | None) -> float:
    """The momentum of update ``step`` (0-based) of ``total_steps``, for a base momentum ``m``.

    * ``constant``: m (google-research/fixmatch's EMA).
    * ``cosine``: 1 - (1 - m) (cos(pi t / T) + 1) / 2, from m at t = 0 to 1 at t = T (BYOL, Grill et al.,
      NeurIPS 2020, Sec. 3.2: tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2; the Spatial Ensemble
      authors' BYOL code ramps its teacher momentum the same way).
    * ``warmup``: min(m, (1 + t) / (10 + t)), TensorFlow's ``tf.train.ExponentialMovingAverage(decay,
      num_updates=t)`` rule.  (timm's ``ModelEmaV3`` warm-up is a different curve, 1 - (1 + t / gamma)^-power;
      not offered here.)
    """
    if schedule == "constant":
        return m
    if schedule == "cosine":
        if total_steps is None:
            raise SmoothingError("the cosine momentum schedule needs the training length: call "
                                 "update(teacher, student, step=step, total_steps=total_steps)")
        return 1.0 - (1.0 - m) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0
    if schedule == "warmup":
        return min(m, (1.0 + step) / (10.0 + step))
    raise SmoothingError(f"unknown schedule {schedule!r}; choose one of {', '.join(map(repr, SCHEDULES))}")


def _buffers(u: Update, policy: str, weight: float) -> None:
    if policy == "average":
        u.average_buffers(weight)
    elif policy == "copy":
        u.copy_buffers()
    # "recompute": left alone here; the loop recomputes them before every evaluation


@register("none")
@dataclass(frozen=True)
class NoSmoothing:
    """The teacher is the student (a copy after every step)."""

    def update(self, u: Update) -> None:
        u.lerp(1.0)
        u.copy_buffers()

    def expected_momentum(self) -> float:
        return 0.0


@register("tma")
@dataclass(frozen=True)
class TemporalMovingAverage:
    """Eq. 4: theta^T <- m_t theta^T + (1 - m_t) theta^S, one fused lerp."""

    m: float = shared("m")
    buffers: str = shared("buffers")
    schedule: str = shared("schedule")

    def update(self, u: Update) -> None:
        m = momentum_at(self.schedule, self.m, u.step, u.total_steps)
        u.lerp(1.0 - m)
        _buffers(u, self.buffers, 1.0 - m)

    def expected_momentum(self) -> float:
        return self.m


@register("se")
@dataclass(frozen=True)
class SpatialEnsemble:
    """Eq. 1/2: each unit kept with probability p, else copied from the student."""

    p: float = shared("p")
    granularity: str = shared("granularity")

    def update(self, u: Update) -> None:
        u.gated_lerp(self.p, 1.0)
        u.copy_buffers()

    def draws(self) -> bool:
        return Gate.for_p(self.p).is_random

    def expected_momentum(self) -> float:
        return self.p


@register("sts")
@dataclass(frozen=True)
class SpatialTemporalSmoothing:
    """Eq. 3: each unit kept with probability p, else moved like a TMA with momentum m_t."""

    p: float = shared("p")
    m: float = shared("m")
    granularity: str = shared("granularity")
    buffers: str = shared("buffers")
    schedule: str = shared("schedule")

    def update(self, u: Update) -> None:
        m = momentum_at(self.schedule, self.m, u.step, u.total_steps)
        u.gated_lerp(self.p, 1.0 - m)
        _buffers(u, self.buffers, 1.0 - m)

    def draws(self) -> bool:
        return Gate.for_p(self.p).is_random

    def expected_momentum(self) -> float:
        """p + (1 - p) m: the momentum of the TMA that one update equals in expectation over the masks."""
        return self.p + (1.0 - self.p) * self.m


@register("swa")
@dataclass(frozen=True)
class StochasticWeightAveraging:
    """The uniform average of the student's weights at steps first, first + every, ... (first = ceil(start T)).

    Before ``first`` the teacher follows the student (a copy), so early evaluations show the student; at
    ``first`` it becomes the student exactly (an average of one), and the n-th snapshot is folded in with
    theta^T <- theta^T + (theta^S - theta^T) / n, as ``torch.optim.swa_utils.AveragedModel`` does.  Between
    snapshots the weights stay.  The count n is a function of the step, so resuming needs no extra state.
    """

    # timgaripov/swa (the SWA paper's code), README CIFAR commands: --epochs=300 --swa_start=161 ("SWA 1.5
    # budgets"): averaging starts at 161/300 = 0.537 of training, rounded here.
    start: float = setting(0.54, low=0.0, high=1.0, help="the fraction of training after which averaging starts")
    # The SWA code averages once per epoch (train.py: --swa_c_epochs=1); ssl-bench's unit is an optimizer
    # step (torch.optim.swa_utils updates on every call), so 1 = every step; pass the steps per epoch to
    # average per epoch.
    every: int = setting(1, low=1, integer=True, help="steps between two averaged snapshots")
    buffers: str = shared("buffers")

    def first_step(self, total_steps: int | None) -> int:
        if total_steps is None:
            raise SmoothingError("swa needs the training length to place its start: call "
                                 "update(teacher, student, step=step, total_steps=total_steps)")
        return math.ceil(self.start * total_steps)

    def update(self, u: Update) -> None:
        first = self.first_step(u.total_steps)
        if u.step < first:
            u.lerp(1.0)
            u.copy_buffers()
            return
        if (u.step - first) % self.every:
            if self.buffers == "copy":
                u.copy_buffers()
            return
        n = (u.step - first) // self.every + 1          # this snapshot is the n-th
        u.lerp(1.0 / n)
        _buffers(u, self.buffers, 1.0 / n)
