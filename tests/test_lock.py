"""The run lock: one holder at a time, a live holder refuses, a dead one is detected and taken over."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ssl_bench.run import lock as lock_module
from ssl_bench.run.lock import (
    LOCK_NAME,
    STALE_AFTER_S,
    RunLock,
    RunLockedError,
    holder_alive,
    read_lock,
    stale_after,
)

REPO = Path(__file__).resolve().parents[1]


def iso(seconds_ago: float = 0.0) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat()


def write_lock(run_dir: Path, **fields) -> Path:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": iso(60), "heartbeat": iso(),
            "token": "someone-else"}
    info.update(fields)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps(info))
    return path


def dead_pid() -> int:
    """The id of a process that has exited and been reaped (the kernel does not reuse it at once)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_acquire_writes_pid_host_started_heartbeat_and_release_removes(tmp_path):
    assert holder_alive(tmp_path) is None
    with RunLock(tmp_path) as held:
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["started"] == info["heartbeat"] and info["token"] == held.token
        assert holder_alive(tmp_path) is True
    assert not (tmp_path / LOCK_NAME).exists()
    assert holder_alive(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # no temporary files left behind


def test_second_acquisition_in_the_same_process_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_NAME).exists()   # the refused attempt did not remove the holder's lock


def test_lock_held_by_another_live_process_is_refused_with_one_line(tmp_path):
    # The parent process (pytest's launcher) is alive; no pid_start recorded, so the pid alone decides.
    write_lock(tmp_path, pid=os.getppid(), started="2026-01-02T03:04:05+00:00")
    with pytest.raises(RunLockedError) as err:
        RunLock(tmp_path).acquire()
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and f"pid {os.getppid()}@{socket.gethostname()}" in message
    assert "2026-01-02T03:04:05" in message and "wait" in message
    assert f"delete {tmp_path / LOCK_NAME}" in message
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == "someone-else"


def test_lock_held_by_a_live_subprocess_is_refused_until_it_exits(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from ssl_bench.run.lock import RunLock
        with RunLock({str(tmp_path)!r}, interval=0.1):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert holder_alive(tmp_path) is True
        with pytest.raises(RunLockedError, match=f"pid {child.pid}@"):
            RunLock(tmp_path).acquire()
    finally:
        child.communicate("\n", timeout=60)
    assert child.returncode == 0
    assert holder_alive(tmp_path) is None
    with RunLock(tmp_path):
        assert read_lock(tmp_path)["pid"] == os.getpid()


def test_lock_of_a_killed_subprocess_is_not_alive_and_is_taken_over(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from ssl_bench.run.lock import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        os._exit(0)   # dies holding the lock, as a process killed by the OOM killer would
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)
    (tmp_path / f".{LOCK_NAME}.0123.tmp").write_text("{")   # as if killed in the middle of a heartbeat
    held = read_lock(tmp_path)
    assert held["pid"] != os.getpid()
    assert holder_alive(tmp_path) is False
    with RunLock(tmp_path) as lock:
        info = read_lock(tmp_path)
        assert info["pid"] == os.getpid() and info["token"] == lock.token
        assert holder_alive(tmp_path) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_dead_pid_on_this_host_is_not_alive(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    assert holder_alive(tmp_path) is False


def test_reused_pid_with_another_start_time_is_not_alive(tmp_path):
    start = lock_module._process_start(os.getppid())
    if start is None:
        pytest.skip("no /proc/<pid>/stat here: start times cannot be compared")
    write_lock(tmp_path, pid=os.getppid(), pid_start=start)
    assert holder_alive(tmp_path) is True
    write_lock(tmp_path, pid=os.getppid(), pid_start=start + 1)   # same pid, another process
    assert holder_alive(tmp_path) is False


def test_lock_from_before_a_reboot_is_not_alive(tmp_path):
    if lock_module._boot_id() is None:
        pytest.skip("no boot id here")
    write_lock(tmp_path, pid=os.getppid(), boot_id="another-boot")
    assert holder_alive(tmp_path) is False


def test_process_start_reads_field_22_of_proc_stat():
    stat_path = Path(f"/proc/{os.getpid()}/stat")
    if not stat_path.exists():
        pytest.skip("no /proc here")
    # A command name with spaces and parentheses must not shift the fields (field 2 is '(comm)').
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    assert lock_module._process_start(os.getpid()) == int(fields[19])
    assert lock_module._process_start(dead_pid()) is None


def test_heartbeat_advances_while_held(tmp_path):
    with RunLock(tmp_path, interval=0.05) as held:
        held.ensure_held()
        first = read_lock(tmp_path)["heartbeat"]
        deadline = time.monotonic() + 20
        while read_lock(tmp_path)["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        later = read_lock(tmp_path)
        assert later["heartbeat"] > first and later["started"] == first
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_is_removed_when_the_body_raises(tmp_path):
    with pytest.raises(KeyError):
        with RunLock(tmp_path, interval=0.05) as held:
            raise KeyError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    assert held._thread is None   # the heartbeat thread was stopped and joined


def test_foreign_host_is_alive_while_its_heartbeat_is_young_and_stale_after(tmp_path):
    interval = lock_module.HEARTBEAT_INTERVAL_S
    assert STALE_AFTER_S == stale_after(interval) > 3 * interval
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(10))
    assert holder_alive(tmp_path) is True
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(STALE_AFTER_S + 5))
    assert holder_alive(tmp_path) is False
    # The holder's own interval sets the limit: a 1 s heartbeat missed for 40 s is stale...
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(40), interval=1.0)
    assert holder_alive(tmp_path) is False
    # ...and a 60 s one is not, yet.
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(150), interval=60.0)
    assert holder_alive(tmp_path) is True
    # A damaged interval falls back to the default limit instead of failing.
    for bad in ("soon", -1, None, True):
        write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(STALE_AFTER_S - 10), interval=bad)
        assert holder_alive(tmp_path) is True, bad
        write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(STALE_AFTER_S + 10), interval=bad)
        assert holder_alive(tmp_path) is False, bad


