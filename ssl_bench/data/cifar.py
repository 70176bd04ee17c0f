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

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetFormatError, DatasetNotFoundError, ImageDataset, check_official_count, not_official
from .download import RemoteFile, has_archive, obtain_official


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
    # file name -> (number of images, sha256 of its labels as little-endian int64): what makes a folder in this
    # layout the official data set rather than a copy of another size or content (:func:`check_official`)
    official: dict[str, tuple[int, str]]

    @property
    def archive(self) -> str:
        """File name of the tarball (the last part of the official URL)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def url_env(self) -> str:
        """Environment variable that overrides the download URL (a mirror, or a file:// URL in tests)."""
        return f"SSL_BENCH_{self.name.upper()}_URL"

    @property
    def remote(self) -> RemoteFile:
        """The tarball as a :class:`~ssl_bench.data.download.RemoteFile` (URL, MD5, the variable overriding it)."""
        return RemoteFile(self.url, self.md5, self.url_env)

    def sizes(self) -> str:
        """The official sizes in words (``50000 training images in data_batch_1..5, 10000 test images in ...``)."""
        def count(files: tuple[str, ...], what: str) -> str:
            where = files[0] if len(files) == 1 else f"{files[0]}..{files[-1].rsplit('_', 1)[-1]}"
            return f"{sum(self.official[f][0] for f in files)} {what} images in {where}"
        return f"{count(self.train_files, 'training')}, {count(self.test_files, 'test')}"


def labels_sha256(labels: np.ndarray) -> str:
    """sha256 of labels as little-endian int64 bytes: the content fingerprint :data:`CifarSpec.official` keeps."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


# Sizes and label hashes of the official files. Sizes: https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10:
# five training batches of 10000 images and a test batch of 10000; CIFAR-100: 50000 training, 10000 test).
# Hashes: labels_sha256 of the label section of each official file, computed from the complete official label
# arrays in /work/shared/data/cifar_labels.npz (see its README; tests/test_data_safety.py recomputes them
# there). CIFAR-100: the fine labels, the ones the benchmark trains on.
CIFAR10_OFFICIAL = {
    "data_batch_1": (10000, "66145c918fed3a0358c4001da734fbc15cb584ddf34c823fa524e6b9c81542b7"),
    "data_batch_2": (10000, "1074c604720c88e1f4d8408e1995944e9bc65877af3e8c5503da69209d57286b"),
    "data_batch_3": (10000, "fe1021a9820682f7eb5cc7f65ff3d015d8a33876df6dd7787404f0fa8cf5937f"),
    "data_batch_4": (10000, "1599745ad42ec41be72e2f3f716b65bac89321693690656a125b1ea3ca3feeea"),
    "data_batch_5": (10000, "a3a7f0cf6cafd5b2d4610fd467bd87987a0a9ff93958b860a567c925a00ad56d"),
    "test_batch": (10000, "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb"),
}
CIFAR100_OFFICIAL = {
    "train": (50000, "8bf4935e7c77a3096270043c6f3b221b6ecb9c63d1a08608e9af66cff17e977a"),
    "test": (10000, "80031c23f8300724c6fbc588e4bccbe41c6392041782148727bb497b0132c4ad"),
}


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
        official=CIFAR10_OFFICIAL,
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
        official=CIFAR100_OFFICIAL,
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


def check_official(spec: CifarSpec, path: Path, images: np.ndarray, labels: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of the official file ``path`` unchanged, or a :class:`DatasetFormatError` naming it.

    A folder in CIFAR's layout is recorded as the benchmark's data set (kind ``full``, the paper's columns), so
    each file must hold the official number of images with the official labels in the official order
    (:data:`CifarSpec.official`). Anything else (a truncated copy, a hand-made 500-image fake in the official
    format, reordered files) is refused rather than recorded under the official name: the fix is the official
    files, or the same arrays as one's own ``.npz``, which is recorded as what it is (kind ``npz``, its
    fingerprint). The registered ``cifar10_subset`` is such an ``.npz``.
    """
    count, expected = spec.official[path.name]
    download = f"{spec.archive}, MD5 {spec.md5}"
    check_official_count(spec.name, path, len(labels), count, spec.sizes(), download)
    if (got := labels_sha256(labels)) != expected:
        raise not_official(spec.name, path, f"holds {count} images but not the official labels (sha256 "
                           f"{got[:16]}..., official {expected[:16]}...)", spec.sizes(), download)
    return images, labels


def missing_message(spec: CifarSpec, root: Path, missing: list[str]) -> str:
    """What is missing where: one sentence naming the folder and the absent files."""
    folder = root / spec.folder
    if len(missing) == len(spec.train_files + spec.test_files):
        state = f"{folder} does not exist" if not folder.exists() else f"{folder} has none of the files"
    else:
        state = f"{folder} is incomplete (missing {', '.join(missing)}; an interrupted copy or extraction?)"
    expected = ", ".join(spec.train_files + spec.test_files)
    return f"official files not found: {state}; expected {expected} there."


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
        DatasetFormatError: a file is present but is not a valid official CIFAR pickle, or not of the official
            size and labels (:func:`check_official`).
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
                f"{spec.name}: {missing_message(spec, root, missing)} Fix: allow the download (remove "
                f"--no-download; in Python load_dataset(..., download=True)) to fetch it into {root}, or "
                f"{where_advice(spec, root)}.")
        obtain_official(spec.name, missing_message(spec, root, missing), spec.remote, root / spec.archive,
                        extract=True, advice=where_advice(spec, root), url=url, md5=md5)
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DatasetFormatError(
                f"{spec.name}: extracted {spec.archive} into {root}, but {folder} still lacks "
                f"{', '.join(missing)}; the archive is not the official one.")

    parts = {split: [check_official(spec, folder / f, *read_batch(folder / f, spec.label_key)) for f in fs]
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
