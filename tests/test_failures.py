"""The command line probed as a careless or hostile user would (issue 11): every failure is one clear line.

Each case runs ``ssl_bench.cli.main(argv)`` in this process (a real second process only where the case needs
one: a lock holder, a killed run) on the smoke profile with the embedded digits, and checks what the user sees
(exit code, ONE ``error: `` line naming the file or value and the fix, no traceback) and what is kept on disk.
Cases already pinned elsewhere are not repeated here; docs/FAILURES.md lists every case with the test that
covers it. A case that fails today is marked ``xfail(strict=True)`` with what is wrong; remove the mark with
the fix.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import metric_rows

import ssl_bench.run.loop as train_module
import ssl_bench.run.writer as writer_module
from ssl_bench.cli import main
from ssl_bench.run.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--profile", "smoke", "--dataset", "digits", "--labels", "20", "--device", "cpu", "--no-progress"]
RUN_NAME = "fixmatch-tma-digits-20-s0-smoke"   # the run directory SMOKE creates (results.run_base_name)


# -- helpers ----------------------------------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: exit code, stdout, stderr (earlier output discarded)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_args(results: Path | str, *extra: str) -> list[str]:
    return ["run", *SMOKE, "--results-dir", str(results), *extra]


def assert_one_error_line(err: str, *named: str) -> None:
    """stderr is exactly one line ``error: ...`` that contains every string of ``named``, and no traceback."""
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    for text in named:
        assert text in err, f"{text!r} not in {err!r}"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): what "untouched" is compared with."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding one smoke run stopped at step 2 (copied per test: one training, many tests)."""
    results = tmp_path_factory.mktemp("template") / "results"
    assert main(run_args(results, "--stop-at", "2")) == 0
    assert sorted(p.name for p in results.iterdir()) == [RUN_NAME]
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, uninterrupted: what every resume must reproduce exactly."""
    results = tmp_path_factory.mktemp("reference") / "results"
    assert main(run_args(results)) == 0
    return results / RUN_NAME


@pytest.fixture
def stopped(template: Path, tmp_path: Path) -> Path:
    """This test's own copy of the stopped run; returns its run directory (results folder: its parent)."""
    shutil.copytree(template, tmp_path / "results")
    return tmp_path / "results" / RUN_NAME


# -- checkpoints on --resume ------------------------------------------------------------------------------------

def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("case, damage, problem", [
    ("empty", lambda data: b"", "is empty"),
    ("truncated", _truncated, "is truncated"),
    ("garbage", lambda data: bytes(range(256)) * 16, "corrupt or not a checkpoint"),
])
def test_unusable_checkpoint_on_resume_is_one_line_and_the_run_is_untouched(stopped, capsys, case, damage,
                                                                           problem):
    path = stopped / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    before = snapshot(stopped.parent)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 2
    assert_one_error_line(err, str(path), problem, "delete it")
    assert snapshot(stopped.parent) == before


@pytest.mark.parametrize("damaged", ["checkpoint.pt", "record.json"])
def test_the_fix_the_line_gives_works(stopped, capsys, reference, damaged):
    """'delete it' (a damaged checkpoint: from step 0) / 'delete this record.json' (from the checkpoint), then the
    same command with --resume: the same directory finishes with the uninterrupted numbers."""
    (stopped / damaged).write_bytes(b"\0" * 64)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 2 and "delete" in err
    (stopped / damaged).unlink()
    code, out, _ = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 0 and "nothing to resume" not in out
    assert sorted(p.name for p in stopped.parent.iterdir()) == [RUN_NAME]
    assert json.loads((stopped / "record.json").read_text())["status"] == "finished"
    assert metric_rows(stopped) == metric_rows(reference)


def test_sweep_reports_an_unusable_checkpoint_and_goes_on(stopped, capsys):
    """A sweep does not stop at one bad training: it names the file in its summary and exits 1."""
    path = stopped / "checkpoint.pt"
    path.write_bytes(_truncated(path.read_bytes()))
    before = snapshot(stopped.parent)
    code, out, err = cli(capsys, "sweep", *SMOKE, "--results-dir", str(stopped.parent))
    assert code == 1 and "Traceback" not in out + err
    assert f"failed: CheckpointError: checkpoint {path} is truncated" in err
    assert "1 of 1 runs did not finish" in out
    assert snapshot(stopped.parent) == before


