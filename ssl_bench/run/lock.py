"""A run lock: one process trains a run directory at a time, and a dead holder can be told from a live one.

``with RunLock(run_dir): ...`` creates ``run_dir/lock.json`` = {pid, host, started, heartbeat, ...}
exclusively (``O_CREAT | O_EXCL``: of two processes only one creates it), refreshes ``heartbeat`` from a
daemon thread every ``interval`` seconds and removes the file on exit, also on exceptions. A lock whose
holder is gone (killed, out of memory, machine rebooted) is taken over by the next process.

``holder_alive(run_dir)`` says whether the holder still runs: on the same host by its process id (and the
process's start time, so a reused id is not mistaken for the holder), on another host by the age of the
heartbeat, since a process on another machine cannot be asked directly. A hand-rolled lock rather than
``fcntl.flock`` or a library (filelock): those say nothing about a holder on another host of a shared
filesystem, and whether a run is alive is what the leaderboard and sweep need to report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from ssl_bench.atomic import atomic_write_bytes, read_regular_file
from ssl_bench.errors import UserError

LOCK_NAME = "lock.json"
HEARTBEAT_INTERVAL_S = 30.0
# Slack for a slow shared filesystem, a busy machine and clock differences between hosts.
STALE_MARGIN_S = 30.0
# A live holder misses at most a couple of heartbeats; three missed ones and the margin mean it is gone.
STALE_AFTER_S = 3 * HEARTBEAT_INTERVAL_S + STALE_MARGIN_S
# A lock file is written right after it is created: younger than this and unreadable means "being written".
_CREATING_GRACE_S = 2.0
_REQUIRED = {"pid": int, "host": str, "started": str, "heartbeat": str}

log = logging.getLogger(__name__)


class RunLockedError(UserError):
    """Another live process holds the run directory's lock."""


def stale_after(interval: float) -> float:
    """Seconds without a heartbeat after which a holder refreshing every ``interval`` seconds is gone."""
    return 3 * interval + STALE_MARGIN_S


def read_lock(run_dir: Path) -> dict[str, Any] | None:
    """The lock file's contents; None when there is none, ``{}`` when it is corrupt (unreadable JSON)."""
    path = Path(run_dir) / LOCK_NAME
    for _attempt in range(20):
        try:
            text = read_regular_file(path).decode(errors="replace")   # a FIFO there never blocks a reader
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:   # not a regular file (a FIFO, a link, a device) or too large: corrupt
            return {}
        info = _parse(text)
        if info is not None:
            return info
        if age > _CREATING_GRACE_S:   # not a file caught between its creation and its write: corrupt
            return {}
        time.sleep(0.1)
    return {}


def holder_alive(run_dir: Path) -> bool | None:
    """Whether the process holding ``run_dir``'s lock is still running; None when there is no lock file.

    Same host: its process exists (``os.kill(pid, 0)``; no permission to signal it still means it exists)
    and, where /proc tells, started when the lock says (a reused process id is not the holder) in this
    boot. Another host: its heartbeat is younger than ``stale_after`` of its interval (``STALE_AFTER_S``
    by default). A corrupt lock file counts as not alive.
    """
    info = read_lock(run_dir)
    if info is None:
        return None
    return _alive(info)


