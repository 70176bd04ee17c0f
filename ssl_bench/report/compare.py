"""Paired comparisons over seeds, from the leaderboard's cells.

For one data set and label budget, per section (profile, dataset, model, steps) and algorithm:

* every other smoothing row minus TMA (m = the paper's 0.999 where run), arms ordered STS, SE, NONE,
  then variants;
* every row minus the ``supervised`` row with the same smoothing: the algorithm's gain over the labelled loss.

Differences are paired by seed (``ssl_bench.report.stats.paired_difference``); seeds one side lacks are listed,
not used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ssl_bench.config import PROFILES
from ssl_bench.records import DEFAULT_RESULTS_DIR, RECORD_FILE, RunStatus
from ssl_bench.report.leaderboard import (
    ALGORITHM_ORDER,
    SUPERVISED,
    LeaderboardError,
    Row,
    RowKey,
    SectionKey,
    build_leaderboard,
    load_runs,
    row_sort_key,
)
from ssl_bench.report.paper import PAPER_SMOOTHING, same_value
from ssl_bench.report.stats import PairedDiff, mean, paired_difference

ARM_ORDER = {"sts": 0, "se": 1, "none": 2}


@dataclass(frozen=True)
class ArmComparison:
    label: str  # e.g. "fixmatch · sts"
    baseline_label: str
    diff: PairedDiff
    arm_mean: float | None  # over the paired seeds
    baseline_mean: float | None


@dataclass(frozen=True)
class Comparison:
    section: SectionKey
    algorithm: str
    labels: int
    stat: str
    baseline: str | None          # the TMA row the strategies are compared against
    arms: list[ArmComparison]
    over_supervised: list[ArmComparison] = field(default_factory=list)


def _algorithm_order(algorithm: str) -> tuple[int, str]:
    known = ALGORITHM_ORDER.index(algorithm) if algorithm in ALGORITHM_ORDER else len(ALGORITHM_ORDER)
    return (known, algorithm)


def _smoothing_of(key: RowKey) -> tuple:
    return (key.smooth, key.granularity, key.p, key.m, key.buffers)


def _pick_tma(rows: Sequence[Row], profile: str) -> Row | None:
    """The TMA row the strategies are compared with: the one at the profile's momentum (its reference teacher:
    0.999 on the paper's profiles, 0.99 on the cpu profile), else the paper's m, else any TMA row."""
    tma = [r for r in rows if r.key.smooth == "tma"]
    wanted = [PROFILES[profile].m] if profile in PROFILES else []
    for m in [*wanted, PAPER_SMOOTHING["m"]]:
        found = [r for r in tma if r.key.m is not None and same_value(r.key.m, m)]
        if found:
            return found[0]
    return (tma or [None])[0]


def _pick_supervised(row: Row, supervised: Sequence[Row]) -> Row | None:
    same = [s for s in supervised if _smoothing_of(s.key) == _smoothing_of(row.key)]
    return (sorted(same, key=lambda s: row_sort_key(s.key)) or [None])[0]   # the reference settings first


def _arm(row: Row, base: Row, labels: int) -> ArmComparison:
    a, b = row.cells[labels].by_seed(), base.cells[labels].by_seed()
    diff = paired_difference(a, b)
    return ArmComparison(row.label, base.label, diff, mean([a[s] for s in diff.seeds]),
                         mean([b[s] for s in diff.seeds]))


def compare(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, *, alg: str | None = None, dataset: str, labels: int,
            profile: str | None = None, stat: str = "median") -> list[Comparison]:
    """Paired differences for ``alg`` (every algorithm when None) on ``dataset`` with ``labels`` labels."""
    board = build_leaderboard(results_dir, stat=stat, profile=profile, dataset=dataset)
    comparisons = []
    for section in board.sections:
        here = [r for r in section.rows if labels in r.cells]
        supervised = [r for r in here if r.key.algorithm == SUPERVISED]
        algorithms = sorted({r.key.algorithm for r in here if alg is None or r.key.algorithm == alg},
                            key=_algorithm_order)
        for algorithm in algorithms:
            rows = [r for r in here if r.key.algorithm == algorithm]
            base = _pick_tma(rows, section.key.profile)
            others = sorted((r for r in rows if r is not base),
                            key=lambda r: (ARM_ORDER.get(r.key.smooth, 3), row_sort_key(r.key)))
            arms = [_arm(row, base, labels) for row in others] if base is not None else []
            gains = []
            if algorithm != SUPERVISED:
                for row in rows:
                    sup = _pick_supervised(row, supervised)
                    if sup is not None:
                        gains.append(_arm(row, sup, labels))
            comparisons.append(Comparison(section.key, algorithm, labels, board.stat,
                                          base.label if base else None, arms, gains))
    if not comparisons:
        runs, _ = load_runs(results_dir)
        runs = [r for r in runs if r.dataset == dataset and (profile is None or r.profile == profile)]
        have = sorted({(r.algorithm, r.labels) for r in runs if r.status is RunStatus.FINISHED})
        raise LeaderboardError(
            f"no finished runs of {'algorithm ' + repr(alg) if alg else 'any algorithm'} on {dataset!r} with "
            f"{labels} labels" + (f" in profile {profile!r}" if profile else "")
            + f" under {results_dir}/*/{RECORD_FILE}; finished (algorithm, labels) there: "
            + (", ".join(f"{a}/{n}" for a, n in have) or "none")
        )
    return comparisons
