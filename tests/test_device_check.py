"""scripts/device_check.sh --dry-run: every command of the GPU check runs on the CPU at a tiny budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run_runs_every_step_and_writes_its_outputs(tmp_path, shared_data):
    out = tmp_path / "device_check"
    env = {**os.environ, "PYTHON": sys.executable, "SSL_BENCH_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = (out / "summary.txt").read_text()
    assert done.returncode == 0, summary + done.stderr
    steps = ["environment", "cuda_tests", "gpu_report", "train_fixmatch", "train_supervised", "leaderboard"]
    assert [line.split(":")[0][3:] for line in summary.splitlines() if line.startswith("== ")] == steps
    assert "0 failed step(s)" in summary
    for name in steps:
        assert (out / f"{name}.log").stat().st_size > 0, name
    assert (out / "gpu_report.json").is_file()
    assert "SKIPPED" in (out / "cuda_tests.log").read_text()   # the CUDA tests were collected, and skip here
    records = sorted(p.parent.name for p in (out / "runs").glob("*/record.json"))
    assert [r.split("-")[0] for r in records] == ["fixmatch", "supervised"]


def test_device_check_refuses_unknown_arguments_with_one_line():
    done = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--fast"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown argument '--fast'" in done.stderr
