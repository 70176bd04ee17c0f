"""Checkpoints load without running code, fail in one clear line, save atomically, keep every RNG exact."""

from __future__ import annotations

import collections
import errno
import io
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_bench.run import checkpoint as ckpt
from ssl_bench.run.checkpoint import (
    CheckpointError,
    CheckpointSaveError,
    check_plain,
    load_checkpoint,
    save_checkpoint,
)


def weights_only_round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def minimal_state(**extra):
    return {"step": 3, "identity": {"algorithm": "fixmatch"}, "student": {"w": torch.arange(4.0)}, **extra}


def folder_snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time: 'nothing in the folder changed' made checkable."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# -- random states -------------------------------------------------------------------------------------------


ACCEPTED = [torch.ones(2), torch.nn.Parameter(torch.ones(2)), 1, 2**100, 1.5, True, None, "s", b"b", 1j,
            bytearray(b"x"), (1, 2), [1, [2]], {"a": {1: 2}}, collections.OrderedDict(a=1), {1, 2},
            collections.Counter("aab"), torch.Size([2, 3]), torch.float16, torch.device("cpu")]
REFUSED = [np.float64(1.0), np.int64(3), np.zeros(2), np.random.get_state(), {"k": [np.float32(1)]},
           frozenset({1}), Path("x"), collections.defaultdict(int)]


@pytest.mark.parametrize("value", ACCEPTED, ids=lambda v: type(v).__name__)
def test_check_plain_accepts_what_weights_only_loads(value):
    check_plain({"x": value})
    weights_only_round_trip({"x": value})   # and torch agrees


@pytest.mark.parametrize("value", REFUSED, ids=lambda v: type(v).__name__)
def test_check_plain_refuses_what_weights_only_refuses(value):
    with pytest.raises(TypeError, match=r"checkpoint state\['x'\]"):
        check_plain({"x": value})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        weights_only_round_trip({"x": value})   # torch agrees: this would be an unloadable checkpoint


def test_save_refuses_a_numpy_state_naming_its_key_and_writes_nothing(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"state\['global_rng'\]\['numpy'\]\[1\] is a numpy.ndarray.*"
                                        r"store a torch.Tensor"):
        save_checkpoint(path, minimal_state(global_rng={"numpy": np.random.get_state()}))
    assert list(tmp_path.iterdir()) == []


def test_save_then_load_round_trips(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = minimal_state(generator=torch.Generator().manual_seed(3).get_state(), history=[{"step": 1, "acc": 0.5}])
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["history"] == state["history"]
    assert torch.equal(loaded["student"]["w"], state["student"]["w"])
    assert torch.equal(loaded["generator"], state["generator"])


def test_checkpoint_of_a_training_run_loads_with_weights_only(tmp_path):
    """The state the loop really writes (models, optimizer, scheduler, smoother, streams, history)."""
    from ssl_bench.config import RunConfig
    from ssl_bench.run.loop import train

    config = RunConfig(algorithm="fixmatch", smooth="sts", dataset="digits", labels=20, profile="smoke",
                       results_dir=str(tmp_path / "results"), device="cpu")
    _, run_dir = train(config, stop_at=3, progress=False)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] == 3
    check_plain(state)


# -- refusing bad files --------------------------------------------------------------------------------------


