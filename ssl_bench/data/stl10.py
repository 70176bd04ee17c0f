"""STL-10 from the official binary files, the 100,000 unlabelled images memory-mapped.

Archive: http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (the URL google-research/fixmatch
``scripts/create_datasets.py`` fetches, ``URLS['stl10']``), MD5 91f7769df0f17e558f3565bffb0c7dfb (the one
torchvision's ``torchvision/datasets/stl10.py`` checks, ``tgz_md5``). Extracted under a data root::

    <root>/stl10_binary/train_X.bin      5,000 x 27,648 bytes    labelled training images
    <root>/stl10_binary/train_y.bin      5,000 bytes             labels 1..10
    <root>/stl10_binary/test_X.bin       8,000 images            test images
    <root>/stl10_binary/test_y.bin       8,000 bytes
    <root>/stl10_binary/unlabeled_X.bin  100,000 images (2.76 GB) unlabelled, of these and of other classes
    <root>/stl10_binary/fold_indices.txt the 10 official folds: 1,000 training indices (0-based) per line

Each image is 3 x 96 x 96 bytes, channel by channel, each channel **column-major** (the dataset's MATLAB
origin): reshaping a file to (N, 3, 96, 96) gives (image, channel, column, row), and ``transpose(0, 3, 2, 1)``
gives (image, row, column, channel) HWC, as the reference's ``unflatten`` does (``_load_stl10``). Labels are
1..10 and become 0..9 (reference: ``- 1``).

Memory: ``train_X`` and ``test_X`` (0.36 GB together) are read into memory; ``unlabeled_X.bin`` stays a
read-only ``np.memmap`` (a transposed view, never copied here): its pages are the file's, which the OS reads
on demand and may drop again, so a whole load holds at most one copy of the unlabelled images (the one training
puts on the device; see the README's Data section for the measured peak).

The reference's protocol (google-research/fixmatch): ``stl10.{seed}@1000-{valid}`` with ``height=96,
width=96`` (libml/data.py ``create_datasets``). The 1000 labels are official fold number ``seed``:
``scripts/create_split.py`` computes a draw and then, ``if 'stl10' in argv[1] and FLAGS.size == 1000``,
replaces it by line ``seed`` of ``stl10_fold_indices.txt`` (README: ``create_split.py --seed=$seed --size=1000
... stl10-train.tfrecord stl10-unlabeled.tfrecord`` for seeds 1..5); ``stl10.1@5000`` labels all 5,000. The
unlabelled pool is train + unlabeled (105,000 images, ``create_unlabeled.py ... stl10-train.tfrecord
stl10-unlabeled.tfrecord``). ssl-bench does the same: ``folds`` carries the file's 10 lines, a budget of 1000
takes line ``--split-seed`` (:func:`ssl_bench.data.registry.split_for`), and ``x_unlabeled`` joins every
training image in the unlabelled pool. Weak augmentation: mirror + shift by 12 px (``DEFAULT_AUGMENT['stl10']
= Primitives.ms(12)``, 12.5 % of 96, what ``augment.TRANSLATE_FRACTION`` gives at 96 px).

``SSL_BENCH_STL10_URL`` points the download elsewhere (a mirror, ``file://`` in tests); the archive must still
have the published MD5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetFormatError, DatasetNotFoundError, not_official
from .download import RemoteFile, has_archive, obtain_official

FOLDER = "stl10_binary"
IMAGE_SIDE = 96
NUM_CLASSES = 10
IMAGE_BYTES = 3 * IMAGE_SIDE * IMAGE_SIDE
STL10_ARCHIVE = RemoteFile("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                           "91f7769df0f17e558f3565bffb0c7dfb", "SSL_BENCH_STL10_URL")
# Images in each official file, as published at http://ai.stanford.edu/~acoates/stl10/ ("500 training images
# (10 pre-defined folds), 800 test images per class" of 10 classes; "100000 unlabeled images"): a file in this
# layout of another size is not the official data set and is refused (load_stl10_arrays), not recorded as stl10.
STL10_IMAGES = {"train_X.bin": 5_000, "test_X.bin": 8_000, "unlabeled_X.bin": 100_000}
FILE_WORDS = {"train_X.bin": "labelled training", "test_X.bin": "test", "unlabeled_X.bin": "unlabelled"}
# The official fold_indices.txt: 10 folds ("10 pre-defined folds", the same page) of 1,000 training indices each
# (one line per fold; the reference's scripts/create_split.py takes a line as the 1000 labels of stl10.{seed}@1000).
STL10_FOLDS = (10, 1_000)
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "fold_indices.txt")


def map_images(path: Path) -> np.ndarray:
    """A ``*_X.bin`` file as a read-only (N, 96, 96, 3) HWC uint8 view of a memory map (nothing is read yet)."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DatasetFormatError(
            f"{path}: {size} bytes is not a whole number of 3x96x96 images ({IMAGE_BYTES} bytes each); the file "
            f"is truncated or not STL-10's: delete {path.parent} and run again to download it afresh.")
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // IMAGE_BYTES, 3, IMAGE_SIDE, IMAGE_SIDE))
    return mapped.transpose(0, 3, 2, 1)  # (image, channel, column, row) -> (image, row, column, channel)


