"""What every loader returns: an in-memory image classification dataset, validated once where it is built.

All loaders (official CIFAR files, user ``.npz``, the embedded digits) produce the same :class:`ImageDataset`, so
everything downstream (splits, batching, augmentation) can trust its arrays without checking them again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

FINGERPRINT_CHARS = 16  # 64 bits of sha256: plenty to tell data sets apart, short enough for a table cell


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not where they were looked for; the message names the path and the fixes."""


class DatasetFormatError(ValueError):
    """The files exist but their content is not what ssl-bench expects (dtype, shape, label range, keys)."""


class ChecksumError(ValueError):
    """A downloaded archive does not have the published MD5; it was deleted, nothing was extracted."""


def validate_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    where: str,
) -> None:
    """Raise :class:`DatasetFormatError` (naming ``where``) unless the four arrays form a valid image data set.

    Valid means: images uint8 (N, H, W, 3) HWC RGB with the same H, W in train and test; labels 1-D integer arrays
    with one label per image, every label in ``[0, num_classes)``; at least one training image.
    """
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise DatasetFormatError(f"{where}: num_classes must be a positive int, got {num_classes!r}")
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        xname, yname = f"x_{split}", f"y_{split}"
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DatasetFormatError(f"{where}: {xname} and {yname} must be numpy arrays, "
                                     f"got {type(x).__name__} and {type(y).__name__}")
        if x.dtype != np.uint8:
            raise DatasetFormatError(
                f"{where}: {xname} has dtype {x.dtype}, expected uint8 pixels in 0..255. "
                "Convert before saving, e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1].")
        if x.ndim != 4 or x.shape[-1] != 3:
            hint = ""
            if x.ndim == 4 and x.shape[1] == 3:
                hint = " It looks channels-first (N, 3, H, W): use x.transpose(0, 2, 3, 1)."
            elif x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 1):
                hint = " It looks greyscale: replicate it to RGB, e.g. np.repeat(x.reshape(*x.shape[:3], 1), 3, axis=-1)."
            raise DatasetFormatError(
                f"{where}: {xname} has shape {x.shape}, expected (N, H, W, 3) HWC RGB images.{hint}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DatasetFormatError(
                f"{where}: {yname} has shape {y.shape} and dtype {y.dtype}, expected a 1-D integer array "
                "of class indices (one per image; not one-hot).")
        if len(x) != len(y):
            raise DatasetFormatError(
                f"{where}: {xname} has {len(x)} images but {yname} has {len(y)} labels; they must match one to one.")
        if len(y):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                bad = y[(y < 0) | (y >= num_classes)]
                raise DatasetFormatError(
                    f"{where}: {yname} has labels outside [0, {num_classes}) (num_classes={num_classes}): "
                    f"e.g. {sorted(set(bad[:5].tolist()))}; labels must be class indices 0..{num_classes - 1}.")
    if len(x_train) == 0:
        raise DatasetFormatError(f"{where}: x_train is empty; a data set needs training images.")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetFormatError(
            f"{where}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}; they must match.")


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Short sha256 over the arrays' dtypes, shapes and bytes (C order); equal data <=> equal fingerprint."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:FINGERPRINT_CHARS]


def channel_mean_std(x: np.ndarray, chunk: int = 2048) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, H, W, C), in [0, 1] units.

    Sums are accumulated exactly in int64 over chunks, so the result is deterministic and needs little memory
    (the full CIFAR training set as float64 would take 1.2 GB).
    """
    c = x.shape[-1]
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


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification data set held in memory.

    Attributes:
        name: what it was loaded as (``cifar10``, ``digits``, ``cifar10_subset``, ...).
        x_train, x_test: uint8 (N, H, W, 3) HWC RGB images.
        y_train, y_test: int64 (N,) class indices in ``[0, num_classes)``.
        num_classes: number of classes.
        kind: ``"full"`` (official files), ``"subset"`` / ``"npz"`` (a user ``.npz``), ``"embedded"`` (ships with a
            dependency, needs no files).
        family: the benchmark it stands in for (``"cifar10"``, ``"cifar100"``) or ``None``.
        source: where the arrays came from (a path or a description).
        fingerprint: short sha256 of the four arrays (computed here), so a run records exactly which data it saw.
        mean, std: per-channel statistics of ``x_train`` in [0, 1] units (computed here), for normalisation.

    The arrays are validated on construction (:func:`validate_arrays`); do not modify them in place afterwards,
    or ``fingerprint``, ``mean`` and ``std`` no longer describe them.
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
    fingerprint: str = field(init=False)
    mean: tuple[float, ...] = field(init=False)
    std: tuple[float, ...] = field(init=False)

    KINDS = ("full", "subset", "npz", "embedded")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"ImageDataset.kind must be one of {self.KINDS}, got {self.kind!r}")
        validate_arrays(self.x_train, self.y_train, self.x_test, self.y_test, self.num_classes,
                        where=f"data set {self.name!r} ({self.source})")
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once, here
        set_(self, "num_classes", int(self.num_classes))
        set_(self, "y_train", self.y_train.astype(np.int64, copy=False))
        set_(self, "y_test", self.y_test.astype(np.int64, copy=False))
        set_(self, "x_train", np.ascontiguousarray(self.x_train))
        set_(self, "x_test", np.ascontiguousarray(self.x_test))
        set_(self, "fingerprint", fingerprint_arrays(self.x_train, self.y_train, self.x_test, self.y_test))
        mean, std = channel_mean_std(self.x_train)
        set_(self, "mean", mean)
        set_(self, "std", std)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def describe(self) -> str:
        """One line for logs: name, kind, family, sizes, image shape, source and fingerprint."""
        h, w, c = self.image_shape
        fam = f", stands in for {self.family}" if self.family and self.family != self.name else ""
        return (f"{self.name} [{self.kind}{fam}]: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"{self.num_classes} classes, {h}x{w}x{c}, from {self.source}, fingerprint {self.fingerprint}")
