"""Training records (``RunRecord``): round trip, old-schema migration, one-line errors, stale runs, file modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.records import (
    LEGACY_SETTING_FIELDS,
    RECORD_FILE,
    SCHEMA_VERSION,
    RecordError,
    RunRecord,
    RunStatus,
    atomic_write_bytes,
)
from ssl_bench.run import lock

# A schema-1 record as the training loop wrote it before schema 2 (results/*-cpu/record.json, Nov 2026).
SCHEMA1 = {
    "schema": 1, "run_id": "fixmatch-none-cifar10_subset-250-s0-cpu", "status": "finished", "error": None,
    "algorithm": "fixmatch", "alg_args": {"threshold": 0.95, "lambda_u": 1.0}, "targets_from": "student",
    "smooth": "none", "granularity": "layer", "p": 0.5, "m": 0.99, "buffers": "copy",
    "dataset": "cifar10_subset", "dataset_kind": "subset", "dataset_family": "cifar10",
    "dataset_fingerprint": "0458e7bb93621c2c", "labels": 250, "seed": 0, "split_seed": 0,
    "split_hash": "16372a5647cbeb1f", "profile": "cpu", "steps": 1024, "steps_done": 1024, "model": "small",
    "batch_size": 16, "mu": 7, "eval_every": 16,
    "results": {"num_evals": 64, "teacher_median_last20": 37.2173058013766, "teacher_best": 39.72468043264504,
                "teacher_last": 38.05309734513274, "student_median_last20": 37.2173058013766,
                "student_best": 39.72468043264504, "student_last": 38.05309734513274},
    "versions": {"ssl_bench": "0.1.0", "torch": "2.13.0+cpu", "numpy": "2.4.6", "python": "3.11.7"},
    "device": "cpu:x86_64 x1 threads", "commit": "b12c3eb51d74",
    "command": "python run_bench.py --profile cpu --dataset cifar10_subset --alg fixmatch --smooth none",
    "started": "2026-11-25T13:11:23+00:00", "finished": "2026-11-25T13:20:53+00:00", "wall_seconds": 570.1,
    "data_parallel": [{"from_step": 0, "world_size": 1, "sync_bn": False}],
}
NEW_IN_SCHEMA2 = ("lr", "momentum", "weight_decay", "strong_augment", "hflip", "training", "teacher",
                  "train_size", "alg_overrides")


def new_record(**changes) -> RunRecord:
    fields = {k: v for k, v in SCHEMA1.items() if k != "schema" and k not in LEGACY_SETTING_FIELDS}
    settings = {k: v for k, v in SCHEMA1.items() if k in LEGACY_SETTING_FIELDS}
    settings.update(lr=0.03, momentum=0.9, weight_decay=5e-4, strong_augment="ramc", amp=False, channels_last=False,
                    compile=False, algorithm="fixmatch", dataset="cifar10_subset", alg_args={})
    fields.update(status=RunStatus.RUNNING, hflip=True, training="fixmatch-cifar10_subset-250-s0", teacher="none",
                  train_size=5000, alg_overrides={}, settings=settings)
    fields.update(changes)
    return RunRecord(**fields)


def test_round_trip_keeps_every_field_and_types(tmp_path):
    record = new_record(results=None, finished=None)
    path = record.write(tmp_path)
    assert path == tmp_path / RECORD_FILE and record.run_dir == tmp_path
    stored = json.loads(path.read_text())
    assert stored["schema"] == SCHEMA_VERSION == 3 and stored["status"] == "running"
    assert stored["settings"]["labels"] == 250 and "labels" not in stored   # the settings live in one field
    assert list(stored)[:3] == ["schema", "run_id", "status"] and "run_dir" not in stored
    back = RunRecord.read(tmp_path)
    assert back == record and back.status is RunStatus.RUNNING and back.run_dir == tmp_path
    back.status, back.results = RunStatus.FINISHED, {"teacher_median_last20": 41.0}
    back.write()
    assert RunRecord.read(tmp_path).status is RunStatus.FINISHED


def test_schema1_records_read_with_the_new_fields_none(tmp_path):
    (tmp_path / RECORD_FILE).write_text(json.dumps(SCHEMA1))
    record = RunRecord.read(tmp_path)
    assert record.status is RunStatus.FINISHED and record.results["teacher_best"] == 39.72468043264504
    assert (record.m, record.steps, record.data_parallel[0]["world_size"]) == (0.99, 1024, 1)
    assert {name: getattr(record, name) for name in NEW_IN_SCHEMA2} == dict.fromkeys(NEW_IN_SCHEMA2)
    rewritten = record.to_dict()   # written as schema 3: the flat settings move into ``settings``
    assert rewritten["schema"] == 3 and rewritten["settings"] == {
        **{k: SCHEMA1[k] for k in LEGACY_SETTING_FIELDS if k in SCHEMA1},
        **dict.fromkeys(("lr", "momentum", "weight_decay", "strong_augment")),
        "amp": False, "channels_last": False, "compile": False}
    assert {k: rewritten[k] for k in SCHEMA1 if k != "schema" and k not in LEGACY_SETTING_FIELDS} == {
        k: v for k, v in SCHEMA1.items() if k != "schema" and k not in LEGACY_SETTING_FIELDS}


def test_integers_read_as_floats_but_bools_are_not_numbers(tmp_path):
    (tmp_path / RECORD_FILE).write_text(json.dumps({**SCHEMA1, "p": 1, "wall_seconds": 570}))
    record = RunRecord.read(tmp_path)
    assert (record.p, type(record.p), type(record.wall_seconds)) == (1.0, float, float)
    (tmp_path / RECORD_FILE).write_text(json.dumps({**SCHEMA1, "steps": True}))
    with pytest.raises(RecordError, match="steps = True"):
        RunRecord.read(tmp_path)


@pytest.mark.parametrize("text, problem", [
    ('{"schema": 2, "status": "fini', "cannot be read as JSON"),
    ("", "cannot be read as JSON"),
    ("[1, 2]", "is a JSON list, not an object"),
    (json.dumps({**SCHEMA1, "steps": "many"}), "steps = 'many' (str), expected a int"),
    (json.dumps({k: v for k, v in SCHEMA1.items() if k != "algorithm"}),
     "lacks the required field 'algorithm'"),
    (json.dumps({**SCHEMA1, "status": "done"}), "status 'done', not one of ['running', 'finished'"),
    (json.dumps({**SCHEMA1, "status": "stale"}), None),  # never written, but a reader could meet it
    (json.dumps({**SCHEMA1, "colour": "red"}), "unknown fields ['colour'] for schema 1"),
])
def test_a_bad_record_is_one_line_naming_the_file_and_the_fix(tmp_path, text, problem):
    (tmp_path / RECORD_FILE).write_text(text)
    if problem is None:   # "stale" is a valid status value for a reader; written records never hold it
        assert RunRecord.read(tmp_path).status is RunStatus.STALE
        return
    with pytest.raises(RecordError) as info:
        RunRecord.read(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / RECORD_FILE)) and problem in message
    assert "re-run the same command with --resume" in message


def test_unknown_schema_says_to_upgrade(tmp_path):
    for schema in (99, "2", None):
        (tmp_path / RECORD_FILE).write_text(json.dumps({**SCHEMA1, "schema": schema}))
        with pytest.raises(RecordError, match=rf"unknown record schema {schema!r} .*reads 1 to 3.*upgrade"):
            RunRecord.read(tmp_path)


def test_an_unreadable_record_file_is_one_line(tmp_path):
    (tmp_path / RECORD_FILE).mkdir()
    with pytest.raises(RecordError, match=r"record.json cannot be read \(Is a directory\); check that it is a regular"):
        RunRecord.read(tmp_path)


def test_missing_record_and_read_if_present(tmp_path):
    assert RunRecord.read_if_present(tmp_path) is None and not RunRecord.exists(tmp_path)
    with pytest.raises(RecordError, match="no run record there"):
        RunRecord.read(tmp_path)


def test_stale_is_never_written_and_a_record_needs_its_required_fields(tmp_path):
    with pytest.raises(ValueError, match="never written"):
        new_record(status=RunStatus.STALE).write(tmp_path)
    assert not (tmp_path / RECORD_FILE).exists()
    with pytest.raises(TypeError, match="RunRecord needs algorithm"):
        new_record(algorithm=None)


def test_effective_status_reports_a_running_record_without_a_live_holder_as_stale(tmp_path, monkeypatch):
    record = new_record()
    record.write(tmp_path)
    # no lock file (None): its last write failed (a full disk) after the lock was released: stale
    for alive, expected in ((True, RunStatus.RUNNING), (None, RunStatus.STALE), (False, RunStatus.STALE)):
        monkeypatch.setattr(lock, "holder_alive", lambda run_dir, alive=alive: alive)
        assert record.effective_status() is expected
        assert RunRecord.read(tmp_path).effective_status(tmp_path) is expected
    finished = new_record(status=RunStatus.FINISHED)
    assert finished.effective_status(tmp_path) is RunStatus.FINISHED   # only running records can be stale


def test_a_killed_lock_holder_makes_its_running_record_stale(tmp_path):
    """End to end with the real lock: a process takes the run's lock and is killed with SIGKILL."""
    if not hasattr(lock, "RunLock"):
        pytest.skip("ssl_bench.run.lock has no RunLock yet")
    new_record().write(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ssl_bench.run.lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert RunRecord.read(tmp_path).effective_status() is RunStatus.RUNNING
    finally:
        holder.kill()
        holder.wait()
    assert RunRecord.read(tmp_path).effective_status() is RunStatus.STALE


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_create_files_with_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.txt", b"hello")
        new_record().write(tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / RECORD_FILE).stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", RECORD_FILE]   # no temporary file left


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
