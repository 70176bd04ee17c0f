"""SVHN (Street View House Numbers, cropped digits) from the official ``.mat`` files.

Layout under a data root::

    <root>/svhn/train_32x32.mat   73,257 images    MD5 e26dedcc434d2e4c54c9b2d4a06d8373
    <root>/svhn/test_32x32.mat    26,032 images    MD5 eb5a983be6a315427106f1b164d9cef3
    <root>/svhn/extra_32x32.mat  531,131 images    MD5 a93ce644f1a588dc4d68dda5feec44a7   (svhn_extra only)

Published at http://ufldl.stanford.edu/housenumbers/ (URLs ``{train,test,extra}_32x32.mat``, the ones
google-research/fixmatch ``scripts/create_datasets.py`` fetches, ``URLS['svhn']``); the MD5s are the ones
torchvision's ``torchvision/datasets/svhn.py`` checks (``split_list``, since pytorch/vision PR #98). A file of
another size is refused (:data:`SVHN_IMAGES`): a folder in this layout is recorded as the official data set.

Each file is a MATLAB v5 file with ``X``: uint8 (32, 32, 3, N) (height, width, channel, image) and ``y``:
(N, 1) labels 1..10, where 10 stands for the digit 0. Read with ``scipy.io.loadmat`` (which reads arrays and
runs no code); images -> (N, 32, 32, 3) HWC, label 10 -> 0, as the reference does (``_load_svhn``: transpose
``[3, 0, 1, 2]``, ``labels -= 1`` after which its 9 is digit 0; ssl-bench maps 10 -> 0 so that class k is the
digit k, as torchvision does: ``np.place(labels, labels == 10, 0)``; the two numberings differ only by a fixed
relabelling, which no accuracy can see).

Two data sets:

* ``svhn``: train (73,257) / test, the FixMatch paper's protocol. The reference names it ``svhn_noextra``
  (libml/data.py ``create_datasets``; README: ``create_unlabeled.py $ML_DATA/SSL2/svhn_noextra
  $ML_DATA/svhn-train.tfrecord``), and its authors confirm the paper's Table 2 used it
  (google-research/fixmatch issue #71).
* ``svhn_extra``: train + extra (604,388 images) / test, as USB (microsoft/Semi-supervised-learning,
  ``semilearn/datasets/cv_datasets/svhn.py``, ``get_svhn``: train and extra always concatenated) and the
  reference's own ``svhn`` entry. Labels are drawn from, and the unlabelled pool is, the union. Its family is
  ``svhn_extra``, not ``svhn``: a number on 604k images is not comparable with the paper's on 73k.

Label splits (``registry.split_for``): ``svhn`` distributes a budget like the classes, as the reference's
``scripts/create_split.py`` does (40 labels: 3, 7, 6, 4, 4, 4, 3, 3, 3, 3 of the digits 0..9); ``svhn_extra``
is class-balanced, as USB.

No horizontal flips: digits are not mirror-symmetric (reference ``DEFAULT_AUGMENT['svhn'] = Primitives.s(4)``,
shift only). Download: each missing file is fetched with urllib into ``<root>/svhn/``, MD5-checked while it
streams, renamed into place only when complete (:mod:`ssl_bench.data.download`); ``SSL_BENCH_SVHN_TRAIN_URL`` /
``..._TEST_URL`` / ``..._EXTRA_URL`` point a split elsewhere (a mirror, ``file://`` in tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetFormatError, DatasetNotFoundError, check_official_count
from .download import RemoteFile, obtain_official

FOLDER = "svhn"
IMAGE_SIDE = 32
NUM_CLASSES = 10
ZERO_LABEL = 10  # the official files label the digit 0 as 10

SVHN_FILES: dict[str, RemoteFile] = {
    split: RemoteFile(f"http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat", md5,
                      f"SSL_BENCH_SVHN_{split.upper()}_URL")
    for split, md5 in (("train", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                       ("test", "eb5a983be6a315427106f1b164d9cef3"),
                       ("extra", "a93ce644f1a588dc4d68dda5feec44a7"))
}
# Images in each official file, as published at http://ufldl.stanford.edu/housenumbers/ ("73257 digits for
# training, 26032 digits for testing, and 531131 additional"): a file in this layout of another size is not the
# official data set and is refused (load_svhn_arrays), not recorded as svhn / svhn_extra.
SVHN_IMAGES = {"train": 73_257, "test": 26_032, "extra": 531_131}
SPLIT_WORDS = {"train": "training", "test": "test", "extra": "extra"}


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official SVHN ``.mat`` -> (uint8 (N, 32, 32, 3) HWC images, int64 (N,) labels 0..9)."""
    import scipy.io

    try:
        entry = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError, IndexError) as e:
        # scipy.io.matlab.MatReadError is a ValueError subclass; truncated files fail in several ways
        raise DatasetFormatError(
            f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e}). It may be truncated or corrupted: "
            "delete it and run again to download it afresh.") from e
    if "X" not in entry or "y" not in entry:
        found = sorted(k for k in entry if not k.startswith("__"))
        raise DatasetFormatError(f"{path}: expected the variables X and y, found {found}")
    x, y = entry["X"], np.asarray(entry["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (IMAGE_SIDE, IMAGE_SIDE, 3):
        raise DatasetFormatError(f"{path}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    if len(y) != x.shape[3] or not np.issubdtype(y.dtype, np.number) or len(y) == 0:
        raise DatasetFormatError(f"{path}: y has {len(y)} labels for {x.shape[3]} images, expected one each")
    labels = y.astype(np.int64)
    if labels.min() < 1 or labels.max() > ZERO_LABEL:
        raise DatasetFormatError(f"{path}: labels span {labels.min()}..{labels.max()}, expected 1..10 (10 = digit 0)")
    labels[labels == ZERO_LABEL] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


def _advice(folder: Path, splits: list[str]) -> str:
    files = ", ".join(f"{SVHN_FILES[s].filename} (MD5 {SVHN_FILES[s].md5}, from {SVHN_FILES[s].url})" for s in splits)
    return (f"point --data-root DIR or SSL_BENCH_DATA=DIR at the folder that holds {FOLDER}/, or put {files} "
            f"into {folder}")


def svhn_files(root: Path, splits: tuple[str, ...], download: bool) -> dict[str, Path]:
    """The paths of the official files of ``splits`` under ``root/svhn``, downloading the missing ones."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetNotFoundError(f"svhn: the data root {root} is a file, expected a folder; fix --data-root / "
                                   "SSL_BENCH_DATA.")
    folder = root / FOLDER
    paths = {s: folder / SVHN_FILES[s].filename for s in splits}
    missing = [s for s in splits if not paths[s].is_file()]
    if missing and not download:
        names = ", ".join(SVHN_FILES[s].filename for s in missing)
        raise DatasetNotFoundError(
            f"svhn: official files not found: {folder} lacks {names}. Fix: allow the download (remove "
            f"--no-download; in Python load_dataset(..., download=True)), or {_advice(folder, missing)}.")
    for s in missing:
        spec = SVHN_FILES[s]
        obtain_official("svhn", f"{paths[s]} is missing.", spec, paths[s], extract=False,
                        advice=_advice(folder, [s]))
    return paths


def official_sizes(splits: tuple[str, ...]) -> str:
    """The official sizes in words (``73257 training images in train_32x32.mat, 26032 test images in ...``)."""
    return ", ".join(f"{SVHN_IMAGES[s]} {SPLIT_WORDS[s]} images in {SVHN_FILES[s].filename}" for s in splits)


def read_official(name: str, paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_mat` of one split's file, refused unless it holds the official number of images."""
    x, y = read_mat(paths[split])
    download = ", ".join(f"{SVHN_FILES[s].filename} (MD5 {SVHN_FILES[s].md5})" for s in paths)
    check_official_count(name, paths[split], len(x), SVHN_IMAGES[split], official_sizes(tuple(paths)), download)
    return x, y


def load_svhn_arrays(root: Path, with_extra: bool, download: bool = True) -> dict[str, np.ndarray | str]:
    """The arrays of ``svhn`` (``with_extra=False``) or ``svhn_extra``; downloads missing files first.

    Each file must hold the official number of images (:data:`SVHN_IMAGES`), else :class:`DatasetFormatError`.
    train + extra are written into one preallocated array, so the peak is the result plus one file's arrays.
    """
    name = "svhn_extra" if with_extra else "svhn"
    splits = ("train", "test", "extra") if with_extra else ("train", "test")
    paths = svhn_files(root, splits, download)
    x_test, y_test = read_official(name, paths, "test")
    x_train, y_train = read_official(name, paths, "train")
    if with_extra:
        x_extra, y_extra = read_official(name, paths, "extra")
        x = np.empty((len(x_train) + len(x_extra), *x_train.shape[1:]), np.uint8)
        x[:len(x_train)], x[len(x_train):] = x_train, x_extra
        del x_extra
        x_train, y_train = x, np.concatenate([y_train, y_extra])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "source": str(paths["train"].parent)}
