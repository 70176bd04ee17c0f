"""Every registered algorithm x every smoothing strategy runs the smoke profile end to end.

Parametrised over the registry, so an algorithm dropped into algorithms/ is tested the moment it exists.
"""

from __future__ import annotations

import pytest

from ssl_bench.algorithm import available_algorithms
from ssl_bench.config import RunConfig
from ssl_bench.run.loop import train
from ssl_bench.smoothing import STRATEGIES


@pytest.mark.parametrize("smooth", STRATEGIES)
@pytest.mark.parametrize("algorithm", available_algorithms())
def test_every_algorithm_with_every_smoother_runs_smoke(tmp_path, algorithm, smooth):
    config = RunConfig(algorithm=algorithm, smooth=smooth, dataset="digits", labels=20, profile="smoke",
                       steps=4, eval_every=2, results_dir=str(tmp_path), device="cpu")
    record, _ = train(config, progress=False)
    assert record["status"] == "finished"
    assert record["algorithm"] == algorithm and record["settings"]["smooth"] == smooth
    results = record["results"]
    assert results["num_evals"] == 2
    assert 0.0 <= results["teacher_median_last20"] <= 100.0
