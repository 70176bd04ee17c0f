"""End to end on the smoke profile: the loop runs, records, never overwrites, resumes exactly, fails loudly."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch
from helpers import metric_rows

import ssl_bench.run.loop as train_module
from ssl_bench.cli import main
from ssl_bench.config import RunConfig
from ssl_bench.run.build import build_training
from ssl_bench.run.checkpoint import CheckpointMismatch, load_checkpoint
from ssl_bench.run.lock import RunLock, RunLockedError
from ssl_bench.run.loop import train
from ssl_bench.run.state import DivergedError, restore


def smoke(tmp_path: Path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", smooth="tma", dataset="digits", labels=20, profile="smoke",
                results_dir=str(tmp_path / "results"), device="cpu")
    base.update(changes)
    return RunConfig(**base)


def the_teacher(state: dict) -> dict:
    (teacher,) = state["teachers"].values()
    return teacher["model"]


def teacher_student_differ(run_dir: Path) -> bool:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    teacher = the_teacher(state)
    return any(not torch.equal(teacher[k], state["student"][k]) for k in state["student"]
               if state["student"][k].is_floating_point())


def dir_snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("smooth", ["none", "tma", "se", "sts"])
def test_smoke_run_writes_record_and_teacher_follows_strategy(tmp_path, smooth):
    record, run_dir = train(smoke(tmp_path, smooth=smooth), progress=False)
    assert record["status"] == "finished" and record["steps_done"] == 8
    saved = json.loads((run_dir / "record.json").read_text())
    assert saved == record
    for key in ("dataset", "dataset_kind", "split_hash", "versions", "device"):
        assert saved[key] not in (None, ""), key
    for key in ("profile", "steps", "model", "seed", "mu", "lr", "weight_decay", "strong_augment", "amp"):
        assert saved["settings"][key] not in (None, ""), key   # every identifying setting, resolved
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert saved["settings"] == RunConfig.from_dict(config).identity()
    assert saved["results"]["num_evals"] == 2
    import hashlib

    import ssl_bench_algorithms.fixmatch as fixmatch_file
    assert saved["algorithm_sha256"] == hashlib.sha256(Path(fixmatch_file.__file__).read_bytes()).hexdigest()
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


def test_the_unlabelled_ratio_comes_from_the_algorithm_not_the_profile(tmp_path):
    from ssl_bench.algorithm import build_algorithm, loop_settings

    for algorithm in ("fixmatch", "mixmatch"):
        run = build_training(smoke(tmp_path, algorithm=algorithm))
        expected = loop_settings(build_algorithm(algorithm, {}, None), None)["mu"]
        assert run.config.mu == expected
        batch = train_module.next_batch(run)
        assert all(len(u) == run.config.batch_size * expected for u in batch.u)
    assert build_training(smoke(tmp_path, algorithm="fixmatch")).config.mu != build_training(
        smoke(tmp_path, algorithm="mixmatch")).config.mu
    assert build_training(smoke(tmp_path, algorithm="mixmatch", mu=3)).config.mu == 3   # --mu still overrides


def test_learning_rate_in_metrics_follows_the_cosine_schedule(tmp_path):
    import math

    record, run_dir = train(smoke(tmp_path), progress=False)
    lr0, steps = record["settings"]["lr"], record["settings"]["steps"]
    for row in metric_rows(run_dir):
        k = int(row["step"])
        assert float(row["lr"]) == pytest.approx(lr0 * math.cos(7 * math.pi * k / (16 * steps)), rel=1e-12)


def test_same_seed_same_metrics_and_second_run_gets_new_directory(tmp_path):
    _, first = train(smoke(tmp_path, smooth="sts"), progress=False)
    _, second = train(smoke(tmp_path, smooth="sts"), progress=False)
    assert first != second and first.exists() and second.exists()
    assert metric_rows(first) == metric_rows(second)
    _, other_seed = train(smoke(tmp_path, smooth="sts", seed=1), progress=False)
    assert metric_rows(other_seed) != metric_rows(first)


def test_training_leaves_the_global_generators_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(smoke(tmp_path, algorithm="mixmatch"), progress=False)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("stop_at", [3, 4])  # in the middle of an evaluation window, and right at an evaluation
def test_resume_equals_uninterrupted(tmp_path, stop_at):
    _, straight = train(smoke(tmp_path / "a", smooth="sts", granularity="channel"), progress=False)
    config = smoke(tmp_path / "b", smooth="sts", granularity="channel")
    record, run_dir = train(config, stop_at=stop_at, progress=False)
    assert record["status"] == "interrupted" and record["steps_done"] == stop_at
    # --resume matches on what determines the numbers only: a new --log-every / --eval-batch-size still resumes
    record, resumed_dir = train(dataclasses.replace(config, log_every=3, eval_batch_size=100),
                                resume=True, progress=False)
    assert resumed_dir == run_dir and record["status"] == "finished"
    assert metric_rows(resumed_dir) == metric_rows(straight)
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed_dir / "checkpoint.pt")
    for k, v in the_teacher(a).items():
        assert torch.equal(v, the_teacher(b)[k]), k
    # A finished run is not trained again.
    again, again_dir = train(config, resume=True, progress=False)
    assert again_dir == run_dir and again == record


def test_resume_with_nothing_to_resume_says_so_and_starts_nothing(tmp_path):
    train(smoke(tmp_path), stop_at=2, progress=False)
    with pytest.raises(ValueError, match=r"nothing to resume .*differs in lr 0.03 there, 0.01 here.*drop --resume"):
        train(smoke(tmp_path, lr=0.01), resume=True, progress=False)
    assert len(list((tmp_path / "results").iterdir())) == 1


def test_ctrl_c_is_recorded_interrupted_and_resumes_exactly(tmp_path, monkeypatch):
    _, straight = train(smoke(tmp_path / "a"), progress=False)
    config = smoke(tmp_path / "b")
    real_step = train_module.training_step

    def interrupted_at_6(run, batch):
        if run.step == 5:
            raise KeyboardInterrupt
        return real_step(run, batch)

    monkeypatch.setattr(train_module, "training_step", interrupted_at_6)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    (run_dir,) = (tmp_path / "b" / "results").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "interrupted" and "--resume" in record["error"]
    monkeypatch.setattr(train_module, "training_step", real_step)
    record, resumed = train(config, resume=True, progress=False)
    assert resumed == run_dir and record["status"] == "finished"
    assert metric_rows(resumed) == metric_rows(straight)


def test_out_of_memory_is_recorded_failed_with_the_reason(tmp_path, monkeypatch):
    def oom(run, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "training_step", oom)
    with pytest.raises(torch.OutOfMemoryError):
        train(smoke(tmp_path), progress=False)
    (run_dir,) = (tmp_path / "results").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "out of memory" in record["error"]


def test_checkpoint_of_another_run_is_refused_and_nothing_is_loaded(tmp_path):
    config = smoke(tmp_path)
    _, run_dir = train(config, progress=False)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    other = build_training(smoke(tmp_path, model="wrn10_1", smooth="se"))
    before = {k: v.clone() for k, v in other.student.state_dict().items()}
    with pytest.raises(CheckpointMismatch) as err:
        restore(other, state, run_dir / "checkpoint.pt")
    message = str(err.value)
    assert "model" in message and "'tiny'" in message and "'wrn10_1'" in message and "teachers" in message
    assert all(torch.equal(before[k], v) for k, v in other.student.state_dict().items())


class _RunsCode:
    """Unpickling this would create a marker file (what a crafted checkpoint could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys, command):
    argv = ["--alg", "fixmatch", "--smooth", "tma", "--dataset", "digits", "--labels", "20", "--profile", "smoke",
            "--device", "cpu", "--results-dir", str(tmp_path / "results"), "--no-progress"]
    assert main(["run", *argv, "--stop-at", "2"]) == 0
    (run_dir,) = (tmp_path / "results").iterdir()
    marker = tmp_path / "pwned"
    torch.save({"step": _RunsCode(marker)}, run_dir / "checkpoint.pt", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    before = dir_snapshot(run_dir)
    capsys.readouterr()
    code = main(["run", *argv, "--resume"] if command == "run" else ["sweep", *argv])
    err = capsys.readouterr().err
    assert code != 0 and not marker.exists()
    assert str(run_dir / "checkpoint.pt") in err and "Traceback" not in err
    assert dir_snapshot(run_dir) == before


def test_a_run_held_by_a_live_process_is_refused(tmp_path):
    config = smoke(tmp_path)
    _, run_dir = train(config, stop_at=2, progress=False)
    with RunLock(run_dir), pytest.raises(RunLockedError, match=str(run_dir)):
        train(config, resume=True, progress=False)


def test_diverged_run_is_recorded_as_failed(tmp_path, monkeypatch):
    real_step = train_module.training_step

    def nan_loss(run, batch):   # --lr is bounded at the door (config.MAX_LR): a loss that turns non-finite
        logs = real_step(run, batch)
        return {**logs, "loss": logs["loss"] * float("nan")}

    monkeypatch.setattr(train_module, "training_step", nan_loss)
    with pytest.raises(DivergedError, match="not finite"):
        train(smoke(tmp_path), progress=False)
    (run_dir,) = (tmp_path / "results").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "not finite" in record["error"]


def test_bad_settings_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="choose from"):
        train(smoke(tmp_path, smooth="ema"), progress=False)
    with pytest.raises(ValueError, match=r"--p 1.5 is out of range"):
        train(smoke(tmp_path, p=1.5), progress=False)
    with pytest.raises(ValueError, match=r"--seed .* out of range"):
        train(smoke(tmp_path, seed=2**32), progress=False)
    with pytest.raises(ValueError, match="fixmatch"):
        train(smoke(tmp_path, algorithm="fixmach"), progress=False)
    with pytest.raises(ValueError, match="--stop-at 0"):
        train(smoke(tmp_path), stop_at=0, progress=False)
    assert not (tmp_path / "results").exists()


def test_resume_of_a_run_killed_before_its_first_record(tmp_path):
    config = smoke(tmp_path)
    _, run_dir = train(config, stop_at=3, progress=False)
    (run_dir / "record.json").unlink()   # as if killed between config.json and the first record
    record, resumed = train(config, resume=True, progress=False)
    assert resumed == run_dir and record["status"] == "finished" and record["steps_done"] == 8


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = train(smoke(tmp_path, tensorboard=True), progress=False)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rows = metric_rows(run_dir)
    teacher = [e.value for e in events.Scalars("teacher_acc")]
    assert teacher == pytest.approx([float(r["teacher_acc"]) for r in rows])
    assert {"loss", "lr", "mask_rate", "student_acc"} <= set(events.Tags()["scalars"])
