"""The README's first commands, run in a fresh clone of this repository, leave `git status` clean: new runs go to
the git-ignored ``runs/`` (records.DEFAULT_RESULTS_DIR) and nothing rewrites the committed ``results/``.

The clone is of the committed HEAD: commit before running this test on a change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.records import DEFAULT_RESULTS_DIR, REFERENCE_RESULTS_DIR

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_readme_user_commands_leave_a_fresh_clone_clean(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    _git("clone", "-q", str(REPO), str(clone), cwd=tmp_path)
    assert _git("status", "--porcelain", cwd=clone) == ""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = [
        ["quickstart", "--steps", "8", "--device", "cpu", "--no-progress"],                    # the quick start
        ["--alg", "fixmatch", "--smooth", "sts", "--labels", "20", "--dataset", "digits",      # the main command
         "--profile", "smoke", "--no-progress"],
        ["leaderboard"],                                                                       # the new runs
        ["leaderboard", "--results-dir", REFERENCE_RESULTS_DIR],                               # the committed ones
        ["compare", "--dataset", "digits", "--labels", "20"],
    ]
    for argv in commands:
        done = subprocess.run([sys.executable, "run_bench.py", *argv], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    assert len(list((clone / DEFAULT_RESULTS_DIR).iterdir())) == 3   # quick start's two runs and the smoke run
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""
