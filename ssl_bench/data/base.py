"""What every loader returns: an in-memory image classification dataset, validated once where it is built.

All loaders (official CIFAR files, user ``.npz``, the embedded digits) produce the same :class:`ImageDataset`,
so everything downstream (splits, batching, augmentation) can trust its arrays without checking them again.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.errors import UserError

FINGERPRINT_CHARS = 16  # 64 bits of sha256: plenty to tell data sets apart, short enough for a table cell
FINGERPRINT_CHUNK_BYTES = 64 << 20  # hash large arrays 64 MiB at a time (bounded extra memory)
MIN_CLASSES = 2  # with one class every prediction is right: accuracy says nothing


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not where they were looked for; the message names the path and the fixes."""


class DatasetFormatError(UserError):
    """The files exist but their content is not what ssl-bench expects (dtype, shape, label range, keys)."""


class ChecksumError(UserError):
    """A downloaded archive does not have the published MD5; it was deleted, nothing was extracted.

    ``got`` is the MD5 the download had (``None`` when unknown), so a caller can say where the file came from
    before anything else.
    """

    def __init__(self, message: str, got: str | None = None) -> None:
        super().__init__(message)
        self.got = got


def file_kind(path: Path) -> str:
    """What a path that exists is, in words: ``a folder``, ``a FIFO (named pipe)``, ``a character device`` ...

    Readers open only regular files: ``/dev/zero`` would never end and a FIFO blocks until someone writes.
    """
    mode = path.stat().st_mode
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return words
    return "not a regular file"


def not_official(name: str, path: Path, found: str, official: str, download: str) -> DatasetFormatError:
    """The one line refusing a file in an official data set's layout that is not that data set's file.

    A folder in an official layout is recorded as the benchmark's data set (kind ``full``, the paper's columns),
    so a truncated copy or a hand-made fake in the official format must not pass as it. ``found`` says what
    ``path`` holds, ``official`` what ``name`` is (sizes and files), ``download`` what a fresh download fetches.
    The fix is the official files, or the same arrays as one's own ``.npz``, recorded as what it is (kind
    ``npz``, its fingerprint).
    """
    folder = path.parent
    return DatasetFormatError(
        f"{name}: {path} {found} ({name} is {official}), so {folder} is not the official data set and is not "
        f"recorded as {name}. Fix: replace {folder} by the official files (delete it and run again to download "
        f"{download}), or to train on these images as your own data, save them with np.savez(NAME.npz, "
        "x_train=..., y_train=..., x_test=..., y_test=...) and pass --dataset NAME.npz.")


def check_official_count(name: str, path: Path, count: int, official_count: int, official: str,
                         download: str) -> None:
    """Refuse (:func:`not_official`) ``path`` unless it holds the official number of images."""
    if count != official_count:
        raise not_official(name, path, f"holds {count} images, the official file {official_count}", official,
                           download)


def _check_split(where: str, split: str, x: Any, y: Any, num_classes: int) -> None:
    """Types, dtypes, shapes and label range of one split's images ``x`` and labels ``y``."""
    xname, yname = f"x_{split}", f"y_{split}"
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DatasetFormatError(f"{where}: {xname} and {yname} must be numpy arrays, "
                                 f"got {type(x).__name__} and {type(y).__name__}")
    if x.dtype != np.uint8:
        raise DatasetFormatError(
            f"{where}: {xname} has dtype {x.dtype}, expected uint8 pixels in 0..255. Convert before saving, "
            "e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1].")
    if x.ndim != 4 or x.shape[-1] != 3:
        hint = ""
        if x.ndim == 4 and x.shape[1] == 3:
            hint = " It looks channels-first (N, 3, H, W): use x.transpose(0, 2, 3, 1)."
        elif x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 1):
            hint = (" It looks greyscale: replicate it to RGB, "
                    "e.g. np.repeat(x.reshape(*x.shape[:3], 1), 3, axis=-1).")
        raise DatasetFormatError(
            f"{where}: {xname} has shape {x.shape}, expected (N, H, W, 3) HWC RGB images.{hint}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetFormatError(
            f"{where}: {yname} has shape {y.shape} and dtype {y.dtype}, expected a 1-D integer array "
            "of class indices (one per image; not one-hot).")
    if len(x) != len(y):
        raise DatasetFormatError(
            f"{where}: {xname} has {len(x)} images but {yname} has {len(y)} labels; "
            "they must match one to one.")
    if len(x) == 0:
        raise DatasetFormatError(
            f"{where}: {xname} is empty (0 images); a data set needs training images to learn from and test "
            "images to measure accuracy on: put at least one image in each split.")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = y[(y < 0) | (y >= num_classes)]
        raise DatasetFormatError(
            f"{where}: {yname} has labels outside [0, {num_classes}) (num_classes={num_classes}): "
            f"e.g. {sorted(set(bad[:5].tolist()))}; labels must be class indices 0..{num_classes - 1}.")