def test_checkpoint_of_another_run_is_refused_naming_what_differs(stopped, tmp_path, capsys):
    """Documented: the first line names the file; the differences follow, one per line."""
    other = tmp_path / "other"
    assert main(run_args(other, "--stop-at", "2", "--seed", "1")) == 0
    shutil.copy(other / "fixmatch-tma-digits-20-s1-smoke" / "checkpoint.pt", stopped / "checkpoint.pt")
    before = snapshot(stopped.parent)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 2 and "Traceback" not in err
    first, *differences = err.splitlines()
    assert first == f"error: {stopped / 'checkpoint.pt'} does not match this run, nothing was loaded:"
    assert "  - seed: checkpoint has 1, this run has 0" in differences
    assert snapshot(stopped.parent) == before


def test_checkpoint_of_an_older_layout_is_one_line(stopped, capsys):
    path = stopped / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["log_window"]   # loads with weights_only, has step and identity, and the identity matches
    torch.save(state, path)
    before = snapshot(stopped.parent)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 2
    assert_one_error_line(err, str(path), "log_window")
    assert snapshot(stopped.parent) == before


# -- run files: config.json, record.json ------------------------------------------------------------------------

@pytest.mark.parametrize("name, fix", [("config.json", "move the run directory"),
                                       ("record.json", "delete this record.json")])
def test_corrupt_run_file_on_resume_is_one_line_naming_it(stopped, capsys, name, fix):
    (stopped / name).write_text('{"config": {"alg')
    before = snapshot(stopped.parent)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 2
    assert_one_error_line(err, str(stopped / name), fix)
    assert snapshot(stopped.parent) == before


def test_sweep_plan_with_a_corrupt_config_json_is_one_line(stopped, capsys):
    (stopped / "config.json").write_text("{")
    code, _, err = cli(capsys, "sweep", *SMOKE, "--results-dir", str(stopped.parent), "--dry-run")
    assert code == 2
    assert_one_error_line(err, str(stopped / "config.json"), "move the run directory")


@pytest.mark.parametrize("change", [{"training": "x"}, {"config": "x"}, {"training": {"teachers": 3}}])
def test_config_json_of_the_wrong_shape_is_one_line(stopped, capsys, change):
    path = stopped / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    before = snapshot(stopped.parent)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    assert code == 2
    assert_one_error_line(err, str(path))
    assert snapshot(stopped.parent) == before


# -- values -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, named", [
    (["sweep", "--seeds", str(2**32), "--dry-run"], "--seed 4294967296"),
    (["sweep", "--alg-arg", "threshold=5", "--dry-run"], "threshold=5"),
    (["run", "--alg-arg", "threshold=nan"], "threshold=nan"),
    (["run", "--p", "nan"], "nan"),
    (["run", "--m", "nan"], "nan"),
    (["run", "--labels", "0"], "--labels 0"),
    (["run", "--labels", "100000"], "100000 is more than the 1442 training images"),
    (["run", "--eval-every", "0"], "--eval-every 0"),
    (["run", "--dataset", ""], "non-empty"),
    (["run", "--alg", ""], "unknown algorithm ''"),
])
def test_bad_value_is_one_line_and_nothing_is_created(tmp_path, capsys, argv, named):
    command, *rest = argv
    code, _, err = cli(capsys, command, *SMOKE, "--results-dir", str(tmp_path / "results"), *rest)
    assert code == 2
    assert_one_error_line(err, named)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--momentum", "nan"),
                                         ("--weight-decay", "inf")])
def test_non_finite_setting_is_refused_before_a_run_starts(tmp_path, capsys, flag, value):
    code, _, err = cli(capsys, *run_args(tmp_path / "results", flag, value))
    assert code == 2
    assert_one_error_line(err, f"{flag} {value}")
    assert not (tmp_path / "results").exists()


def test_malformed_device_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, *run_args(tmp_path / "results", "--device", "cuda:x"))
    assert code == 2
    assert_one_error_line(err, "--device", "cuda:x")


def test_plugin_taking_a_builtin_name_is_refused_by_the_cli(tmp_path, capsys, monkeypatch):
    """By path, and dropped into ./algorithms: the line names both files; nothing is trained."""
    plugin = (REPO / "algorithms" / "fixmatch.py").read_text()   # a copy of the built-in: registers 'fixmatch'
    (tmp_path / "my_fixmatch.py").write_text(plugin)
    code, _, err = cli(capsys, *run_args(tmp_path / "results", "--alg", str(tmp_path / "my_fixmatch.py")))
    assert code == 2
    assert_one_error_line(err, str(tmp_path / "my_fixmatch.py"), "reserved", str(REPO / "algorithms"))
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "fixmatch.py").write_text(plugin)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *run_args(tmp_path / "results", "--alg", "fixmatch"))
    assert code == 2
    assert_one_error_line(err, str(tmp_path / "algorithms" / "fixmatch.py"), "reserved", "rename")
    assert not (tmp_path / "results").exists()


