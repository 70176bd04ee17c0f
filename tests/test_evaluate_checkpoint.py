"""`ssl-bench evaluate RUN` re-evaluates a checkpoint's models; `export-weights` writes a plain state_dict that the
model built by name loads: both give back exactly the accuracies the training recorded at its last step."""

from __future__ import annotations

import json

import pytest
import torch

from ssl_bench.cli import main
from ssl_bench.models import build_model
from ssl_bench.run.evaluate import accuracy
from ssl_bench.run.evaluate_checkpoint import evaluate_run, load_trained


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    results = tmp_path_factory.mktemp("runs")
    assert main(["--alg", "fixmatch", "--smooth", "none,tma", "--m", "0.5", "--dataset", "digits", "--labels", "20",
                 "--profile", "smoke", "--device", "cpu", "--results-dir", str(results), "--no-progress"]) == 0
    return {json.loads((d / "record.json").read_text())["teacher"]: d for d in results.iterdir()}


def test_evaluate_gives_back_the_recorded_last_accuracies(trained, capsys):
    tma = trained["tma-m0.5-copy"]
    scores, corruption_set, _ = evaluate_run(tma, "cpu")
    assert corruption_set is None
    assert set(scores) == {"student", "none", "tma-m0.5-copy"}
    for key, run_dir in trained.items():
        results = json.loads((run_dir / "record.json").read_text())["results"]
        assert scores[key] == pytest.approx(results["teacher_last"], abs=1e-9)
        assert scores["student"] == pytest.approx(results["student_last"], abs=1e-9)
    assert main(["evaluate", tma.name, "--results-dir", str(tma.parent), "--device", "cpu"]) == 0
    assert f"{scores['tma-m0.5-copy']:6.2f}" in capsys.readouterr().out


def test_evaluate_gives_back_the_recorded_corruption_means(trained, capsys):
    """The same end-of-training corruption evaluation from the checkpoint: the record's numbers, exactly."""
    tma = trained["tma-m0.5-copy"]
    _, corruption_set, means = evaluate_run(tma, "cpu", "synthetic-c")
    assert corruption_set == "synthetic-c"
    for key, run_dir in trained.items():
        record = json.loads((run_dir / "record.json").read_text())
        assert means[key] == pytest.approx(record["corruption"]["teacher"]["mean"], abs=1e-9)
        assert means["student"] == pytest.approx(record["corruption"]["student"]["mean"], abs=1e-9)
    assert main(["evaluate", tma.name, "--results-dir", str(tma.parent), "--device", "cpu",
                 "--corruptions", "synthetic-c"]) == 0
    assert "mean top-1 on synthetic-c" in capsys.readouterr().out


def test_exported_weights_load_into_the_model_built_by_name(trained, tmp_path, capsys):
    tma = trained["tma-m0.5-copy"]
    out = tmp_path / "tma.pt"
    assert main(["export-weights", str(tma), "--out", str(out)]) == 0
    assert "build_model('tiny', num_classes)" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = build_model("tiny", 10)
    model.load_state_dict(state)   # strict: every key, every shape
    rebuilt = load_trained(tma, "cpu")   # the test images and the normalisation the loop evaluates with
    record = json.loads((tma / "record.json").read_text())["results"]
    assert accuracy(model, rebuilt.x_test, rebuilt.y_test, 256, rebuilt.prepare) == pytest.approx(
        record["teacher_last"], abs=1e-9)
    student = tmp_path / "student.pt"
    assert main(["export-weights", str(tma), "--teacher", "student", "--out", str(student)]) == 0
    assert not all(torch.equal(a, b) for a, b in zip(torch.load(student, weights_only=True).values(), state.values(),
                                                   strict=True))   # another model: the student, not the teacher
    assert main(["export-weights", str(tma), "--teacher", "ema"]) == 2
    assert "has ['none', 'student', 'tma-m0.5-copy']" in capsys.readouterr().err
