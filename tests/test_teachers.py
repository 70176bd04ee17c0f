"""One student, many teachers: every variant of a shared training equals the run that has only that variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import metric_rows

from ssl_bench.algorithm import available_algorithms, load_algorithm_class
from ssl_bench.cli import main
from ssl_bench.config import PROFILES, RunConfig
from ssl_bench.run.build import teacher_grid
from ssl_bench.run.checkpoint import load_checkpoint
from ssl_bench.run.loop import train, train_teachers

VARIANTS = {"smooth": ["none", "tma", "se", "sts"]}
STUDENT_TARGETS = [a for a in available_algorithms() if load_algorithm_class(a).targets_from == "student"]
# Record fields that legitimately differ between a shared training and a separate run.
PER_ATTEMPT = {"run_id", "training", "teacher", "command", "started", "finished", "wall_seconds", "commit"}


def smoke(tmp_path: Path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", dataset="digits", labels=20, profile="smoke", device="cpu",
                results_dir=str(tmp_path / "results"))
    return RunConfig(**{**base, **changes})


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in PER_ATTEMPT}


@pytest.mark.parametrize("algorithm", STUDENT_TARGETS)
def test_every_variant_equals_its_single_variant_run(tmp_path, algorithm):
    configs = teacher_grid(smoke(tmp_path / "shared", algorithm=algorithm), VARIANTS)
    shared = train_teachers(configs, progress=False)
    assert [r["settings"]["smooth"] for r, _ in shared] == VARIANTS["smooth"]
    training = shared[0][1].name
    for (record, run_dir), config in zip(shared, configs, strict=True):
        assert record["training"] == training and record["teacher"].split("-")[0] == config.smooth
        alone, alone_dir = train(smoke(tmp_path / config.smooth, algorithm=algorithm, smooth=config.smooth),
                                 progress=False)
        assert metric_rows(run_dir) == metric_rows(alone_dir), config.smooth
        assert comparable(record) == comparable(alone)


def test_one_checkpoint_holds_every_teacher_and_resume_is_exact(tmp_path):
    configs = teacher_grid(smoke(tmp_path / "a"), {"smooth": ["tma", "sts"], "granularity": ["layer", "neuron"]})
    m = PROFILES["smoke"].m   # left to the profile
    assert [c.teacher_key() for c in configs] == [f"tma-m{m}-copy", f"sts-layer-p0.5-m{m}-copy",
                                                  f"sts-neuron-p0.5-m{m}-copy"]   # tma ignores the granularity
    straight = train_teachers(configs, progress=False)
    stopped_configs = teacher_grid(smoke(tmp_path / "b"), {"smooth": ["tma", "sts"],
                                                              "granularity": ["layer", "neuron"]})
    first = train_teachers(stopped_configs, stop_at=3, progress=False)
    state = load_checkpoint(first[0][1] / "checkpoint.pt")
    assert len(state["teachers"]) == 3
    assert not any((d / "checkpoint.pt").exists() for _, d in first[1:])
    resumed = train_teachers(stopped_configs, resume=True, progress=False)
    assert [d for _, d in resumed] == [d for _, d in first]
    for (_, a), (record, b) in zip(straight, resumed, strict=True):
        assert record["status"] == "finished" and metric_rows(a) == metric_rows(b)


def test_resuming_with_another_set_of_teachers_is_refused(tmp_path):
    configs = teacher_grid(smoke(tmp_path), {"smooth": ["tma", "sts"]})
    train_teachers(configs, stop_at=2, progress=False)
    with pytest.raises(ValueError, match=r"an unfinished training holds the teachers .*Resume with exactly"):
        train_teachers(teacher_grid(smoke(tmp_path), {"smooth": ["tma", "se"]})[:1], resume=True, progress=False)


def test_mean_teacher_refuses_a_list_and_says_why(tmp_path, capsys):
    with pytest.raises(ValueError, match="targets from the teacher"):
        train_teachers(teacher_grid(smoke(tmp_path, algorithm="mean_teacher"), VARIANTS), progress=False)
    code = main(["--alg", "mean_teacher", "--smooth", "tma,sts", "--dataset", "digits", "--labels", "20",
                 "--profile", "smoke", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "targets from the teacher" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cli_lists_train_one_student_and_write_one_record_per_teacher(tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["--alg", "fixmatch", "--smooth", "none,sts", "--p", "0.3,0.7", "--dataset", "digits",
                 "--labels", "20", "--profile", "smoke", "--results-dir", str(results), "--no-progress"])
    assert code == 0
    records = [json.loads((d / "record.json").read_text()) for d in sorted(results.iterdir())]
    assert sorted((r["settings"]["smooth"], r["settings"]["p"]) for r in records) == [
        ("none", 0.5), ("sts", 0.3), ("sts", 0.7)]
    assert len({r["training"] for r in records}) == 1
    student_curves = {tuple(row["student_acc"] for row in metric_rows(d)) for d in results.iterdir()}
    assert len(student_curves) == 1


def test_sweep_groups_teachers_into_shared_trainings(tmp_path, capsys):
    argv = ["sweep", "--alg", "fixmatch,mean_teacher", "--smooth", "tma,sts", "--seeds", "0-1", "--dataset",
            "digits", "--labels", "20", "--profile", "smoke", "--results-dir", str(tmp_path / "r"), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # fixmatch: one training per seed serving tma and sts; mean_teacher: one training per seed and strategy
    assert "8 runs in 6 trainings" in out
    assert out.count("teachers: tma-m0.999-copy, sts-layer-p0.5-m0.999-copy") == 2


def test_teacher_models_are_independent_of_each_other(tmp_path):
    """Two teachers of one training are separate tensors (no aliasing through the deep copy)."""
    from ssl_bench.run.build import build_training

    run = build_training(teacher_grid(smoke(tmp_path), {"smooth": ["tma", "se"]}))
    a, b = (t.model.state_dict() for t in run.teachers)
    assert all(a[k].data_ptr() != b[k].data_ptr() for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_one_teacher_of_a_finished_shared_training_returns_its_record(tmp_path):
    """The shared training's tma record is what a separate tma run would give: --resume returns it, trains nothing."""
    shared = train_teachers(teacher_grid(smoke(tmp_path), {"smooth": ["tma", "sts"]}), progress=False)
    record, run_dir = train(smoke(tmp_path, smooth="tma"), resume=True, progress=False)
    assert run_dir == shared[0][1] and record == shared[0][0]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(d.name for _, d in shared)