class RunLock:
    """Exclusive hold of a run directory for one training process: ``with RunLock(run_dir): train()``.

    Raises RunLockedError when another live process holds it; takes over the lock of a dead holder.
    """

    def __init__(self, run_dir: Path, interval: float = HEARTBEAT_INTERVAL_S) -> None:
        if not interval > 0:
            raise UserError(f"RunLock interval must be a positive number of seconds, got {interval!r}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.interval = float(interval)
        self.token = uuid.uuid4().hex   # tells this holder's file from a later holder's with the same pid
        self.lost = False   # set when another process took the lock over (this one looked dead to it)
        self._info: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RunLock:
        """Create the lock file, or take over a dead holder's; raise RunLockedError if a live one holds it."""
        if self._info is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"cannot lock {self.run_dir}: no such directory")
        now = _now()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now, "heartbeat": now,
                "interval": self.interval, "token": self.token, "pid_start": _process_start(os.getpid()),
                "boot_id": _boot_id()}
        for _ in range(10):   # each round either creates the file, refuses, or removes a dead holder's
            if _create_exclusive(self.path, _dump(info)):
                break
            held = read_lock(self.run_dir)
            if held is None:
                continue   # released between our attempt and our look: try again
            if _alive(held):
                raise RunLockedError(_locked_message(self.run_dir, held))
            self._remove_dead(held)
        else:
            raise RunLockedError(f"{self.run_dir}: could not take its lock ({self.path}) after repeated "
                                 f"attempts; another process keeps taking it. Check for other runs of it")
        self._info = info
        self._stop.clear()
        self.lost = False
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.run_dir.name}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file (if it is still this holder's)."""
        if self._info is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        held = read_lock(self.run_dir)
        if held and held.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self._info = None

    def ensure_held(self) -> None:
        """Raise RunLockedError if another process has taken the lock over; call it before writing the run.

        That happens only when this process looked dead to the other one (its heartbeat stopped for longer
        than the stale limit, e.g. a suspended process on another host): it must then stop writing.
        """
        if self._info is None:
            raise RuntimeError(f"{self.path} is not held: acquire the RunLock first")
        if self.lost:
            held = read_lock(self.run_dir)
            by = _holder(held) if held else "another process"
            raise RunLockedError(f"{self.run_dir} was taken over by {by} while this process "
                                 f"(pid {os.getpid()}) was not heard from; stopping so that two processes do "
                                 f"not write it. Resume it later with --resume once that process is done")

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    def _beat(self) -> None:
        """Heartbeat thread: rewrite the lock file with a fresh ``heartbeat`` every ``interval`` seconds."""
        assert self._info is not None
        while not self._stop.wait(self.interval):
            held = read_lock(self.run_dir)
            if not held or held.get("token") != self.token:
                # Someone judged this process dead and took over (e.g. a heartbeat gap longer than the
                # stale limit on another host); rewriting would clobber their lock.
                self.lost = True
                log.warning("run lock %s was taken over by %s; this process no longer holds it", self.path,
                            _holder(held) if held else "a corrupt file")
                return
            self._info["heartbeat"] = _now()
            try:
                atomic_write_bytes(self.path, _dump(self._info))
            except OSError as e:   # a full disk must not kill training; the next beat tries again
                log.warning("could not refresh the heartbeat of %s: %s", self.path, e)

    def _remove_dead(self, held: dict[str, Any]) -> None:
        """Remove a dead holder's lock file, unless another process replaced it meanwhile."""
        # Rename first (atomic): of several processes taking over at once, each moves away a file, and
        # only one of them moved the dead holder's; the others put back what they moved (a live lock).
        aside = self.path.with_name(f".{LOCK_NAME}.{self.token}.dead")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = _parse(aside.read_bytes().decode(errors="replace"))
        # The same file as judged dead (a live holder would have beaten since), or still the corrupt one.
        if moved == held or (not held and moved is None):
            log.warning("taking over the lock of %s from %s, which is no longer running", self.run_dir,
                        _holder(held) if held else "a corrupt lock file")
            aside.unlink()
            for leftover in self.run_dir.glob(f".{LOCK_NAME}.*.tmp"):   # a heartbeat write it died in
                leftover.unlink(missing_ok=True)
            return
        try:
            os.link(aside, self.path)   # put the live lock back, unless a third process already locked
        except FileExistsError:
            pass
        aside.unlink()


# -- helpers -------------------------------------------------------------------------------------------------


def _alive(info: dict[str, Any]) -> bool:
    if not info:
        return False
    if info.get("host") == socket.gethostname():
        if info.get("boot_id") and _boot_id() and info["boot_id"] != _boot_id():
            return False   # the machine rebooted since the lock was taken
        pid = info["pid"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass   # exists, owned by another user
        except (OverflowError, ValueError):
            return False
        start = _process_start(pid)
        return info.get("pid_start") is None or start is None or start == info["pid_start"]
    interval = info.get("interval")
    if not (type(interval) in (int, float) and 0 < interval < math.inf):   # absent or damaged: the default
        interval = HEARTBEAT_INTERVAL_S
    return time.time() - _epoch(info["heartbeat"]) < stale_after(interval)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        info = json.loads(text)
    except ValueError:
        return None
    if not isinstance(info, dict) or any(not isinstance(info.get(k), t) for k, t in _REQUIRED.items()):
        return None
    if isinstance(info["pid"], bool) or info["pid"] <= 0:   # os.kill(0 or -1, 0) would signal a whole group
        return None
    try:
        _epoch(info["heartbeat"]), _epoch(info["started"])
    except ValueError:
        return None
    return info


def _dump(info: dict[str, Any]) -> bytes:
    return (json.dumps(info, indent=2) + "\n").encode()


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` if it does not exist; False if it does. Mode 0o666 minus the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)   # one small write: readers see the whole file (or, for an instant, an empty one)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink()
        raise
    os.close(fd)
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None where that is unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces and parentheses, so split after it.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _holder(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid')}@{info.get('host')} (since {info.get('started')})"


def _locked_message(run_dir: Path, info: dict[str, Any]) -> str:
    age = time.time() - _epoch(info["heartbeat"])
    return (f"{run_dir} is being trained by {_holder(info)}, last heartbeat {age:.0f} s ago; wait for that "
            f"run to finish or stop it, then resume again (a holder that dies is detected and taken over; if "
            f"you are sure none runs, delete {run_dir / LOCK_NAME})")
