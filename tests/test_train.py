"""End to end on the smoke profile: the loop runs, records, never overwrites, resumes exactly, fails loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import metric_rows

from ssl_bench.checkpoint import CheckpointMismatch, load_checkpoint
from ssl_bench.config import RunConfig
from ssl_bench.train import DivergedError, build_run, train


def smoke(tmp_path: Path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", smooth="tma", dataset="digits", labels=20, profile="smoke",
                results_dir=str(tmp_path / "results"), device="cpu")
    base.update(changes)
    return RunConfig(**base)


def teacher_student_differ(run_dir: Path) -> bool:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return any(not torch.equal(state["teacher"][k], state["student"][k]) for k in state["student"]
               if state["student"][k].is_floating_point())


@pytest.mark.parametrize("smooth", ["none", "tma", "se", "sts"])
def test_smoke_run_writes_record_and_teacher_follows_strategy(tmp_path, smooth):
    record, run_dir = train(smoke(tmp_path, smooth=smooth), progress=False)
    assert record["status"] == "finished" and record["steps_done"] == 8
    saved = json.loads((run_dir / "record.json").read_text())
    assert saved == record
    for key in ("profile", "steps", "dataset", "dataset_kind", "model", "split_hash", "seed", "versions", "device"):
        assert saved[key] not in (None, ""), key
    assert saved["results"]["num_evals"] == 2
    assert set(saved["results"]) >= {"teacher_median_last20", "teacher_best", "student_median_last20", "student_best"}
    assert json.loads((run_dir / "split.json").read_text())["hash"] == saved["split_hash"]
    assert len(metric_rows(run_dir)) == 2
    # 'none' makes the teacher a copy of the student; every other strategy keeps it apart.
    assert teacher_student_differ(run_dir) == (smooth != "none")


def test_smoke_run_on_real_cifar_subset(tmp_path, shared_data):
    record, run_dir = train(smoke(tmp_path, dataset="cifar10_subset", labels=40, data_root=str(shared_data),
                                  smooth="sts"), progress=False)
    assert record["status"] == "finished"
    assert record["dataset_kind"] == "subset" and record["dataset_family"] == "cifar10"
    assert teacher_student_differ(run_dir)


def test_same_seed_same_metrics_and_second_run_gets_new_directory(tmp_path):
    _, first = train(smoke(tmp_path, smooth="sts"), progress=False)
    _, second = train(smoke(tmp_path, smooth="sts"), progress=False)
    assert first != second and first.exists() and second.exists()
    assert metric_rows(first) == metric_rows(second)
    _, other_seed = train(smoke(tmp_path, smooth="sts", seed=1), progress=False)
    assert metric_rows(other_seed) != metric_rows(first)


@pytest.mark.parametrize("stop_at", [3, 4])  # in the middle of an evaluation window, and right at an evaluation
def test_resume_equals_uninterrupted(tmp_path, stop_at):
    _, straight = train(smoke(tmp_path / "a", smooth="sts", granularity="channel"), progress=False)
    config = smoke(tmp_path / "b", smooth="sts", granularity="channel")
    record, run_dir = train(config, stop_at=stop_at, progress=False)
    assert record["status"] == "running" and record["steps_done"] == stop_at
    record, resumed_dir = train(config, resume=True, progress=False)
    assert resumed_dir == run_dir and record["status"] == "finished"
    assert metric_rows(resumed_dir) == metric_rows(straight)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed_dir / "checkpoint.pt")
    for k in a["teacher"]:
        assert torch.equal(a["teacher"][k], b["teacher"][k]), k
    # A finished run is not trained again.
    again, again_dir = train(config, resume=True, progress=False)
    assert again_dir == run_dir and again == record


def test_checkpoint_of_another_run_is_refused_and_nothing_is_loaded(tmp_path):
    from ssl_bench.train import restore

    config = smoke(tmp_path)
    _, run_dir = train(config, progress=False)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    other = build_run(smoke(tmp_path, model="wrn10_1", smooth="se"))
    before = {k: v.clone() for k, v in other.student.state_dict().items()}
    with pytest.raises(CheckpointMismatch) as err:
        restore(other, state, run_dir / "checkpoint.pt")
    message = str(err.value)
    assert "model" in message and "'tiny'" in message and "'wrn10_1'" in message and "smooth" in message
    assert all(torch.equal(before[k], v) for k, v in other.student.state_dict().items())


def test_diverged_run_is_recorded_as_failed(tmp_path):
    with pytest.raises(DivergedError, match="not finite"):
        train(smoke(tmp_path, lr=1e30), progress=False)
    (run_dir,) = (tmp_path / "results").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "not finite" in record["error"]


def test_bad_settings_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="choose from"):
        train(smoke(tmp_path, smooth="ema"), progress=False)
    with pytest.raises(ValueError, match="outside"):
        train(smoke(tmp_path, p=1.5), progress=False)
    with pytest.raises(ValueError, match="fixmatch"):
        train(smoke(tmp_path, algorithm="fixmach"), progress=False)
    assert not (tmp_path / "results").exists()


def test_resume_of_a_run_killed_before_its_first_record(tmp_path):
    config = smoke(tmp_path)
    _, run_dir = train(config, stop_at=3, progress=False)
    (run_dir / "record.json").unlink()   # as if killed between config.json and the first record
    record, resumed = train(config, resume=True, progress=False)
    assert resumed == run_dir and record["status"] == "finished" and record["steps_done"] == 8