def test_resume_finds_the_training_whatever_the_order_of_the_teachers(tmp_path):
    first = train_teachers(teacher_grid(smoke(tmp_path), {"smooth": ["none", "tma"]}), stop_at=4, progress=False)
    train(smoke(tmp_path, smooth="none"), progress=False)   # a newer, separate run of one of them
    resumed = train_teachers(teacher_grid(smoke(tmp_path), {"smooth": ["tma", "none"]}), resume=True,
                             progress=False)
    assert sorted(d for _, d in resumed) == sorted(d for _, d in first)
    assert all(r["status"] == "finished" for r, _ in resumed)


def test_sweep_resumes_a_saved_training_whole_and_trains_the_rest_apart(tmp_path, capsys):
    train_teachers(teacher_grid(smoke(tmp_path), {"smooth": ["none", "tma"]}), stop_at=4, progress=False)
    argv = ["sweep", "--alg", "fixmatch", "--smooth", "none,tma,sts", "--dataset", "digits", "--labels", "20",
            "--profile", "smoke", "--device", "cpu", "--no-progress", "--results-dir", str(tmp_path / "results")]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 runs in 2 trainings" in out and "1 unfinished (resumed), 1 new" in out
    assert main(argv) == 0
    records = [json.loads((d / "record.json").read_text()) for d in (tmp_path / "results").iterdir()]
    assert sorted(r["settings"]["smooth"] for r in records) == ["none", "sts", "tma"]
    assert all(r["status"] == "finished" for r in records)


def test_dry_run_refuses_what_the_run_refuses(capsys):
    code = main(["--alg", "mean_teacher", "--smooth", "tma,sts", "--dataset", "digits", "--labels", "20",
                 "--profile", "smoke", "--dry-run"])
    assert code == 2 and "targets from the teacher" in capsys.readouterr().err


def test_the_same_teacher_given_twice_is_one_teacher(tmp_path):
    from ssl_bench.run.build import build_training

    run = build_training([smoke(tmp_path, smooth="tma"), smoke(tmp_path, smooth="tma", m=0.999)])   # smoke's m is 0.999
    assert len(run.teachers) == 1


def test_sweep_order_does_not_depend_on_the_hash_seed():
    import subprocess
    import sys

    code = ("from ssl_bench import cli\nfrom ssl_bench.run import sweep\n"
            "args = cli.build_parser().parse_args(\n"
            "    ['sweep', '--smooth', 'tma,sts', '--m', '0.9,0.99', '--seeds', '0,1'])\n"
            "base, grid = cli.settings_from_args(args, cli.GRID_FIELDS)\n"
            "print([c.teacher_key() + str(c.seed) for c in sweep.expand_grid(base, grid)])\n")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(outs) == 1