def _check_unlabeled(where: str, x: Any, x_train: np.ndarray) -> None:
    """The extra unlabelled images: uint8 (U, H, W, 3) with the training images' H, W."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != x_train.shape[1:]:
        shape = getattr(x, "shape", None)
        raise DatasetFormatError(
            f"{where}: x_unlabeled is {getattr(x, 'dtype', type(x).__name__)} {shape}, expected uint8 images "
            f"(U, {', '.join(str(d) for d in x_train.shape[1:])}) like x_train.")


def validate_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    where: str,
) -> None:
    """Raise :class:`DatasetFormatError` (naming ``where``) unless the four arrays form a valid data set.

    Valid means: images uint8 (N, H, W, 3) HWC RGB with the same H, W in train and test; labels 1-D integer
    arrays with one label per image, every label in ``[0, num_classes)``; non-empty train and test sets; at
    least :data:`MIN_CLASSES` classes, and that many distinct labels among the training images (a one-class
    problem would report 100 % accuracy whatever the model does).
    """
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
        raise DatasetFormatError(f"{where}: num_classes must be an int, got {num_classes!r}")
    if num_classes < MIN_CLASSES:
        raise DatasetFormatError(
            f"{where}: num_classes is {num_classes}, expected at least {MIN_CLASSES}: with a single class "
            "every prediction is right and accuracy means nothing. Use a data set with two or more classes.")
    _check_split(where, "train", x_train, y_train, num_classes)
    _check_split(where, "test", x_test, y_test, num_classes)
    present = np.unique(y_train)
    if len(present) < MIN_CLASSES:
        raise DatasetFormatError(
            f"{where}: every training label is {int(present[0])}, expected images of at least {MIN_CLASSES} "
            "classes: a classifier trained on one class learns nothing. Add images of the other classes.")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetFormatError(
            f"{where}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}; "
            "they must match.")


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Short sha256 over the arrays' dtypes, shapes and bytes (C order); equal data <=> equal fingerprint.

    Arrays are 1-D or more (images, labels)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}|".encode())
        # Chunks along the first axis hash the same bytes as the whole C-order array, without making a
        # contiguous copy of a large memory-mapped (and possibly transposed) array such as STL-10's unlabelled set.
        rows = max(1, FINGERPRINT_CHUNK_BYTES // max(1, a[:1].nbytes))
        for start in range(0, len(a), rows):
            h.update(memoryview(np.ascontiguousarray(a[start:start + rows])).cast("B"))
    return h.hexdigest()[:FINGERPRINT_CHARS]


CHANNEL_STATS_PIXELS = 1 << 21  # pixels per chunk of channel_mean_std: 2048 CIFAR images, 227 STL-10 ones


def channel_mean_std(x: np.ndarray, chunk: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, H, W, C), in [0, 1] units.

    Sums are accumulated exactly in int64 over chunks, so the result is deterministic and needs little memory
    (the full CIFAR training set as float64 would take 1.2 GB).
    """
    c = x.shape[-1]
    # images per chunk: a fixed number of pixels, so that the int64 blocks stay ~50 MB at any image size
    chunk = chunk or max(1, CHANNEL_STATS_PIXELS // max(1, int(np.prod(x.shape[1:-1]))))
    total = np.zeros(c, np.int64)
    total_sq = np.zeros(c, np.int64)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk].reshape(-1, c).astype(np.int64)
        total += block.sum(axis=0)
        total_sq += (block * block).sum(axis=0)
    count = x.size // c
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return tuple(float(v) for v in mean / 255.0), tuple(float(v) for v in np.sqrt(var) / 255.0)


CHANNEL_NAMES = ("red", "green", "blue")