class WritesAMarker:
    """Unpickling this calls open(marker, 'w'): stands in for any code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch zip", "raw pickle"])
def test_crafted_checkpoint_is_refused_nothing_runs_and_the_folder_is_untouched(tmp_path, container):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "MARKER"
    path = run_dir / "checkpoint.pt"
    if container == "torch zip":
        torch.save(minimal_state(evil=WritesAMarker(marker)), path)
    else:   # no tensors: plain pickle stores those through torch.storage._load_from_bytes, refused first
        path.write_bytes(pickle.dumps({"step": 3, "identity": {}, "evil": WritesAMarker(marker)}, protocol=2))
    (run_dir / "record.json").write_text('{"status": "running"}\n')
    before = folder_snapshot(run_dir)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "run code" in message and "open" in message and "delete it" in message
    assert not marker.exists()
    assert folder_snapshot(run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_checkpoint_of_an_older_ssl_bench_with_numpy_states_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "checkpoint.pt"
    # what the loader read with weights_only=False
    torch.save(minimal_state(global_rng={"numpy": np.random.get_state()}), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and "older ssl-bench" in message
    assert "numpy" in message and "delete it" in message


def good_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(minimal_state(big=torch.zeros(4096)), buf)
    return buf.getvalue()


BAD_FILES = {
    "empty": (b"", "is empty"),
    "truncated": (good_bytes()[: len(good_bytes()) // 2], "is truncated"),
    "truncated to its first bytes": (good_bytes()[:40], "is truncated"),
    "garbage": (bytes(range(256)) * 8, "corrupt or not a checkpoint"),
    "text": (b"this is a text file\n", "corrupt or not a checkpoint"),
    "json": (b'{"step": 3}\n', "corrupt or not a checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unusable_file_gives_one_line_naming_path_problem_and_fix(tmp_path, case):
    data, problem = BAD_FILES[case]
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data)
    before = folder_snapshot(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message, message
    assert str(path) in message and problem in message and "restore a good copy" in message, message
    assert isinstance(err.value, ValueError)
    assert folder_snapshot(tmp_path) == before


@pytest.mark.parametrize("content, what", [
    (torch.ones(3), "a Tensor"),
    ({"student": {"w": torch.ones(1)}}, "without ['step', 'identity']"),
])
def test_a_loadable_file_that_is_not_a_checkpoint_is_refused(tmp_path, content, what):
    path = tmp_path / "checkpoint.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="not an ssl-bench checkpoint") as err:
        load_checkpoint(path)
    assert what in str(err.value) and str(path) in str(err.value)


def test_a_missing_checkpoint_is_an_oserror_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        load_checkpoint(tmp_path / "checkpoint.pt")


# -- saving ------------------------------------------------------------------------------------------------


def test_failed_save_names_the_path_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, minimal_state())
    before = folder_snapshot(tmp_path)

    def disk_full(target, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "atomic_write_bytes", disk_full)
    with pytest.raises(CheckpointSaveError) as err:
        save_checkpoint(path, minimal_state(step=4))
    message = str(err.value)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert "\n" not in message and str(path) in message and "No space left" in message
    assert "previous checkpoint" in message and "--resume" in message
    assert folder_snapshot(tmp_path) == before
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_save_into_a_read_only_folder_is_one_clear_oserror(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    save_checkpoint(folder / "checkpoint.pt", minimal_state())
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointSaveError, match=r"cannot write checkpoint .*checkpoint\.pt: Permission "
                                                      r"denied.*previous checkpoint.*writable") as err:
            save_checkpoint(folder / "checkpoint.pt", minimal_state(step=4))
        assert err.value.errno == errno.EACCES
    finally:
        folder.chmod(0o755)
    assert load_checkpoint(folder / "checkpoint.pt")["step"] == 3


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "checkpoint.pt", minimal_state())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "checkpoint.pt").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("command", ["run --resume", "sweep"])
def test_resume_and_sweep_refuse_a_crafted_checkpoint_in_one_line(tmp_path, capsys, command):
    """The issue's attack end to end: a crafted checkpoint.pt in a results folder, then --resume or sweep."""
    from ssl_bench.cli import main

    results = tmp_path / "results"
    args = ["--alg", "fixmatch", "--smooth", "sts", "--labels", "20", "--dataset", "digits",
            "--profile", "smoke", "--device", "cpu", "--results-dir", str(results), "--no-progress"]
    assert main(["run", *args, "--stop-at", "3"]) == 0
    (run_dir,) = results.iterdir()
    marker = tmp_path / "MARKER"
    torch.save(minimal_state(evil=WritesAMarker(marker)), run_dir / "checkpoint.pt")
    before = folder_snapshot(run_dir)
    capsys.readouterr()
    code = main(["run", *args, "--resume"] if command == "run --resume" else ["sweep", *args])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    refusal = [line for line in err.splitlines() if "checkpoint.pt" in line and "run code" in line]
    assert len(refusal) == 1, err
    assert not marker.exists()
    assert folder_snapshot(run_dir) == before
    assert sorted(p.name for p in results.iterdir()) == [run_dir.name]
