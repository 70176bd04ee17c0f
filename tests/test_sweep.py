"""Sweeps on the smoke profile with the embedded digits: grid expansion, skip / resume, submitit jobs, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import metric_rows
from submitit.helpers import DelayedSubmission

from ssl_bench import cli
from ssl_bench.config import RunConfig
from ssl_bench.run import sweep
from ssl_bench.run.loop import train

GRID_ARGS = ["sweep", "--alg", "fixmatch", "--smooth", "tma,sts", "--labels", "20,40", "--seeds", "0,1",
             "--profile", "smoke", "--dataset", "digits"]


def smoke(tmp_path: Path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", smooth="tma", dataset="digits", labels=20, profile="smoke",
                results_dir=str(tmp_path / "results"), device="cpu")
    base.update(changes)
    return RunConfig(**base)


def sweep_args(results: Path, *extra: str) -> list[str]:
    return ["sweep", "--profile", "smoke", "--dataset", "digits", "--device", "cpu", "--no-progress",
            "--results-dir", str(results), *extra]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


def run_dirs(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith("_"))


def snapshot(results: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(results)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(results.rglob("*")) if p.is_file() and not p.relative_to(results).parts[0].startswith("_")}


def wait_for(path: Path, timeout: float = 60.0, also: callable = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert also(), f"gave up waiting for {path}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------------------
# Grid expansion and grouping (pure)
# ---------------------------------------------------------------------------------------------------------

def grid_of(*argv: str) -> tuple[RunConfig, dict]:
    args = cli.build_parser().parse_args(["sweep", *argv])
    return cli.settings_from_args(args, cli.GRID_FIELDS)


def test_expand_grid_gives_every_combination_seed_outermost():
    base, grid = grid_of(*GRID_ARGS[1:])
    configs = sweep.expand_grid(base, grid)
    assert len(configs) == 8
    assert [c.seed for c in configs] == [0] * 4 + [1] * 4
    assert {(c.labels, c.smooth) for c in configs[:4]} == {(20, "tma"), (20, "sts"), (40, "tma"), (40, "sts")}


def test_expand_grid_ranges_repeats_and_ignored_settings():
    base, grid = grid_of("--seeds", "0-2,1", "--smooth", "tma,sts", "--p", "0.3,0.7")
    configs = sweep.expand_grid(base, grid)
    # tma ignores p: one tma run per seed, two sts runs per seed
    assert [(c.seed, c.smooth, c.p) for c in configs if c.seed == 0] == [(0, "tma", 0.5), (0, "sts", 0.3),
                                                                          (0, "sts", 0.7)]
    assert len(configs) == 9


def test_expand_grid_is_linear_in_the_grid_size():
    """100,000 seeds expand in seconds (a quadratic de-duplication would take hours)."""
    base, _ = grid_of()
    assert len(sweep.expand_grid(base, {"seed": list(range(100_000))})) == 100_000


@pytest.mark.parametrize("argv, named", [(["--smooth", "tma,ema"], "ema"), (["--p", "0.5,1.5"], "1.5"),
                                         (["--seeds", "3-1"], "3-1"), (["--labels", "x"], "'x'")])
def test_invalid_element_is_named(capsys, argv, named):
    assert cli.main(["sweep", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and "Traceback" not in err


def test_trainings_share_a_student_only_when_targets_come_from_it():
    base, grid = grid_of("--alg", "fixmatch,mean_teacher", "--smooth", "tma,sts,se", "--seeds", "0,1")
    groups = sweep.group_trainings(sweep.expand_grid(base, grid))
    sizes = sorted(len(g) for g in groups)
    assert sizes == [1] * 6 + [3, 3]     # fixmatch: 1 training per seed; mean_teacher: 1 per seed and strategy
    for g in groups:
        assert len({(c.algorithm, c.seed) for c in g}) == 1


def test_local_sweep_writes_records_and_a_second_call_trains_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    assert cli.main(sweep_args(results, "--smooth", "tma,sts", "--labels", "20")) == 0
    dirs = run_dirs(results)
    assert [d.name for d in dirs] == ["fixmatch-sts-digits-20-s0-smoke", "fixmatch-tma-digits-20-s0-smoke"]
    assert all(record(d)["status"] == "finished" and record(d)["steps_done"] == 8 for d in dirs)
    # one training served both teachers; each record carries its own single-run command (which reproduces it
    # exactly: a teacher's numbers do not depend on the others), not the sweep's
    assert record(dirs[0])["training"] == record(dirs[1])["training"] == "fixmatch-tma-digits-20-s0-smoke"
    assert record(dirs[0])["command"].startswith("python run_bench.py run --dataset digits --labels 20 --profile "
                                                 "smoke --smooth sts --device cpu")
    assert "--smooth" not in record(dirs[1])["command"]   # tma (the reference's EMA teacher) is the default
    out = capsys.readouterr().out
    assert "2 runs in 1 trainings" in out and "1 new" in out and "teacher med20" in out

    before = snapshot(results)
    assert cli.main(sweep_args(results, "--smooth", "tma,sts", "--labels", "20")) == 0
    assert snapshot(results) == before      # nothing rewritten, no new directory
    out = capsys.readouterr().out
    assert "1 finished (skipped), 0 unfinished (resumed), 0 new" in out


def train_in_a_forked_process(config: RunConfig) -> multiprocessing.Process:
    """A real separate process that can be SIGKILLed; forked, so it starts warm (no second torch import)."""
    process = multiprocessing.get_context("fork").Process(target=train, args=(config,), kwargs={"progress": False})
    process.start()
    return process


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_interrupted_and_killed_runs_are_resumed_by_the_next_sweep_exactly(tmp_path, capsys):
    """Seed 0 stops at step 6 (stop_at), seed 1 is SIGKILLed after its first checkpoint; one sweep finishes both
    in their own directories, with the metrics of uninterrupted runs."""
    results, reference = tmp_path / "results", tmp_path / "reference"
    grid = ("--smooth", "sts", "--labels", "20", "--steps", "24", "--seeds", "0,1")
    _, stopped_dir = train(smoke(tmp_path, smooth="sts", seed=0, steps=24), stop_at=6, progress=False)
    victim = train_in_a_forked_process(smoke(tmp_path, smooth="sts", seed=1, steps=24))
    killed_dir = results / "fixmatch-sts-digits-20-s1-smoke"
    try:
        wait_for(killed_dir / "checkpoint.pt", also=victim.is_alive)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
    finally:
        if victim.is_alive():
            victim.kill()
    assert record(killed_dir)["status"] == "running" and record(killed_dir)["steps_done"] < 24, "not killed mid-run"
    assert record(stopped_dir)["status"] == "interrupted" and record(stopped_dir)["steps_done"] == 6
    capsys.readouterr()

    assert cli.main(sweep_args(results, *grid, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "stale at step" in out and "interrupted at step 6/24" in out   # the killed run's holder is gone
    assert cli.main(sweep_args(results, *grid)) == 0
    assert "0 finished (skipped), 2 unfinished (resumed), 0 new" in capsys.readouterr().out
    assert run_dirs(results) == sorted([stopped_dir, killed_dir])      # resumed in place, no new directory
    assert cli.main(sweep_args(reference, *grid)) == 0                 # the same runs, uninterrupted
    for run_dir in (stopped_dir, killed_dir):
        assert record(run_dir)["status"] == "finished" and record(run_dir)["steps_done"] == 24
        assert metric_rows(run_dir) == metric_rows(reference / run_dir.name)
        assert record(run_dir)["results"] == record(reference / run_dir.name)["results"]


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def preempt_job_of(run_dir: Path, log_dir: Path, smooth: str, done: threading.Event) -> None:
    """Once ``run_dir`` has a checkpoint, send USR2 -- what SLURM sends on preemption and before the time
    limit -- to the submitit task that trains ``smooth`` (found through its job's submitted pickle)."""
    while not (run_dir / "checkpoint.pt").exists():
        if done.is_set():
            return
        time.sleep(0.02)
    for controller in child_pids(os.getpid()):   # submitit-local: controller = job id, its child = the task
        submitted = log_dir / f"{controller}_submitted.pkl"
        if submitted.exists() and DelayedSubmission.load(submitted).function.configs[0].smooth == smooth:
            for task in child_pids(controller):
                os.kill(task, signal.SIGUSR2)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's process through /proc")
def test_submitit_local_sweep_runs_the_grid_and_a_preempted_job_requeues_itself(tmp_path, capsys):
    """The tma run is already finished, so the sweep submits only the sts run as a submitit job. That job is
    preempted after its first checkpoint: submitit calls TrainingJob.checkpoint() and requeues it, and the new
    attempt finishes the same run directory (resume=True) with the metrics of an uninterrupted run."""
    results, log_dir = tmp_path / "results", tmp_path / "logs"
    _, finished = train(smoke(tmp_path, smooth="tma", steps=24), progress=False)
    preempted = results / "fixmatch-sts-digits-20-s0-smoke"
    done = threading.Event()
    watcher = threading.Thread(target=preempt_job_of, args=(preempted, log_dir, "sts", done), daemon=True)
    watcher.start()
    try:
        code = cli.main(sweep_args(results, "--smooth", "tma,sts", "--labels", "20", "--steps", "24",
                                   "--executor", "submitit-local", "--threads", "1", "--timeout-min", "5",
                                   "--log-dir", str(log_dir)))
    finally:
        done.set()
        watcher.join()
    out = capsys.readouterr().out
    assert code == 0, out
    # tma and sts would share a training; tma is done, so the training serves sts only
    assert "2 runs in 1 trainings" in out and "0 finished (skipped), 0 unfinished (resumed), 1 new" in out
    assert out.count("submitit job") == 1
    assert run_dirs(results) == [preempted, finished]
    assert all(record(d)["status"] == "finished" and record(d)["steps_done"] == 24 for d in run_dirs(results))
    logs = "".join(p.read_text() for p in log_dir.glob("*_log.out"))
    assert logs.count("Calling checkpoint method") == 1 and logs.count("Requeued job") == 1, logs
    _, reference = train(smoke(tmp_path, smooth="sts", steps=24, results_dir=str(tmp_path / "ref")), progress=False)
    assert metric_rows(preempted) == metric_rows(reference)


def test_one_failed_run_does_not_stop_the_sweep(tmp_path, capsys):
    results = tmp_path / "results"
    code = cli.main(sweep_args(results, "--smooth", "tma", "--labels", "20,7"))   # 7 labels for 10 classes: refused
    captured = capsys.readouterr()
    assert code == 1
    assert [record(d)["status"] for d in run_dirs(results)] == ["finished"]
    assert "1 of 2 runs did not finish" in captured.out and "labels" in captured.out.lower() + captured.err.lower()


def fake_srun(tmp_path: Path, monkeypatch) -> None:
    """submitit's SLURM executor looks for ``srun`` on PATH before it builds anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def test_slurm_executor_writes_a_requeueable_job_script(tmp_path, monkeypatch):
    fake_srun(tmp_path, monkeypatch)
    options = sweep.SweepOptions(executor="slurm", timeout_min=600, max_num_timeout=30, partition="gpu",
                                 gpus_per_node=1, cpus_per_task=8, mem_gb=32, slurm_array_parallelism=16,
                                 account="ssl", slurm_setup=["source .venv/bin/activate"])
    executor = sweep.make_executor(options, tmp_path / "logs")
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit logs", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=600", "#SBATCH --mem=32GB", "#SBATCH --account=ssl", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@90", "source .venv/bin/activate"):
        assert line in script, line
    assert executor._executor.max_num_timeout == 30
    # what each array task runs: the requeueable job, which pickles with its configurations
    job = DelayedSubmission(sweep.TrainingJob([smoke(tmp_path)], threads=8))
    job.dump(tmp_path / "job.pkl")
    assert DelayedSubmission.load(tmp_path / "job.pkl").function.configs == [smoke(tmp_path)]
    assert isinstance(job.function.checkpoint().function, sweep.TrainingJob)


def test_submitit_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "submitit" else real_import(name, *a, **k))
    assert cli.main(sweep_args(tmp_path / "results", "--executor", "submitit-local")) == 2
    assert "pip install 'ssl-bench[cluster]'" in capsys.readouterr().err


def test_slurm_without_slurm_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))     # no srun
    assert cli.main(sweep_args(tmp_path / "results", "--executor", "slurm")) == 2
    assert "--executor slurm" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()

