"""Every --log-every steps the training's losses (the total and each term), the mask rate and the lr are logged to
train_log.csv (and TensorBoard); each row averages the steps since the previous one, so the rows of an evaluation
window average to the loss metrics.csv records at that evaluation."""

from __future__ import annotations

import csv

import pytest

from ssl_bench.cli import main


def rows(path):
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in r.items() if v != "" and k != "elapsed_s"} for r in csv.DictReader(fh)]


def run(results, *extra):
    return main(["--alg", "fixmatch", "--smooth", "tma", "--dataset", "digits", "--labels", "20", "--profile",
                 "smoke", "--steps", "12", "--eval-every", "6", "--log-every", "2", "--results-dir", str(results),
                 "--no-progress", *extra])


def test_log_rows_average_to_the_evaluation_window_and_terms_sum_to_the_loss(tmp_path):
    assert run(tmp_path) == 0
    (run_dir,) = tmp_path.iterdir()
    log, metrics = rows(run_dir / "train_log.csv"), rows(run_dir / "metrics.csv")
    assert [r["step"] for r in log] == [2, 4, 6, 8, 10, 12]
    for r in log:
        assert r["loss_supervised"] + r["loss_unsupervised"] == pytest.approx(r["loss"], abs=1e-5)
        assert 0.0 <= r["mask_rate"] <= 1.0 and r["lr"] > 0
    assert [r["lr"] for r in log] == sorted((r["lr"] for r in log), reverse=True)   # the cosine decay
    for evaluation, window in zip(metrics, (log[:3], log[3:]), strict=True):
        for key in ("loss", "loss_supervised", "mask_rate"):
            assert sum(r[key] for r in window) / 3 == pytest.approx(evaluation[key], abs=1e-5), key


def test_a_resumed_training_logs_the_rows_of_an_uninterrupted_one(tmp_path):
    assert run(tmp_path / "a") == 0
    assert run(tmp_path / "b", "--stop-at", "8") == 0
    assert run(tmp_path / "b", "--resume") == 0
    (a,), (b,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    assert rows(b / "train_log.csv") == rows(a / "train_log.csv")


def test_tensorboard_gets_the_log_rows(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run(tmp_path, "--tensorboard") == 0
    (run_dir,) = tmp_path.iterdir()
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss_unsupervised")] == [2, 4, 6, 8, 10, 12]
    assert [e.step for e in events.Scalars("teacher_acc")] == [6, 12]