def test_foreign_host_ages_with_the_clock(tmp_path, monkeypatch):
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso())
    assert holder_alive(tmp_path) is True
    real_time = time.time
    monkeypatch.setattr(lock_module.time, "time", lambda: real_time() + STALE_AFTER_S + 1)
    assert holder_alive(tmp_path) is False


def test_stale_foreign_holder_is_taken_over_and_a_live_one_refuses(tmp_path):
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(5))
    with pytest.raises(RunLockedError, match="pid 1@elsewhere.example"):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, host="elsewhere.example", pid=1, heartbeat=iso(STALE_AFTER_S + 5))
    with RunLock(tmp_path):
        assert read_lock(tmp_path)["host"] == socket.gethostname()


# The other fields of a live lock on this host: only the pid is wrong (0 and -1 would signal whole groups).
VALID = (f'"host": "{socket.gethostname()}", "started": "{iso()}", '
         f'"heartbeat": "2999-01-01T00:00:00+00:00"').encode()


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"pid": "x"}',
                                     b'{"pid": 0, ' + VALID + b'}', b'{"pid": -1, ' + VALID + b'}',
                                     b'{"pid": 1, "host": "h", "started": "nope", "heartbeat": "nope"}'])
def test_corrupt_lock_file_is_not_alive_and_is_taken_over(tmp_path, content):
    path = tmp_path / LOCK_NAME
    path.write_bytes(content)
    old = time.time() - 60   # not a file caught between its creation and its first write
    os.utime(path, (old, old))
    assert read_lock(tmp_path) == {}
    assert holder_alive(tmp_path) is False
    with RunLock(tmp_path):
        assert read_lock(tmp_path)["pid"] == os.getpid()


def test_lock_being_written_is_read_once_complete(tmp_path):
    """A reader that meets the empty file of a lock being created waits for its content, not 'corrupt'."""
    path = tmp_path / LOCK_NAME
    path.write_bytes(b"")   # just created, content not yet written (fresh mtime)
    script = textwrap.dedent(f"""
        import json, os, socket, time
        from datetime import datetime, timezone
        time.sleep(0.3)
        now = datetime.now(timezone.utc).isoformat()
        info = {{"pid": os.getppid(), "host": socket.gethostname(), "started": now, "heartbeat": now}}
        open({str(path)!r}, "w").write(json.dumps(info))
    """)
    writer = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert holder_alive(tmp_path) is True
    finally:
        writer.wait(timeout=60)


def test_heartbeat_thread_stops_when_another_process_took_over(tmp_path):
    held = RunLock(tmp_path, interval=0.05).acquire()
    write_lock(tmp_path, pid=os.getppid(), token="the-new-holder")
    deadline = time.monotonic() + 20
    while not held.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held.lost
    with pytest.raises(RunLockedError, match=f"taken over by pid {os.getppid()}@"):
        held.ensure_held()
    held.release()   # must not remove the new holder's lock
    assert read_lock(tmp_path)["token"] == "the-new-holder"


def test_missing_run_dir_and_bad_interval_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        RunLock(tmp_path / "absent").acquire()
    with pytest.raises(ValueError, match="interval must be a positive"):
        RunLock(tmp_path, interval=0)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_lock_file_mode_follows_the_umask_also_after_a_heartbeat(tmp_path, umask):
    old = os.umask(umask)
    try:
        with RunLock(tmp_path, interval=0.05):
            path = tmp_path / LOCK_NAME
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
            first = read_lock(tmp_path)["heartbeat"]
            deadline = time.monotonic() + 20
            while read_lock(tmp_path)["heartbeat"] == first and time.monotonic() < deadline:
                time.sleep(0.02)
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask   # the rewritten file too
    finally:
        os.umask(old)


def test_permission_to_signal_denied_still_means_alive(tmp_path, monkeypatch):
    def no_permission(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    write_lock(tmp_path, pid=12345)
    monkeypatch.setattr(lock_module.os, "kill", no_permission)
    monkeypatch.setattr(lock_module, "_process_start", lambda pid: None)   # another user's /proc may hide it
    assert holder_alive(tmp_path) is True


def test_of_processes_taking_over_a_dead_lock_at_once_exactly_one_wins(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    go = tmp_path.parent / f"{tmp_path.name}.go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from ssl_bench.run.lock import RunLock, RunLockedError
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        lock = RunLock({str(tmp_path)!r})
        try:
            lock.acquire()
            print("won", flush=True)
        except RunLockedError:
            print("refused", flush=True)
        sys.stdin.readline()   # hold until every contender has tried
        lock.release()
    """)
    children = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        go.touch()
        outcomes = sorted(child.stdout.readline().strip() for child in children)
    finally:
        for child in children:
            child.communicate("\n", timeout=60)
    assert outcomes == ["refused", "refused", "refused", "won"]
    assert holder_alive(tmp_path) is None   # the winner released it on exit


def test_a_late_taker_over_does_not_remove_the_lock_another_process_just_took(tmp_path):
    """B judged the dead holder's lock, then A took it over; B's removal must spare A's new lock."""
    write_lock(tmp_path, pid=dead_pid())
    judged_dead_by_b = read_lock(tmp_path)
    with RunLock(tmp_path) as a:
        b = RunLock(tmp_path)
        b._remove_dead(judged_dead_by_b)
        assert read_lock(tmp_path)["token"] == a.token
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]   # nothing left aside
        with pytest.raises(RunLockedError):
            b.acquire()
