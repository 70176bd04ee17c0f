"""Fetch an archive with urllib, verify its MD5 before anything is extracted, extract it safely.

The standard library's ``urllib`` also serves ``file://`` URLs, which is how the tests exercise this code
offline; ``tqdm`` (a dependency of ssl-bench) draws the progress bar.

Atomicity: bytes go to a uniquely named hidden temporary file in the archive's own folder, the MD5 is checked
on the bytes as they stream, and only an archive with the expected MD5 is renamed to its final name
(``os.replace``, atomic within one file system). A failed, corrupted or interrupted download is deleted and
never has the archive's name, so it can never be extracted or reused. Extraction goes through a temporary
folder too.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ssl_bench.errors import UserError

from .base import ChecksumError, DatasetFormatError, file_kind

CHUNK = 1 << 20
# What an unreachable or failing server raises through urllib: unresolvable names, HTTP errors and missing
# file:// paths (URLError), refused or reset connections (ConnectionError), timeouts (TimeoutError),
# truncated HTTP bodies (http.client.IncompleteRead, not an OSError). Other OSErrors (disk full, no
# permission) are not network problems and are reported as what they are.
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)
DOWNLOAD_SCHEMES = ("https", "http", "ftp", "file")   # what urllib.request's default handlers open


def md5_of(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def has_archive(path: Path, md5: str) -> bool:
    """Whether ``path`` is a file with exactly this MD5 (a complete, verified archive)."""
    return path.is_file() and md5_of(path) == md5


def _content_length(response: object) -> int | None:
    length = getattr(response, "headers", {}).get("Content-Length")
    return int(length) if length and str(length).isdigit() else None


def fetch(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, checking the MD5 while streaming; return ``dest``.

    ``dest`` appears only once the whole download has the expected MD5 (module docstring: atomicity). On a
    mismatch the temporary file is deleted and :class:`ChecksumError` is raised; network failures propagate as
    one of :data:`NETWORK_ERRORS` (the caller adds the offline advice), also with the temporary file deleted.
    """
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    part = Path(tmp_name)
    h = hashlib.md5(usedforsecurity=False)
    print(f"ssl-bench: downloading {url} -> {dest}", file=sys.stderr)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            # disable=None: a bar on a terminal, silence in logs and batch jobs (tqdm's own rule)
            with tqdm(total=_content_length(response), unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None, file=sys.stderr) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    h.update(block)
                    out.write(block)
                    bar.update(len(block))
        got = h.hexdigest()
        if got != md5:
            raise ChecksumError(
                f"{url}: MD5 is {got}, expected the published {md5}. The download is corrupted or not the "
                "official archive; it was deleted and nothing was extracted. Retry, or download it by hand, "
                f"check `md5sum` and place it at {dest}.", got=got)
        os.replace(part, dest)
    except BaseException:  # includes KeyboardInterrupt: a partial download never stays behind
        part.unlink(missing_ok=True)
        _remove_empty(created)   # nor the folders made to hold it: a failed download creates nothing
        raise
    return dest


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are still empty; anything else stays as it is."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return   # not empty (or not ours to remove): neither are its parents


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
                f"{archive}: refusing to extract {m.name!r}: only plain files and folders are allowed, not "
                "links or special files")
        members.append(m)
    return members


def extract_tar(archive: Path, dest_root: Path) -> list[Path]:
    """Extract a (gzipped) tar into ``dest_root`` safely; return the extracted files' final paths.

    Members are checked first (:func:`_checked_members`), extracted into a temporary folder inside
    ``dest_root``, then each file is moved into place with ``os.replace``: an interrupted extraction never
    leaves a half-written file at its final path, and files already there (a half-present folder) are
    replaced.
    """
    dest_root.mkdir(parents=True, exist_ok=True)
    placed = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, archive)
            with tempfile.TemporaryDirectory(dir=dest_root, prefix=".extract-") as tmp:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: the stdlib's safety filter
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - older Pythons; members were checked above
                    tar.extractall(tmp, members=members)
                for m in members:
                    if m.isfile():
                        final = dest_root / m.name
                        final.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(Path(tmp) / m.name, final)
                        placed.append(final)
    except (tarfile.TarError, EOFError) as e:
        raise DatasetFormatError(
            f"{archive}: not a readable tar archive ({type(e).__name__}: {e}); delete it and download "
            "again.") from e
    return placed


def download_and_extract(url: str, md5: str, dest_root: Path, filename: str) -> list[Path]:
    """Make sure ``dest_root/filename`` is the archive with ``md5`` (reused if it already is); extract it.

    The archive is kept beside the data (as torchvision does), so a later forced re-extraction needs no
    network, and an archive downloaded by hand into the data root is used without any network access.
    """
    archive = dest_root / filename
    if has_archive(archive, md5):
        print(f"ssl-bench: using the already downloaded {archive} (MD5 ok)", file=sys.stderr)
    else:
        fetch(url, archive, md5)
    return extract_tar(archive, dest_root)


