"""Fetch an archive with urllib, verify its MD5 before anything is extracted, extract it safely.

Only the standard library: ``urllib`` also serves ``file://`` URLs, which is how the tests exercise this code offline.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

from .base import ChecksumError, DatasetFormatError

CHUNK = 1 << 20


def md5_of(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, checking the MD5 while streaming; return ``dest``.

    The bytes go to ``dest.part`` first and are renamed only when the MD5 matches, so ``dest`` is never a truncated
    or corrupted file. On a mismatch the partial file is deleted and :class:`ChecksumError` is raised.
    Network failures surface as ``urllib.error.URLError`` / ``OSError`` (the caller adds the offline advice).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.md5(usedforsecurity=False)
    print(f"ssl-bench: downloading {url} -> {dest}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            for block in iter(lambda: response.read(CHUNK), b""):
                h.update(block)
                out.write(block)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    got = h.hexdigest()
    if got != md5:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url}: MD5 is {got}, expected the published {md5}. The download is corrupted or not the official "
            "archive; it was deleted and nothing was extracted. Retry, or download it by hand, check "
            f"`md5sum` and place it at {dest}.")
    os.replace(part, dest)
    return dest


def _checked_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Members of ``tar`` that are plain files or folders with relative paths staying inside the target.

    Anything else (absolute paths, ``..``, links, devices) makes the whole archive refused: the official CIFAR
    archives contain none of them, so their presence means a wrong or tampered file.
    """
    members = []
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or m.name.startswith(("/", "\\")):
            raise DatasetFormatError(f"{archive}: refusing to extract unsafe path {m.name!r}")
        if not (m.isfile() or m.isdir()):
            raise DatasetFormatError(
                f"{archive}: refusing to extract {m.name!r}: only plain files and folders are allowed, not links "
                "or special files")
        members.append(m)
    return members


def extract_tar(archive: Path, dest_root: Path) -> list[Path]:
    """Extract a (gzipped) tar into ``dest_root`` safely; return the extracted files' final paths.

    Members are checked first (:func:`_checked_members`), extracted into a temporary folder inside ``dest_root``,
    then each file is moved into place with ``os.replace``: an interrupted extraction never leaves a half-written
    file at its final path, and files already there (a half-present folder) are replaced.
    """
    dest_root.mkdir(parents=True, exist_ok=True)
    placed = []
    with tarfile.open(archive, "r:*") as tar:
        members = _checked_members(tar, archive)
        with tempfile.TemporaryDirectory(dir=dest_root, prefix=".extract-") as tmp:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: the stdlib's own safety filter too
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; members were checked above
                tar.extractall(tmp, members=members)
            for m in members:
                if m.isfile():
                    final = dest_root / m.name
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(Path(tmp) / m.name, final)
                    placed.append(final)
    return placed


def download_and_extract(url: str, md5: str, dest_root: Path, filename: str) -> list[Path]:
    """Make sure ``dest_root/filename`` is the archive with ``md5`` (reuse it if it already is), then extract it.

    The archive is kept beside the data (as torchvision does), so a later forced re-extraction needs no network.
    """
    archive = dest_root / filename
    if archive.exists() and md5_of(archive) == md5:
        print(f"ssl-bench: using the already downloaded {archive} (MD5 ok)", file=sys.stderr)
    else:
        fetch(url, archive, md5)
    return extract_tar(archive, dest_root)
