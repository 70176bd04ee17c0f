"""benchmarks/bench_teachers.py: the quick mode runs the benchmark's whole code path (the loop's build_training,
next_batch, training_step and evaluate with 1, 4 and 12 teachers) and prints every row and every ratio.

The quick mode's numbers mean nothing (tiny CNN, a few steps): these tests check that the table and the
ratios are there, positive and consistent with each other, so the script cannot rot between full runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_teachers.py"
ROWS = ("(a) 1 training, 1 teacher: sts", "(b) training: none", "(b) training: tma", "(b) training: se",
        "(b) training: sts", "(b) 4 trainings, 1 teacher each", "(c) 1 training, 4 teachers",
        "(d) 1 training, 12 teachers (Table 4)")
RATIOS = ("(c)/(a)", "(c)/(b)", "(d)/(a)", "(d)/(12a)", "(b:sts)/(a)")
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def quick_output() -> str:
    proc = run_script("--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(output: str) -> dict[str, list[str]]:
    """The table's rows by workload name: the cells after the name, '' for an empty cell."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("| (") or line.startswith("|     ("):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_table_has_every_workload_with_positive_times(quick_output):
    rows = table_rows(quick_output)
    assert set(rows) == set(ROWS), quick_output
    for name, cells in rows.items():
        trainings, teachers, steps_s, evals_s, total_s, ms_per_step, vs_a = cells
        assert float(total_s) > 0 and float(ms_per_step) > 0 and float(vs_a.rstrip("x")) > 0, (name, cells)
        if not name.startswith("(b) training:"):   # (b)'s own trainings show only their totals
            # total = steps + evaluations, up to the table's rounding to 0.01 s
            assert float(steps_s) > 0 and float(evals_s) > 0, (name, cells)
            assert abs(float(steps_s) + float(evals_s) - float(total_s)) <= 0.011, (name, cells)
    assert [rows[r][:2] for r in ROWS[-3:]] == [["4", "4"], ["1", "4"], ["1", "12"]]
    # (b) is the sum of its four trainings (one repeat: the medians are the values themselves)
    parts = sum(float(rows[r][4]) for r in ROWS[1:5])
    assert abs(parts - float(rows["(b) 4 trainings, 1 teacher each"][4])) <= 0.03, quick_output


def test_ratios_are_positive_and_match_the_table(quick_output):
    ratios = {}
    for name in RATIOS:
        found = re.search(re.escape(name) + r": " + NUMBER + "x", quick_output)
        assert found, f"no {name} ratio in:\n{quick_output}"
        ratios[name] = float(found.group(1))
        assert ratios[name] > 0, name
    rows = table_rows(quick_output)
    total = {r: float(rows[r][4]) for r in ROWS}
    a, b, c = total[ROWS[0]], total[ROWS[5]], total[ROWS[6]]
    # one repeat: every ratio is the quotient of the table's totals (those are rounded to 0.01 s)
    assert ratios["(c)/(a)"] == pytest.approx(c / a, rel=0.1, abs=0.02)
    assert ratios["(c)/(b)"] == pytest.approx(c / b, rel=0.1, abs=0.02)
    assert ratios["(d)/(12a)"] == pytest.approx(ratios["(d)/(a)"] / 12, rel=0.01, abs=0.002)
    assert re.search(r"target <= 1\.25x: (ok|MISS)", quick_output)


def test_per_teacher_costs_are_reported_and_consistent(quick_output):
    interval = re.search(r"evaluation every ([0-9]+) steps", quick_output)
    assert interval, quick_output
    eval_every = int(interval.group(1))
    for source in ("(c)-(a)", "(d)-(a)"):
        found = re.search(re.escape(f"per teacher from {source}: evaluation ") + NUMBER + r" ms per evaluation = "
                          + NUMBER + r"% of an evaluation interval \([0-9]+ steps of \(a\) at " + NUMBER + " ms",
                          quick_output)
        assert found, f"no positive per-teacher evaluation cost from {source} in:\n{quick_output}"
        eval_ms, share, step_ms = (float(g) for g in found.groups())
        assert eval_ms > 0 and step_ms > 0
        # the share is the teacher's evaluation over eval_every steps of (a), up to the printed rounding
        assert share == pytest.approx(100 * eval_ms / (eval_every * step_ms), rel=0.02, abs=0.1)
    updates = re.search(r"smoother update on its own, ms per teacher per step: \(c\) (.*); \(d\)'s 12: median "
                        + NUMBER + ", max " + NUMBER, quick_output)
    assert updates, quick_output
    per_strategy = dict(item.rsplit(" ", 1) for item in updates.group(1).split(", "))
    assert [key.split("-")[0] for key in per_strategy] == ["none", "tma", "se", "sts"]
    assert all(float(v) > 0 for v in per_strategy.values())
    assert 0 < float(updates.group(2)) <= float(updates.group(3))


def test_bad_option_is_one_clear_line():
    proc = run_script("--quick", "--steps", "0")
    assert proc.returncode == 2
    assert "--steps 0 is out of range; expected an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
