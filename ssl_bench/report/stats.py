"""Statistics over seeds: mean and sample standard deviation, and paired differences with a 95 % t-interval.

The t quantile comes from ``scipy.stats`` (exact for every number of seeds, no table to copy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ssl_bench.errors import UserError

CONFIDENCE = 0.95


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean; None for no values."""
    return statistics.fmean(values) if values else None


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof = 1); None for fewer than two values."""
    return statistics.stdev(values) if len(values) > 1 else None


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom (t_{0.975, df})."""
    if df < 1:
        raise UserError(f"degrees of freedom {df} must be >= 1 (a t-interval needs two paired seeds)")
    from scipy import stats as scipy_stats  # here, not at import: scipy.stats costs seconds to import

    return float(scipy_stats.t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class PairedDiff:
    """arm - baseline over the seeds both have: mean, sample std, n and a 95 % t-interval."""

    n: int
    mean: float | None
    std: float | None
    half_width: float | None
    low: float | None
    high: float | None
    seeds: list[int]
    only_arm: list[int]
    only_baseline: list[int]

    @property
    def verdict(self) -> str:
        if self.n == 0:
            return "no seed in common"
        if self.half_width is None and self.n == 1:
            return "one paired seed: the interval is undefined"
        if self.half_width is None:
            return (f"the {self.n} paired differences are all equal (zero spread, e.g. quantised accuracies): the "
                    "interval is undefined, so no claim about the seed noise")
        if self.low > 0:
            return "gain larger than the seed noise (95 % CI above 0)"
        if self.high < 0:
            return "loss larger than the seed noise (95 % CI below 0)"
        return "not distinguishable from the seed noise (95 % CI contains 0)"


def paired_difference(arm: Mapping[int, float], baseline: Mapping[int, float]) -> PairedDiff:
    """Paired difference arm[s] - baseline[s] over the common seeds s; the others are listed, not used.

    mean d, sample std s_d (ddof = 1), and the 95 % interval d ± t_{0.975, n-1} · s_d / √n. With one seed, or
    with s_d = 0 (every seed moved by exactly the same amount: a zero-width interval is an artefact of too few
    or quantised values, not certainty), the interval is undefined (None).
    """
    seeds = sorted(set(arm) & set(baseline))
    only_arm, only_base = sorted(set(arm) - set(baseline)), sorted(set(baseline) - set(arm))
    diffs = [arm[s] - baseline[s] for s in seeds]
    n = len(diffs)
    if n < 2:
        return PairedDiff(n, mean(diffs), None, None, None, None, seeds, only_arm, only_base)
    d, s = mean(diffs), sample_std(diffs)
    if s == 0.0:
        return PairedDiff(n, d, s, None, None, None, seeds, only_arm, only_base)
    half = t_quantile(n - 1) * s / math.sqrt(n)
    return PairedDiff(n, d, s, half, d - half, d + half, seeds, only_arm, only_base)
