"""The one atomic file write of ssl-bench: records, configs, metrics, checkpoints, locks and figures all use it."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a killed writer never leaves half a file.

    The temporary file is created with mode 0666 filtered by the process umask, like any file a program
    creates (``tempfile.mkstemp`` would make it 0600, unreadable to colleagues sharing a results folder).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # another writer drew the same name: draw again
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# A results folder's small files (records, configs, locks) are read through this: a FIFO there would block a
# plain read forever, a link to /dev/zero would fill the memory, and a link out of the folder reads another's file.
SMALL_FILE_LIMIT = 4 * 2**20


def read_regular_file(path: Path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of ``path`` when it is a regular file (not a symlink, FIFO or device) of at most ``limit`` bytes.

    Raises ``FileNotFoundError`` when it is missing and ``OSError`` (its ``strerror`` says why) otherwise; never
    blocks (``O_NONBLOCK``) and never follows a symlink (``O_NOFOLLOW``).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", -1) or os.path.islink(path):
            raise OSError(exc.errno, "is a symbolic link, not a regular file", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "is not a regular file (a FIFO, device or folder)", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"is {info.st_size} bytes, over the {limit}-byte limit", str(path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"is over the {limit}-byte limit", str(path))
    return data
