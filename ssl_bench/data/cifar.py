"""CIFAR-10 / CIFAR-100 from the official "python version" files, in torchvision's folder layout.

Layout under a data root (the same folder a torchvision user passes as ``root=``)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    <root>/cifar-100-python/train, test

Each file is a Python pickle of a dict with bytes keys: ``b"data"`` a uint8 (N, 3072) array whose rows are
one image flattened channel-first (1024 red, 1024 green, 1024 blue values, each plane row-major), and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100, the 100-class labels used by the benchmark) a list
of N ints. Reference: https://www.cs.toronto.edu/~kriz/cifar.html. Training images are concatenated in file
order, which is the order torchvision's ``CIFAR10`` / ``CIFAR100`` yield them, so indices (and label splits)
agree with torchvision. The unpickler admits only numpy arrays, ints and bytes: a tampered file cannot run
code.

Download (on by default; ``download=False``, the CLI's ``--no-download``, forbids it): when a file is missing,
the official tarball is fetched into the data root with urllib, its published MD5 checked before anything is
extracted, atomically (:mod:`ssl_bench.data.download`). The URL can be pointed at a mirror (or, in tests, a
``file://`` URL) with the environment variables ``SSL_BENCH_CIFAR10_URL`` / ``SSL_BENCH_CIFAR100_URL``; the
archive must still have the official MD5.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetFormatError, DatasetNotFoundError, ImageDataset
from .download import NETWORK_ERRORS, download_and_extract, has_archive


@dataclass(frozen=True)
class CifarSpec:
    """Where one official CIFAR data set lives (folder, file names), how to read it, and where to fetch it."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    url: str
    md5: str  # MD5 of the tarball at `url`

    @property
    def archive(self) -> str:
        """File name of the tarball (the last part of the official URL)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def url_env(self) -> str:
        """Environment variable that overrides the download URL (a mirror, or a file:// URL in tests)."""
        return f"SSL_BENCH_{self.name.upper()}_URL"


# URLs and tarball MD5s as published on https://www.cs.toronto.edu/~kriz/cifar.html; the same MD5s are in
# torchvision's datasets/cifar.py (`tgz_md5`) and in many independent download scripts.
CIFAR_SPECS = {
    "cifar10": CifarSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

# What an official CIFAR pickle may reference: the numpy array and dtype constructors (under numpy 1's and
# numpy 2's module names) and the codec Python 3 uses for bytes in protocol-2 pickles. Anything else is
# refused, so a tampered file cannot run code when it is unpickled.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: an official CIFAR file only "
                                         "contains numpy arrays, ints and bytes")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 renamed the module; same functions
        return super().find_class(module, name)


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file -> (uint8 (N, 32, 32, 3) HWC images, int64 (N,) labels)."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise DatasetFormatError(
            f"{path}: not a readable CIFAR 'python version' pickle ({type(e).__name__}: {e}). The file may "
            f"be truncated or corrupted: delete {path.parent} and run again to download it afresh.") from e
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DatasetFormatError(f"{path}: expected a dict with keys b'data' and {label_key!r}, found {keys}")
    data = np.asarray(entry[b"data"])
    labels = np.asarray(entry[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072) "
                                 "rows of channel-first pixels")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(f"{path}: {label_key!r} has shape {labels.shape}, expected {len(data)} "
                                 "integer labels (one per row of data)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> HWC images
    return np.ascontiguousarray(images), labels.astype(np.int64)


def missing_message(spec: CifarSpec, root: Path, missing: list[str]) -> str:
    """What is missing where: one sentence naming the folder and the absent files."""
    folder = root / spec.folder
    if len(missing) == len(spec.train_files + spec.test_files):
        state = f"{folder} does not exist" if not folder.exists() else f"{folder} has none of the files"
    else:
        state = f"{folder} is incomplete (missing {', '.join(missing)}; an interrupted copy or extraction?)"
    expected = ", ".join(spec.train_files + spec.test_files)
    return f"{spec.name}: official files not found: {state}; expected {expected} there."


def where_advice(spec: CifarSpec, root: Path) -> str:
    """The ways to provide the files other than downloading them now (shared by every missing-files error)."""
    return (f"point --data-root DIR or SSL_BENCH_DATA=DIR at the folder that holds {spec.folder}/ (a "
            f"torchvision `root` has the same layout), or put {spec.archive} (MD5 {spec.md5}, from "
            f"{spec.url}) into {root}")


def load_cifar(
    name: str,
    root: str | Path,
    download: bool = True,
    url: str | None = None,
    md5: str | None = None,
) -> ImageDataset:
    """Load ``cifar10`` or ``cifar100`` from ``root`` (torchvision layout), downloading it first when missing.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: the data root that holds ``cifar-10-batches-py/`` / ``cifar-100-python/``.
        download: fetch and extract the official tarball into ``root`` when any file is missing. False:
            report the missing files. Either way an archive with the right MD5 already in ``root`` is
            extracted, with no network.
        url: archive URL; default ``$SSL_BENCH_<NAME>_URL`` or the official one. ``file://`` URLs work.
        md5: expected MD5 of the archive; default the published one. Only tests should need to change it.

    Raises:
        DatasetNotFoundError: files missing and ``download`` false, the download failed (offline, server
            error) or the root is not writable; one message naming the folder and every fix.
        ChecksumError: the downloaded archive does not have the expected MD5 (deleted, nothing extracted).
        DatasetFormatError: a file is present but is not a valid official CIFAR pickle.
    """
    if name not in CIFAR_SPECS:
        raise ValueError(f"unknown official data set {name!r}; expected one of {sorted(CIFAR_SPECS)}")
    spec = CIFAR_SPECS[name]
    root = Path(root).expanduser()
    folder = root / spec.folder
    files = spec.train_files + spec.test_files
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and root.exists() and not root.is_dir():
        raise DatasetNotFoundError(
            f"{spec.name}: the data root {root} is a file, expected a folder (that holds {spec.folder}/ or "
            "receives the download); fix --data-root / SSL_BENCH_DATA.")
    if missing:
        expected_md5 = md5 or spec.md5
        # --no-download forbids the network, not extracting an archive that is already in the root
        if not download and not has_archive(root / spec.archive, expected_md5):
            raise DatasetNotFoundError(
                f"{missing_message(spec, root, missing)} Fix: allow the download (remove --no-download; in "
                f"Python load_dataset(..., download=True)) to fetch it into {root}, or "
                f"{where_advice(spec, root)}.")
        src = url or os.environ.get(spec.url_env) or spec.url
        try:
            download_and_extract(src, expected_md5, root, spec.archive)
        except NETWORK_ERRORS as e:
            reason = getattr(e, "reason", None) or e
            raise DatasetNotFoundError(
                f"{missing_message(spec, root, missing)} Downloading {src} failed ({reason}): offline or "
                f"unreachable? Fix: retry when online, or {where_advice(spec, root)}.") from e
        except OSError as e:  # not the network: the data root itself (read-only, full disk, not a folder)
            raise DatasetNotFoundError(
                f"{missing_message(spec, root, missing)} Cannot write the download into {root} "
                f"({e.strerror or e}). Fix: free space or permissions there, or "
                f"{where_advice(spec, root)}.") from e
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DatasetFormatError(
                f"{spec.name}: extracted {spec.archive} into {root}, but {folder} still lacks "
                f"{', '.join(missing)}; the archive is not the official one.")

    parts = {split: [read_batch(folder / f, spec.label_key) for f in fs]
             for split, fs in (("train", spec.train_files), ("test", spec.test_files))}
    x_train = np.concatenate([x for x, _ in parts["train"]])
    y_train = np.concatenate([y for _, y in parts["train"]])
    x_test = np.concatenate([x for x, _ in parts["test"]])
    y_test = np.concatenate([y for _, y in parts["test"]])
    return ImageDataset(
        name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        num_classes=spec.num_classes, kind="full", family=spec.name, source=str(folder),
        # natural photographs: the reference mirrors CIFAR (google-research/fixmatch, libml/augment.py,
        # DEFAULT_AUGMENT: cifar10 / cifar100 -> Primitives.ms(4), mirror + shift)
        hflip=True,
    )
