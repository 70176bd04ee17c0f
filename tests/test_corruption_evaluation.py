"""The end-of-training corruption evaluation: which set a training is judged on (``plan_corruptions``), the cells
it makes, and what reaches the record, corruption.csv and the leaderboard."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
from test_corruptions import N, make_folder  # the miniature CIFAR-10-C writer
from torch import nn

from ssl_bench.data.corruptions import SYNTHETIC_CORRUPTIONS, SYNTHETIC_NAME
from ssl_bench.errors import UserError
from ssl_bench.records import RecordError, RunRecord
from ssl_bench.run.evaluate import evaluate_corruptions, plan_corruptions


def test_a_dataset_without_official_files_gets_synthetic_c_and_official_is_refused() -> None:
    y = torch.zeros(3, dtype=torch.long)
    assert plan_corruptions("auto", "digits", y, None, False).name == SYNTHETIC_NAME
    assert plan_corruptions("synthetic-c", "cifar10", y, None, False).official is None
    assert plan_corruptions("none", "cifar10", y, None, False) is None
    with pytest.raises(UserError, match="'digits' has no official corruption files.*--corruptions synthetic-c"):
        plan_corruptions("official", "digits", y, None, False)


def test_official_files_are_used_only_when_their_labels_are_the_test_labels(tmp_path: Path) -> None:
    make_folder(tmp_path)
    y_test = torch.arange(N) % 10
    plan = plan_corruptions("auto", "cifar10", y_test, tmp_path, False)
    assert plan.name == "cifar10-c" and plan.benchmark is not None
    # a subset's test set (another length) or another order: not these files
    assert plan_corruptions("auto", "cifar10", y_test[:2], tmp_path, False).name == SYNTHETIC_NAME
    with pytest.raises(UserError, match="not the test labels"):
        plan_corruptions("official", "cifar10", y_test.flip(0), tmp_path, False)
    with pytest.raises(UserError, match="CIFAR-10-C: not found"):   # no files, no download asked: one line
        plan_corruptions("official", "cifar10", y_test, tmp_path / "empty", False)


def test_official_cells_are_the_files_images_in_nchw(tmp_path: Path) -> None:
    make_folder(tmp_path, corruptions=("fog",))
    y_test = torch.arange(N) % 10
    cells = list(plan_corruptions("official", "cifar10", y_test, tmp_path, False).cells(
        torch.zeros(N, 3, 32, 32, dtype=torch.uint8), y_test))
    assert [(c, s) for c, s, _, _ in cells] == [("fog", s) for s in range(1, 6)]
    _, severity, images, labels = cells[2]
    assert images.shape == (N, 3, 32, 32) and images.dtype == torch.uint8
    # make_folder's pixel value: 10 * corruption index + severity + image index
    assert images[:, 1, 5, 7].tolist() == [severity + i for i in range(N)]
    assert torch.equal(labels, y_test)


class Constant(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.out = torch.nn.functional.one_hot(torch.tensor(label), classes).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out.expand(len(x), -1)


def test_synthetic_accuracy_of_a_constant_model_is_the_share_of_its_class() -> None:
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    plan = plan_corruptions("synthetic-c", "digits", y, None, False)
    out = evaluate_corruptions(plan, {"zero": Constant(0), "two": Constant(2)}, x, y, 4, lambda b: b.float())
    cells, summary = out["zero"]
    assert len(cells) == len(SYNTHETIC_CORRUPTIONS) * 5 and set(cells.values()) == {30.0}
    assert summary["mean"] == pytest.approx(30.0) and out["two"][1]["mean"] == pytest.approx(50.0)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssl_bench.config import RunConfig
    from ssl_bench.run.loop import train_teachers

    results = tmp_path_factory.mktemp("runs")
    configs = [RunConfig(algorithm="fixmatch", dataset="digits", labels=20, profile="smoke", smooth=s,
                         results_dir=str(results), device="cpu") for s in ("tma", "sts")]
    train_teachers(configs, progress=False, command="test")
    return results


def test_every_teacher_record_carries_its_corruption_summary_and_its_cells(finished_run: Path) -> None:
    for run_dir in sorted(finished_run.iterdir()):
        record = RunRecord.read(run_dir)
        assert record.corruption["set"] == SYNTHETIC_NAME and record.corruption["step"] == record.steps
        with open(run_dir / "corruption.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == len(SYNTHETIC_CORRUPTIONS) * 5
        teacher = statistics.fmean(float(r["teacher_acc"]) for r in rows)
        student = statistics.fmean(float(r["student_acc"]) for r in rows)
        assert record.results["teacher_corruption_mean"] == pytest.approx(teacher, abs=1e-3)
        assert record.results["student_corruption_mean"] == pytest.approx(student, abs=1e-3)
        for corruption in SYNTHETIC_CORRUPTIONS:
            mine = [float(r["teacher_acc"]) for r in rows if r["corruption"] == corruption]
            assert record.corruption["teacher"][corruption] == pytest.approx(statistics.fmean(mine), abs=1e-3)


def test_the_leaderboard_reads_the_corruption_statistic(finished_run: Path) -> None:
    from ssl_bench.report.leaderboard import build_leaderboard

    board = build_leaderboard(finished_run, stat="corruption")
    cells = {row.key.smooth: row.cells[20] for section in board.sections for row in section.rows}
    for smooth, cell in cells.items():
        record = RunRecord.read(finished_run / cell.run_ids[0])
        assert cell.values == [record.results["teacher_corruption_mean"]], smooth


def test_a_corruption_accuracy_outside_0_to_100_is_refused(finished_run: Path) -> None:
    run_dir = next(iter(sorted(finished_run.iterdir())))
    data = json.loads((run_dir / "record.json").read_text())
    data["results"]["teacher_corruption_mean"] = 150.0
    with pytest.raises(RecordError, match="teacher_corruption_mean = 150.0"):
        RunRecord.from_dict(data, run_dir=run_dir)


def test_no_corruption_evaluation_when_asked_for_none(tmp_path: Path) -> None:
    from ssl_bench.config import RunConfig
    from ssl_bench.run.loop import train

    record, run_dir = train(RunConfig(algorithm="supervised", dataset="digits", labels=20, profile="smoke",
                                      corruptions="none", results_dir=str(tmp_path), device="cpu"),
                            progress=False, command="test")
    assert record["corruption"] is None and not (run_dir / "corruption.csv").exists()
    assert "teacher_corruption_mean" not in record["results"]