def read_labels(path: Path, count: int) -> np.ndarray:
    """A ``*_y.bin`` file (one byte per image, 1..10) -> int64 labels 0..9, checked against ``count`` images."""
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) != count:
        raise DatasetFormatError(f"{path}: {len(raw)} labels for {count} images in the matching _X.bin; the files "
                                 f"are truncated or mismatched: delete {path.parent} and download again.")
    if raw.min() < 1 or raw.max() > NUM_CLASSES:
        raise DatasetFormatError(f"{path}: labels span {raw.min()}..{raw.max()}, expected 1..10")
    return raw.astype(np.int64) - 1


def read_folds(path: Path, num_train: int) -> np.ndarray:
    """``fold_indices.txt`` (one line per fold, space-separated 0-based training indices) -> int64 (F, L)."""
    try:
        rows = [np.array(line.split(), dtype=np.int64) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise DatasetFormatError(f"{path}: not lines of integer indices ({e}); delete {path.parent} and download "
                                 "again.") from e
    if not rows or len({len(r) for r in rows}) != 1 or min(r.min() for r in rows) < 0 or \
            max(r.max() for r in rows) >= num_train:
        raise DatasetFormatError(f"{path}: expected equally long lines of indices into the {num_train} training "
                                 "images (10 x 1,000 in the official file)")
    return np.stack(rows)


def _advice(root: Path) -> str:
    return (f"point --data-root DIR or SSL_BENCH_DATA=DIR at the folder that holds {FOLDER}/, or put "
            f"{STL10_ARCHIVE.filename} (MD5 {STL10_ARCHIVE.md5}, from {STL10_ARCHIVE.url}) into {root}")


def official_sizes() -> str:
    """The official sizes in words (``5000 labelled training images in train_X.bin, ...``)."""
    folds, per_fold = STL10_FOLDS
    return (", ".join(f"{n} {FILE_WORDS[f]} images in {f}" for f, n in STL10_IMAGES.items())
            + f", {folds} folds of {per_fold} training indices in fold_indices.txt")


def _not_official(path: Path, found: str) -> DatasetFormatError:
    return not_official("stl10", path, found, official_sizes(), f"{STL10_ARCHIVE.filename}, MD5 {STL10_ARCHIVE.md5}")


def map_official(path: Path) -> np.ndarray:
    """:func:`map_images` of an official ``*_X.bin``, refused unless it holds the official number of images.

    Only the file's size is looked at: a wrong file is refused before any of its pixels is read.
    """
    images = map_images(path)
    if len(images) != STL10_IMAGES[path.name]:
        raise _not_official(path, f"holds {len(images)} images, the official file {STL10_IMAGES[path.name]}")
    return images


def read_official_folds(path: Path, num_train: int) -> np.ndarray:
    """:func:`read_folds`, refused unless the file holds the official number of folds and indices per fold."""
    folds = read_folds(path, num_train)
    if folds.shape != STL10_FOLDS:
        raise _not_official(path, f"holds {folds.shape[0]} folds of {folds.shape[1]} training indices, the official "
                                  f"file {STL10_FOLDS[0]} of {STL10_FOLDS[1]}")
    return folds


def load_stl10_arrays(root: Path, download: bool = True) -> dict[str, np.ndarray | str]:
    """The arrays of ``stl10`` (``x_unlabeled`` memory-mapped); downloads and extracts the archive if needed.

    Each ``*_X.bin`` must hold the official number of images (:data:`STL10_IMAGES`) and ``fold_indices.txt`` the
    official folds' shape (:data:`STL10_FOLDS`), else :class:`DatasetFormatError`.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetNotFoundError(f"stl10: the data root {root} is a file, expected a folder; fix --data-root / "
                                   "SSL_BENCH_DATA.")
    folder = root / FOLDER
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        archive = root / STL10_ARCHIVE.filename
        what = f"official files not found: {folder} lacks {', '.join(missing)}."
        if not download and not has_archive(archive, STL10_ARCHIVE.md5):
            raise DatasetNotFoundError(f"stl10: {what} Fix: allow the download (remove --no-download; in Python "
                                       f"load_dataset(..., download=True)), or {_advice(root)}.")
        obtain_official("stl10", what, STL10_ARCHIVE, archive, extract=True,
                        advice=_advice(root))
        missing = [f for f in FILES if not (folder / f).is_file()]
        if missing:
            raise DatasetFormatError(f"stl10: extracted {archive.name} into {root}, but {folder} still lacks "
                                     f"{', '.join(missing)}; the archive is not the official one.")
    # every file's size is checked before any pixel is read (mapping reads nothing)
    x_train, x_test, x_unlabeled = (map_official(folder / f) for f in ("train_X.bin", "test_X.bin", "unlabeled_X.bin"))
    x_train, x_test = np.ascontiguousarray(x_train), np.ascontiguousarray(x_test)
    return {"x_train": x_train, "y_train": read_labels(folder / "train_y.bin", len(x_train)),
            "x_test": x_test, "y_test": read_labels(folder / "test_y.bin", len(x_test)),
            "x_unlabeled": x_unlabeled,
            "folds": read_official_folds(folder / "fold_indices.txt", len(x_train)), "source": str(folder)}