def ensure_file(url: str, md5: str, dest: Path) -> Path:
    """Make sure ``dest`` is the file with ``md5``: reused if it already is, else downloaded (:func:`fetch`).

    For data published as plain files rather than archives (SVHN's ``.mat`` files): the same MD5 check,
    progress bar and atomic rename, nothing to extract.
    """
    if has_archive(dest, md5):
        print(f"ssl-bench: using the already downloaded {dest} (MD5 ok)", file=sys.stderr)
        return dest
    return fetch(url, dest, md5)


def check_url(url: str, origin: str, filename: str, md5: str) -> None:
    """Refuse, before anything is created, a URL that urllib cannot fetch or that names no regular file.

    ``origin`` says where the URL came from (``SSL_BENCH_CIFAR10_URL='...'`` or ``url='...'``), for the message.
    A ``file://`` URL must name a regular file when it exists (``/dev/zero`` would stream forever, a FIFO block);
    a missing one is reported by the download itself, as any unreachable URL.

    Raises:
        UserError: naming ``origin``, what is wrong, and the forms that work.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        problem = None
        if parts.scheme not in DOWNLOAD_SCHEMES:
            problem = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        elif parts.scheme != "file" and not parts.hostname:
            problem = "no host"
        elif parts.scheme == "file":
            path = Path(urllib.request.url2pathname(parts.path))
            if path.exists() and not path.is_file():
                problem = f"{path} is {file_kind(path)}, not a regular file"
    except ValueError as e:   # urlsplit: an invalid IPv6 literal, a bad port
        problem = str(e)
    if problem is not None:
        raise UserError(f"{origin}: not a URL ssl-bench can download {filename} from ({problem}); expected an "
                        f"{' / '.join(s + '://' for s in DOWNLOAD_SCHEMES)} URL of a copy with MD5 {md5}, e.g. "
                        f"file:///path/to/{filename}")


def obtain_official(name: str, missing: str, remote: RemoteFile, dest: Path, extract: bool, advice: str,
                    url: str | None = None, md5: str | None = None) -> None:
    """Download one official file (``extract``: a tarball, extracted beside it) or raise one clear line.

    ``missing`` says what is absent where; ``advice`` the ways to provide the file by hand. The URL is ``url``
    (a caller's), else ``$remote.url_env`` (a mirror), else the official one; ``md5`` defaults to the published
    one. Network failures and an unwritable data root become :class:`~ssl_bench.data.base.DatasetNotFoundError`
    with both; a file without the expected MD5 is :class:`ChecksumError`. When the URL came from the environment
    variable, every line names it, its value and how to undo it; a malformed one is refused before anything is
    created.
    """
    from .base import DatasetNotFoundError  # local: base is imported by this module's callers anyway

    md5 = md5 or remote.md5
    env = None if url else remote.env_value()
    src = url or env or remote.url
    origin = f"{remote.url_env}={src!r}" if env else f"url={src!r}"
    try:
        check_url(src, origin, remote.filename, md5)
    except UserError as e:
        fix = (f"; fix: unset {remote.url_env} to download the official {remote.url}, or set it to such a URL"
               if env else "")
        raise UserError(f"{name}: {e}{fix}.") from None
    try:
        if extract:
            download_and_extract(src, md5, dest.parent, dest.name)
        else:
            ensure_file(src, md5, dest)
    except NETWORK_ERRORS as e:
        reason = getattr(e, "reason", None) or e
        fix = (f"unset {remote.url_env} to download the official {remote.url}, or point it at a reachable copy of "
               f"{remote.filename} with MD5 {md5}; or {advice}" if env else f"retry when online, or {advice}")
        raise DatasetNotFoundError(f"{name}: {missing} Downloading {origin if env else src} failed ({reason}): "
                                   f"offline or unreachable? Fix: {fix}.") from e
    except ChecksumError as e:
        if not env:
            raise
        # the variable first: retrying the same URL cannot help, so its fix is the first thing to read
        raise ChecksumError(f"{name}: {origin}: the file there has MD5 {e.got}, not the published {md5} of "
                            f"{remote.filename}. Fix: unset {remote.url_env} to download the official {remote.url}, "
                            f"or point it at a copy of {remote.filename} with MD5 {md5}. The download was deleted and "
                            "nothing was extracted.", got=e.got) from None
    except OSError as e:  # not the network: the data root itself (read-only, full disk, not a folder)
        raise DatasetNotFoundError(f"{name}: {missing} Cannot write the download into {dest.parent} "
                                   f"({e.strerror or e}). Fix: free space or permissions there, or {advice}.") from e


@dataclass(frozen=True)
class RemoteFile:
    """One officially published file: where it is, its published MD5, and the variable that points it elsewhere.

    ``url_env`` names an environment variable that overrides ``url`` (a mirror, or a ``file://`` URL in tests);
    the file must still have ``md5``.
    """

    url: str
    md5: str
    url_env: str

    @property
    def filename(self) -> str:
        """The file's name: the last part of the official URL."""
        return self.url.rsplit("/", 1)[-1]

    def env_value(self) -> str | None:
        """``$url_env`` when set and not empty (surrounding blanks removed), else ``None``."""
        return os.environ.get(self.url_env, "").strip() or None

    def source_url(self) -> str:
        """``$url_env`` when set and not empty, else the official URL."""
        return self.env_value() or self.url
