"""Data that ships inside a dependency, so the whole pipeline can run with no files and no network.

``digits``: scikit-learn's ``load_digits`` -- 1797 real handwritten digits (the test part of the UCI
"optdigits" set), 8x8 pixels with 17 grey levels 0..16, 10 classes (174..183 images each). Brought to the
32x32x3 uint8 images the models take:

1. scale grey levels to 0..255: ``round(v * 255 / 16)`` (0 -> 0, 16 -> 255; exact and monotone);
2. upsample 8x8 -> 32x32 by **nearest neighbour** (each pixel becomes a 4x4 block). The factor is an
   integer, so nearest neighbour keeps the 17 real grey levels and invents no intensities, is exactly
   reproducible without any image library, and crops / shifts / RandAugment then act on a 32x32 grid as they
   do on CIFAR. (Bilinear or bicubic would only smooth the blocks with made-up values; they add no
   information.)
3. replicate the grey channel to R, G and B.

Train/test split (fixed, deterministic, stratified, no random numbers): within each class, in scikit-learn's
order, every fifth image (the 5th, 10th, 15th, ...) goes to test, the rest to train. That is
``floor(n_c / 5)`` test images of each class: 355 test and 1442 train images overall. It depends only on the
data (which scikit-learn ships as a fixed file), not on any RNG or library version.

No horizontal flips (``hflip=False``): a mirrored digit is not a digit, or is another one. The reference's
weak augmentation for digits (SVHN) is a shift only (google-research/fixmatch, libml/augment.py,
``DEFAULT_AUGMENT``: ``svhn`` -> ``Primitives.s(4)``, against ``ms(4)``, mirror + shift, for CIFAR).
"""

from __future__ import annotations

import numpy as np

from ssl_bench.errors import MissingPackageError

from .base import ImageDataset

DIGITS_SIZE = 32   # the models' input size
DIGITS_LEVELS = 16  # load_digits grey levels are 0..16
TEST_EVERY = 5     # every fifth image of each class is a test image


def digits_split(y: np.ndarray, every: int = TEST_EVERY) -> np.ndarray:
    """Boolean test mask: within each class (in array order) positions every-1, 2*every-1, ... are test."""
    is_test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        is_test[members[every - 1::every]] = True
    return is_test


def digits_to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) grey levels 0..16 -> uint8 (N, 32, 32, 3): scale to 0..255, nearest x4, grey -> RGB."""
    grey = np.rint(images.astype(np.float64) * (255.0 / DIGITS_LEVELS)).astype(np.uint8)
    factor = DIGITS_SIZE // images.shape[1]
    big = grey.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.ascontiguousarray(np.repeat(big[..., None], 3, axis=-1))


def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits as a 32x32 RGB data set (module docstring: conversion and split)."""
    try:
        from sklearn import __version__ as sklearn_version
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency of ssl-bench
        raise MissingPackageError("the embedded 'digits' data set needs scikit-learn: "
                          "pip install scikit-learn") from e
    bunch = sklearn_load_digits()
    x = digits_to_rgb32(bunch.images)
    y = bunch.target.astype(np.int64)
    is_test = digits_split(y)
    return ImageDataset(
        name="digits", x_train=x[~is_test], y_train=y[~is_test], x_test=x[is_test], y_test=y[is_test],
        num_classes=10, kind="embedded", family=None,
        hflip=False,  # digits have a handedness: the reference shifts SVHN, never mirrors it (docstring)
        source=(f"sklearn.datasets.load_digits (scikit-learn {sklearn_version}), "
                "8x8 -> 32x32 nearest, grey -> RGB"),
    )


EMBEDDED = {"digits": load_digits}
