"""Every teacher is judged on more than top-1 (issue 23): calibration at every evaluation, in metrics.csv, the
record and the leaderboard; the new strategies (swa, momentum schedules) reach the command line, each teacher
with its own directory and row."""

from __future__ import annotations

import csv
import json

import torch
from torch import nn

from ssl_bench.cli import main
from ssl_bench.report import leaderboard as lb
from ssl_bench.report import render
from ssl_bench.run.evaluate import accuracy, accuracy_and_calibration
from ssl_bench.teacher_metrics import expected_calibration_error, negative_log_likelihood


def test_calibration_comes_from_the_same_pass_as_top1_and_equals_the_metric_functions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    images = torch.randint(0, 256, (37, 3, 2, 2), dtype=torch.uint8)
    labels = torch.randint(0, 5, (37,))
    prepare = lambda x: x.float() / 255   # noqa: E731
    got = accuracy_and_calibration(model, images, labels, 8, prepare)   # batches of 8: 5 updates of the meter
    logits = model(prepare(images)).detach()
    assert got["top1"] == accuracy(model, images, labels, 8, prepare)
    assert abs(got["ece"] - float(expected_calibration_error(logits, labels))) < 1e-6
    assert abs(got["nll"] - float(negative_log_likelihood(logits, labels))) < 1e-5


def _smoke(results, *extra):
    return main(["--alg", "fixmatch", "--dataset", "digits", "--labels", "20", "--profile", "smoke", "--no-progress",
                 "--results-dir", str(results), *extra])


def test_every_evaluation_records_each_teachers_ece_and_nll_and_the_leaderboard_ranks_them(tmp_path):
    assert _smoke(tmp_path, "--smooth", "tma,sts") == 0
    run = tmp_path / "fixmatch-tma-digits-20-s0-smoke"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert all(0.0 <= float(r["teacher_ece"]) <= 1.0 and float(r["teacher_nll"]) > 0 for r in rows)
    results = json.loads((run / "record.json").read_text())["results"]
    assert results["teacher_ece_last"] == float(rows[-1]["teacher_ece"])
    board = lb.build_leaderboard(tmp_path, stat="ece")
    assert board.stat == "teacher_ece_last" and len(board.sections[0].rows) == 2
    text = render.render_markdown(board)
    assert f"| fixmatch · tma | {results['teacher_ece_last']:.3f} (n=1) |" in text


def test_swa_and_momentum_schedules_are_teachers_of_their_own(tmp_path):
    assert _smoke(tmp_path, "--smooth", "tma,swa", "--schedule", "constant,cosine") == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["fixmatch-swa-digits-20-s0-smoke", "fixmatch-tma-digits-20-s0-smoke",
                     "fixmatch-tma_cosine-digits-20-s0-smoke"]   # swa reads no schedule: one swa teacher
    labels = [r.label for s in lb.build_leaderboard(tmp_path).sections for r in s.rows]
    assert labels == ["fixmatch · tma", "fixmatch · tma (schedule=cosine)", "fixmatch · swa"]


def test_teachers_that_differ_in_m_get_directories_that_say_so(tmp_path):
    # the cpu profile's m is 0.99: the second teacher used to get the collision suffix "-2"
    assert main(["--alg", "supervised", "--dataset", "digits", "--labels", "20", "--profile", "cpu", "--steps", "2",
                 "--eval-every", "2", "--smooth", "tma", "--m", "0.99,0.999", "--no-progress",
                 "--results-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["supervised-tma-digits-20-s0-cpu",
                                                          "supervised-tma_m0.999-digits-20-s0-cpu"]
