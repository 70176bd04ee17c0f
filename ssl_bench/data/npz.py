"""Bring your own data: a ``.npz`` file with train and test images and labels.

Format (``np.savez`` / ``np.savez_compressed``)::

    x_train  uint8 (N, H, W, 3)   HWC RGB images, pixels 0..255
    y_train  int   (N,)           class indices 0..K-1 (any integer dtype; stored as int64 after loading)
    x_test   uint8 (M, H, W, 3)   same H, W as x_train
    y_test   int   (M,)
    num_classes  int scalar       optional; default max(y_train) + 1

The file is opened with ``allow_pickle=False`` (object arrays are refused: they could run code). The models of the
benchmark take 32x32 images; other sizes load, and it is up to the model whether it accepts them.

Naming: ``<root>/<name>.npz`` is found by ``load_dataset(name)``. A name containing ``subset`` gets kind
``"subset"`` (a part of a benchmark data set), otherwise ``"npz"``; a file name starting with ``cifar100`` /
``cifar10`` marks the benchmark it stands in for (``family``), e.g. ``cifar10_subset.npz`` -> family ``cifar10``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .base import DatasetFormatError, DatasetNotFoundError, ImageDataset

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def family_of(name: str) -> str | None:
    """``"cifar100"`` / ``"cifar10"`` when ``name`` starts with it (longest first), else ``None``."""
    lowered = name.lower()
    for family in ("cifar100", "cifar10"):
        if lowered.startswith(family):
            return family
    return None


def kind_of(name: str) -> str:
    return "subset" if "subset" in name.lower() else "npz"


def load_npz(path: str | Path, name: str | None = None) -> ImageDataset:
    """Load and validate a user ``.npz`` data set (format in the module docstring).

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetFormatError: unreadable file, missing keys, wrong dtype or shape, mismatched lengths, labels out
            of range; the message names the file, the array and what was expected.
    """
    path = Path(path).expanduser()
    name = name or path.stem
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{name}: {path} not found. A user data set is a .npz with arrays {', '.join(REQUIRED_KEYS)} "
            "(see datasets/README.md); put it in the data root (--data-root / SSL_BENCH_DATA) as <name>.npz, "
            "or pass the path to the .npz itself.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise DatasetFormatError(
                    f"{path}: missing array(s) {', '.join(missing)}; found {sorted(keys)}. "
                    f"Expected {', '.join(REQUIRED_KEYS)} (optional: num_classes).")
            arrays = {k: npz[k] for k in REQUIRED_KEYS}
            declared = npz["num_classes"] if "num_classes" in keys else None
    except DatasetFormatError:
        raise
    except ValueError as e:  # object arrays with allow_pickle=False, or a malformed member
        raise DatasetFormatError(f"{path}: cannot read the arrays without pickle ({e}); save plain numeric "
                                 "arrays (uint8 images, integer labels), not object arrays.") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetFormatError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}).") from e

    y_train, y_test = arrays["y_train"], arrays["y_test"]
    labels_ok = y_train.ndim == 1 and np.issubdtype(y_train.dtype, np.integer) and len(y_train) > 0
    if declared is not None:
        if declared.shape != () or not np.issubdtype(declared.dtype, np.integer) or int(declared) < 1:
            raise DatasetFormatError(f"{path}: num_classes must be a positive integer scalar, got {declared!r}")
        num_classes = int(declared)
    elif labels_ok:
        num_classes = max(int(y_train.max()) + 1, 1)
        if (int(y_train.min()) >= 0 and y_test.ndim == 1 and np.issubdtype(y_test.dtype, np.integer)
                and len(y_test) and int(y_test.max()) >= num_classes):
            raise DatasetFormatError(
                f"{path}: y_test has label {int(y_test.max())}, outside [0, {num_classes}) where num_classes = "
                f"max(y_train) + 1 = {num_classes}. Fix the labels, or store num_classes in the .npz if some "
                "classes have no training image.")
    else:
        num_classes = 1  # the shape / dtype problem of y_train is reported by the validation below
    return ImageDataset(
        name=name, **arrays, num_classes=num_classes, kind=kind_of(name), family=family_of(name), source=str(path),
    )