def _npz(path: Path, **change: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(12) % 3,
              "x_test": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), "y_test": np.arange(6) % 3}
    np.savez(path, **{**arrays, **change})
    return path


@pytest.mark.parametrize("case, named", [("empty test set", "x_test is empty"),
                                         ("one class", "at least 2 classes"),
                                         ("non-array member", "member 'notes.txt' is not a numpy array")])
def test_unusable_npz_is_one_line_from_the_cli(tmp_path, capsys, case, named):
    path = tmp_path / "mine.npz"
    if case == "empty test set":
        _npz(path, x_test=np.zeros((0, 32, 32, 3), np.uint8), y_test=np.zeros(0, np.int64))
    elif case == "one class":
        _npz(path, y_train=np.zeros(12, np.int64), y_test=np.zeros(6, np.int64))
    else:
        _npz(path)
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("notes.txt", b"hello")
    code, _, err = cli(capsys, "run", "--profile", "smoke", "--dataset", str(path), "--labels", "3",
                       "--device", "cpu", "--no-progress", "--results-dir", str(tmp_path / "results"))
    assert code == 2
    assert_one_error_line(err, str(path), named)
    assert not (tmp_path / "results").exists()


# -- the results folder -------------------------------------------------------------------------------------------

def test_leaderboard_of_a_file_says_it_is_not_a_folder(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = cli(capsys, "leaderboard", "--results-dir", str(tmp_path / "a-file"))
    assert code == 2
    assert_one_error_line(err, str(tmp_path / "a-file"), "not a folder")


def _read_only_mkdir(path, *args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


@pytest.mark.parametrize("case", ["under a file", "a file", "read-only"])
def test_unusable_results_folder_is_one_line_with_the_fix(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "a-file").write_text("not a folder")
    results = {"under a file": tmp_path / "a-file" / "results", "a file": tmp_path / "a-file",
               "read-only": tmp_path / "results"}[case]
    if case == "read-only":   # we may run as root, whom chmod does not stop: refuse the mkdir itself
        monkeypatch.setattr(os, "mkdir", _read_only_mkdir)
    code, _, err = cli(capsys, *run_args(results))
    assert code == 2
    assert_one_error_line(err, str(results), "--results-dir")


def test_empty_results_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *run_args("", "--stop-at", "1"))
    assert list(tmp_path.iterdir()) == []
    assert code == 2
    assert_one_error_line(err, "--results-dir")


def test_read_only_run_on_resume_is_refused_and_left_untouched(stopped, capsys, monkeypatch):
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if str(stopped) in str(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    before = snapshot(stopped.parent)
    monkeypatch.setattr(os, "open", read_only_open)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    monkeypatch.undo()
    assert code == 2 and "Traceback" not in err and str(stopped) in err
    assert snapshot(stopped.parent) == before


def test_read_only_run_on_resume_says_how_to_fix_it(stopped, capsys, monkeypatch):
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if str(stopped) in str(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
    monkeypatch.undo()
    assert code == 2
    assert_one_error_line(err, str(stopped), "writable")


class DiskFull:
    """From the moment it is switched on, every fsync fails with ENOSPC (every atomic write: checkpoint, record,
    metrics, config), the way a full disk fails the whole folder and not one file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after_first_checkpoint: bool) -> None:
        self.full = not after_first_checkpoint
        real_fsync, real_save = os.fsync, writer_module.save_checkpoint

        def fsync(fd: int) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        def save_then_fill(path: Path, state: dict) -> None:
            real_save(path, state)
            self.full = True

        monkeypatch.setattr(os, "fsync", fsync)
        if after_first_checkpoint:
            monkeypatch.setattr(writer_module, "save_checkpoint", save_then_fill)


def test_disk_full_keeps_the_last_checkpoint_and_resume_is_exact(tmp_path, capsys, monkeypatch, reference):
    results = tmp_path / "results"
    DiskFull(monkeypatch, after_first_checkpoint=True)
    code, _, err = cli(capsys, *run_args(results))
    monkeypatch.undo()
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    run_dir = results / RUN_NAME
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 4   # the evaluation before the disk filled
    assert not list(run_dir.glob(".*.tmp")), "a temporary file was left behind"
    code, _, _ = cli(capsys, *run_args(results, "--resume"))
    assert code == 0 and sorted(p.name for p in results.iterdir()) == [RUN_NAME]
    assert metric_rows(run_dir) == metric_rows(reference)


def test_disk_full_names_the_checkpoint_and_the_fix(tmp_path, capsys, monkeypatch):
    DiskFull(monkeypatch, after_first_checkpoint=True)
    code, _, err = cli(capsys, *run_args(tmp_path / "results"))
    monkeypatch.undo()
    assert code == 2
    assert_one_error_line(err, str(tmp_path / "results" / RUN_NAME / "checkpoint.pt"), "--resume")


def test_disk_full_at_the_start_names_the_folder(tmp_path, capsys, monkeypatch):
    DiskFull(monkeypatch, after_first_checkpoint=False)
    code, _, err = cli(capsys, *run_args(tmp_path / "results"))
    monkeypatch.undo()
    assert code == 2
    assert_one_error_line(err, str(tmp_path / "results"))


def test_a_run_that_failed_to_start_does_not_block_the_next(tmp_path, capsys, monkeypatch):
    DiskFull(monkeypatch, after_first_checkpoint=False)
    assert cli(capsys, *run_args(tmp_path / "results"))[0] == 2
    monkeypatch.undo()
    code, out, err = cli(capsys, "sweep", *SMOKE, "--results-dir", str(tmp_path / "results"), "--dry-run")
    assert code == 0, err
    code, out, err = cli(capsys, *run_args(tmp_path / "results", "--resume"))
    assert code == 2 and "nothing to resume" in err   # the failed start left nothing behind to resume
    code, out, err = cli(capsys, *run_args(tmp_path / "results"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [RUN_NAME]


# -- the life of a run: divergence, out of memory, Ctrl-C, a second process, a killed one ----------------------------

def _nan_loss(real_step):
    def step(run, batch):
        logs = real_step(run, batch)
        return {**logs, "loss": logs["loss"] * float("nan")}
    return step


def test_divergence_is_one_line_and_the_record_says_failed(tmp_path, capsys, monkeypatch):
    # a loss that turns non-finite (--lr itself is bounded at the door: config.MAX_LR)
    monkeypatch.setattr(train_module, "training_step", _nan_loss(train_module.training_step))
    code, _, err = cli(capsys, *run_args(tmp_path / "results"))
    assert code == 2
    assert_one_error_line(err, "not finite at step", "--lr")
    run_dir = tmp_path / "results" / RUN_NAME
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "not finite" in record["error"]
    # the message promises the record's evaluations, not a checkpoint (none is written before a failure)
    assert not (run_dir / "checkpoint.pt").exists() and "checkpoint" not in err


def _out_of_memory(run, batch):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_one_line_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "training_step", _out_of_memory)
    code, _, err = cli(capsys, *run_args(tmp_path / "results"))
    assert code == 2
    assert_one_error_line(err, "out of memory", "--batch-size")


def _interrupt_at_step_5(real_step):
    def step(run, batch):
        if run.step == 5:
            raise KeyboardInterrupt
        return real_step(run, batch)
    return step


def test_ctrl_c_exits_130_and_resume_with_other_output_options_is_exact(tmp_path, capsys, monkeypatch, reference):
    """Ctrl-C: exit 130, one line, the record says interrupted; a --resume that changes only settings which do
    not change the numbers (--log-every, --eval-batch-size) continues the same directory exactly."""
    results = tmp_path / "results"
    monkeypatch.setattr(train_module, "training_step", _interrupt_at_step_5(train_module.training_step))
    code, _, err = cli(capsys, *run_args(results))
    monkeypatch.undo()
    assert code == 130 and err.startswith("interrupted: ") and err.count("\n") == 1 and "--resume" in err
    run_dir = results / RUN_NAME
    assert json.loads((run_dir / "record.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 4
    code, out, _ = cli(capsys, *run_args(results, "--resume", "--log-every", "1", "--eval-batch-size", "7"))
    assert code == 0 and "nothing to resume" not in out
    assert sorted(p.name for p in results.iterdir()) == [RUN_NAME]
    assert json.loads((run_dir / "record.json").read_text())["status"] == "finished"
    assert metric_rows(run_dir) == metric_rows(reference)


def test_ctrl_c_line_names_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "training_step", _interrupt_at_step_5(train_module.training_step))
    code, _, err = cli(capsys, *run_args(tmp_path / "results"))
    assert code == 130 and str(tmp_path / "results" / RUN_NAME) in err


def test_resume_of_a_run_another_process_trains_is_refused(stopped, capsys):
    """A real second process holds the run's lock: --resume is one line naming the run and that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ssl_bench.run.lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(stopped)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {k: v for k, v in snapshot(stopped).items() if k != "lock.json"}
        code, _, err = cli(capsys, *run_args(stopped.parent, "--resume"))
        assert code == 2
        assert_one_error_line(err, str(stopped), f"pid {holder.pid}")
        assert {k: v for k, v in snapshot(stopped).items() if k != "lock.json"} == before
    finally:
        holder.kill()
        holder.wait()


def _train_until_killed(argv: list[str]) -> None:
    """Child process: train, and hang after the first checkpoint (step 4) until killed."""
    real_step = train_module.training_step

    def step(run, batch):
        while run.step == 5:
            time.sleep(1)
        return real_step(run, batch)

    train_module.training_step = step
    main(argv)
    os._exit(0)


def _steps_done(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "record.json").read_text())["steps_done"]
    except FileNotFoundError:
        return None


def _signal_at_step_4(results: Path, run_dir: Path, signum: int) -> None:
    """Train in a forked process and send it ``signum`` once the record of step 4 (written right after its
    checkpoint) is there."""
    child = multiprocessing.get_context("fork").Process(target=_train_until_killed, args=(run_args(results),))
    child.start()
    try:
        deadline = time.monotonic() + 120
        while _steps_done(run_dir) != 4:
            assert child.is_alive() and time.monotonic() < deadline, "the child did not reach its checkpoint"
            time.sleep(0.05)
        os.kill(child.pid, signum)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_killed_run_is_stale_on_the_leaderboard_and_in_the_sweep_and_resumes_exactly(tmp_path, capsys, caplog,
                                                                                    reference):
    results = tmp_path / "results"
    run_dir = results / RUN_NAME
    _signal_at_step_4(results, run_dir, signal.SIGKILL)
    assert json.loads((run_dir / "record.json").read_text())["status"] == "running"

    code, out, _ = cli(capsys, "leaderboard", "--results-dir", str(results), "--format", "json", "--no-write")
    assert code == 0
    (entry,) = json.loads(out)["not_counted"]
    assert entry["status"] == "stale" and "--resume" in entry["reason"]
    code, out, _ = cli(capsys, "sweep", *SMOKE, "--results-dir", str(results), "--dry-run")
    assert code == 0 and "1 unfinished (resumed)" in out and "stale at step 4/8" in out
    caplog.clear()
    code, _, _ = cli(capsys, *run_args(results, "--resume"))
    assert code == 0 and sorted(p.name for p in results.iterdir()) == [RUN_NAME]
    # --resume says it takes over a dead holder's run (a logging warning: stderr when logging is not set up)
    assert f"taking over the lock of {run_dir}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((run_dir / "record.json").read_text())["status"] == "finished"
    assert metric_rows(run_dir) == metric_rows(reference)
    assert not (run_dir / "lock.json").exists()


# -- files and scale ---------------------------------------------------------------------------------------------

def test_every_file_and_folder_of_a_run_follows_the_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert cli(capsys, *run_args(tmp_path / "results", "--stop-at", "2"))[0] == 0
    finally:
        os.umask(old)
    results = tmp_path / "results"
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in [results, *results.rglob("*")]}
    expected = {path: 0o750 if (tmp_path / path).is_dir() else 0o640 for path in modes}
    assert modes == expected
    assert {"checkpoint.pt", "config.json", "record.json", "split.json", "metrics.csv"} <= {
        Path(p).name for p in modes}


def test_a_large_sweep_plans_without_hanging(tmp_path, capsys):
    """1000 seeds plan in seconds; 100,001 (``--seeds 0-100000``) took 385 s wall / 135 s CPU on the shared
    2-core machine, linear in the grid (docs/FAILURES.md has the profile)."""
    code, out, _ = cli(capsys, "sweep", *SMOKE, "--results-dir", str(tmp_path / "results"), "--seeds", "0-999",
                       "--dry-run")
    assert code == 0
    assert out.splitlines()[0].startswith("sweep: 1000 runs in 1000 trainings") and out.endswith("s999-smoke  new\n")
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_sigterm_is_recorded_interrupted(tmp_path):
    results = tmp_path / "results"
    run_dir = results / RUN_NAME
    _signal_at_step_4(results, run_dir, signal.SIGTERM)
    assert json.loads((run_dir / "record.json").read_text())["status"] == "interrupted"
