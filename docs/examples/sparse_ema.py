"""A TMA that updates the teacher every k steps with momentum m**k: the same horizon at 1/k of the updates.

    python run_bench.py --smooth docs/examples/sparse_ema.py ...     (or copy it to ./smoothers/)
"""

from dataclasses import dataclass

from ssl_bench.smoothing import Update, register, setting, shared


@register("sparse_ema")
@dataclass(frozen=True)
class SparseEma:
    m: float = shared("m")                          # the per-step momentum, the same --m as tma's
    every: int = setting(4, low=1, integer=True, help="steps between two teacher updates")
    buffers: str = shared("buffers")                # copy (the reference's) or average (EMAN)

    def update(self, u: Update) -> None:
        if (u.step + 1) % self.every:               # not an update step: the teacher stays
            return
        weight = 1.0 - self.m**self.every           # k steps of momentum m at once
        u.lerp(weight)                              # theta_T <- theta_T + weight (theta_S - theta_T)
        if self.buffers == "average":
            u.average_buffers(weight)
        else:
            u.copy_buffers()

    def expected_momentum(self) -> float:
        return self.m