def check_channels_vary(where: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Raise :class:`DatasetFormatError` (naming ``where``) if a channel of the training images never varies.

    A channel with the same value in every pixel of every training image has std 0: standardising it (the
    data stage divides by the per-channel std, ``ssl_bench.augment.normalize``) would divide by zero, and it
    holds nothing to learn. It is refused here, where the data set is built, so that a run fails before any
    run directory exists.
    """
    flat = [i for i, s in enumerate(std) if not s > 0]
    if not flat:
        return
    names = [CHANNEL_NAMES[i] if len(std) == 3 else f"channel {i}" for i in flat]
    values = ", ".join(f"{names[k]} {round(mean[i] * 255)}" for k, i in enumerate(flat))
    what = ("every training image is the same flat colour" if len(flat) == len(std) else
            f"the {' and '.join(names)} channel{'s are' if len(flat) > 1 else ' is'} the same in every pixel")
    raise DatasetFormatError(
        f"{where}: {what} (x_train {values} everywhere, std 0), so the images cannot be standardised per channel "
        "and there is nothing to learn from them. Fix: rebuild the images from their source (floats in [0, 1] "
        "cast to uint8 without * 255 become all 0; a failed decode gives one flat colour); greyscale images "
        "belong in all three channels: np.repeat(x[..., :1], 3, axis=-1).")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification data set held in memory.

    Attributes:
        name: what it was loaded as (``cifar10``, ``digits``, ``cifar10_subset``, ...).
        x_train, x_test: uint8 (N, H, W, 3) HWC RGB images.
        y_train, y_test: int64 (N,) class indices in ``[0, num_classes)``.
        num_classes: number of classes (at least 2).
        kind: ``"full"`` (official files), ``"subset"`` / ``"npz"`` (a user ``.npz``), ``"embedded"`` (ships
            with a dependency, needs no files).
        family: the benchmark it stands in for (``"cifar10"``, ``"cifar100"``) or ``None``.
        source: where the arrays came from (a path or a description).
        x_unlabeled: optional uint8 (U, H, W, 3) images without labels that join the unlabelled pool beside every
            training image (STL-10's 100,000 ``unlabeled_X.bin`` images); may be a read-only ``np.memmap``, which
            is never copied here. ``None`` (all other sets): the unlabelled pool is the training set.
        folds: optional int64 (F, L) official label folds, each row L indices into the training set (STL-10's
            ``fold_indices.txt``); ``ssl_bench.data.registry.split_for`` uses row ``seed`` for a budget of L.
        hflip: whether a horizontal mirror image keeps its label, i.e. whether the weak augmentation may flip.
            True for natural images (CIFAR); False for digits and text, which mirroring turns into non-digits
            (the reference's SVHN augmentation is shift only: google-research/fixmatch, libml/augment.py,
            ``DEFAULT_AUGMENT``). Every loader states it; the default only keeps direct construction short.
        fingerprint: short sha256 of the four arrays (computed here): a run records exactly which data it saw.
        mean, std: per-channel statistics of ``x_train`` in [0, 1] units (computed here), for normalisation.

    The arrays are validated on construction (:func:`validate_arrays`); do not modify them in place
    afterwards, or ``fingerprint``, ``mean`` and ``std`` no longer describe them.
    """

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    num_classes: int
    kind: str
    family: str | None
    source: str
    hflip: bool = True
    x_unlabeled: np.ndarray | None = field(default=None, repr=False)
    folds: np.ndarray | None = field(default=None, repr=False)
    fingerprint: str = field(init=False)
    mean: tuple[float, ...] = field(init=False)
    std: tuple[float, ...] = field(init=False)

    KINDS = ("full", "subset", "npz", "embedded", "folder")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"ImageDataset.kind must be one of {self.KINDS}, got {self.kind!r}")
        if not isinstance(self.hflip, (bool, np.bool_)):
            raise ValueError(f"ImageDataset.hflip must be a bool (True when a mirrored image keeps its "
                             f"label), got {self.hflip!r}")
        validate_arrays(self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes,
                        where=f"data set {self.name!r} ({self.source})")
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once, here
        set_(self, "num_classes", int(self.num_classes))
        set_(self, "hflip", bool(self.hflip))
        set_(self, "y_train", self.y_train.astype(np.int64, copy=False))
        set_(self, "y_test", self.y_test.astype(np.int64, copy=False))
        set_(self, "x_train", np.ascontiguousarray(self.x_train))
        set_(self, "x_test", np.ascontiguousarray(self.x_test))
        extra = ()
        if self.x_unlabeled is not None:
            _check_unlabeled(f"data set {self.name!r} ({self.source})", self.x_unlabeled, self.x_train)
            extra = (self.x_unlabeled,)  # not copied: it may be a memory map larger than the RAM one wants to use
        if self.folds is not None:
            folds = np.asarray(self.folds)
            if folds.ndim != 2 or not np.issubdtype(folds.dtype, np.integer) or folds.size == 0 or \
                    folds.min() < 0 or folds.max() >= len(self.y_train):
                raise DatasetFormatError(f"data set {self.name!r} ({self.source}): folds must be a 2-D integer array "
                                         f"of indices into the {len(self.y_train)} training images, got "
                                         f"{folds.dtype} {folds.shape}")
            set_(self, "folds", folds.astype(np.int64))
        set_(self, "fingerprint", fingerprint_arrays(self.x_train, self.y_train, self.x_test, self.y_test, *extra))
        mean, std = channel_mean_std(self.x_train)
        check_channels_vary(f"data set {self.name!r} ({self.source})", mean, std)
        set_(self, "mean", mean)
        set_(self, "std", std)

    def record_fields(self) -> dict[str, Any]:
        """What a run record says about its data: plain JSON types under ``dataset*`` keys.

        Everything that changes the numbers and is not a training setting: which data (name, kind, family,
        fingerprint), its sizes, and whether the weak augmentation may mirror it.
        """
        return {
            "dataset": self.name, "dataset_kind": self.kind, "dataset_family": self.family,
            "dataset_fingerprint": self.fingerprint, "dataset_hflip": self.hflip,
            "dataset_num_classes": self.num_classes, "dataset_num_train": len(self.x_train),
            "dataset_num_test": len(self.x_test),
        }
