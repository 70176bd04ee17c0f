"""Bring your own images: ``--dataset imagefolder:PATH`` or ``imagefolder:PATH@SIZE``.

Layout (class names are folder names, sorted: the k-th name is class k)::

    PATH/train/<class>/*.png|jpg|jpeg     labelled training images (at least two classes)
    PATH/test/<class>/*.png|jpg|jpeg      test images; every class folder must also be in train/
    PATH/unlabeled/**/*.png|jpg|jpeg      optional: images without labels, added to the unlabelled pool

Every image is decoded once with Pillow, converted to RGB, its shorter side resized to SIZE pixels (bicubic,
which Pillow antialiases when it shrinks) and the centre SIZE x SIZE square kept, so no image is stretched.
SIZE defaults to 32 (the CIFAR models' input). The uint8 arrays are cached as
``PATH/.ssl-bench-cache-<SIZE>px-<hash>.npz``, where the hash covers every image's path, size and
modification time and the SIZE: a later run with the same files loads the cache, and any added, removed or
edited image (or another SIZE) makes a new one. If PATH is not writable the arrays are rebuilt every time (a
warning says so). The data set's name is the ``--dataset`` string; it has no family (no paper reference
applies) and is mirrored by the weak augmentation (for images with a handedness, pack an ``.npz`` with
``hflip=False``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .base import DatasetFormatError, DatasetNotFoundError

PREFIX = "imagefolder:"
DEFAULT_SIZE = 32
SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_FORMAT = 1  # part of the cache key: bump when the decoding or the cache layout changes


def parse(spec: str) -> tuple[Path, int]:
    """``imagefolder:PATH[@SIZE]`` -> (PATH, SIZE); raises ValueError naming the expected form."""
    body = spec[len(PREFIX):]
    path, size = body, DEFAULT_SIZE
    if "@" in body:
        path, _, tail = body.rpartition("@")
        if not tail.isdigit() or int(tail) < 8:
            raise ValueError(f"--dataset {spec}: the image size after '@' must be an integer >= 8 (pixels), got "
                             f"{tail!r}; e.g. imagefolder:{path}@32")
        size = int(tail)
    if not path:
        raise ValueError(f"--dataset {spec}: expected imagefolder:PATH or imagefolder:PATH@SIZE, e.g. "
                         "imagefolder:./my_images@64")
    return Path(path).expanduser(), size


def short_name(spec: str) -> str:
    """A file-name-safe label for run directories: ``imagefolder:~/data/pets@64`` -> ``imagefolder_pets@64``."""
    path, size = parse(spec)
    return f"imagefolder_{path.resolve().name or 'root'}@{size}"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def _listing(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]], list[Path]]:
    """(class names, {"train"/"test": [(image, class)]}, unlabelled images), every problem as one line."""
    train = root / "train"
    if not train.is_dir():
        what = "does not exist" if not root.exists() else "has no train/ folder"
        raise DatasetNotFoundError(
            f"imagefolder: {root} {what}; expected {root}/train/<class>/*.png|jpg (and test/<class>/, optional "
            "unlabeled/): one folder per class.")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetFormatError(f"imagefolder: {train} has {len(classes)} class folder(s) {classes}, expected at "
                                 "least 2 (one folder of images per class).")
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DatasetNotFoundError(f"imagefolder: {folder} not found; expected test images in "
                                       f"{folder}/<class>/ with the class folders of train/ ({', '.join(classes)}).")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DatasetFormatError(f"imagefolder: {folder} has class folder(s) {unknown} that train/ lacks; "
                                     f"the classes are train/'s: {', '.join(classes)}.")
        splits[split] = [(p, k) for k, c in enumerate(classes) if (folder / c).is_dir() for p in _images(folder / c)]
        if not splits[split]:
            raise DatasetFormatError(f"imagefolder: {folder} holds no .png/.jpg/.jpeg image in its class folders.")
    unlabeled = _images(root / "unlabeled") if (root / "unlabeled").is_dir() else []
    return classes, splits, unlabeled


def _cache_key(root: Path, size: int, paths: list[Path]) -> str:
    h = hashlib.sha256(f"ssl-bench imagefolder v{CACHE_FORMAT} {size}px\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def decode(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 (size, size, 3): RGB, shorter side resized to ``size``, centre square."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            new = (max(size, round(w * scale)), max(size, round(h * scale)))
            img = img.resize(new, Image.Resampling.BICUBIC)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetFormatError(f"imagefolder: {path} is not a readable image ({type(e).__name__}: {e}); "
                                 "remove or replace it.") from e


def _stack(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        out[i] = decode(p, size)
    return out


def load_imagefolder_arrays(spec: str) -> dict[str, object]:
    """The arrays of ``imagefolder:PATH[@SIZE]``, from the cache when the files are unchanged."""
    root, size = parse(spec)
    classes, splits, unlabeled = _listing(root)
    every = [p for s in ("train", "test") for p, _ in splits[s]] + unlabeled
    cache = root / f".ssl-bench-cache-{size}px-{_cache_key(root, size, every)}.npz"
    labels = {s: np.array([k for _, k in splits[s]], np.int64) for s in splits}
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if np.array_equal(arrays["y_train"], labels["train"]) and np.array_equal(arrays["y_test"], labels["test"]):
                return {**arrays, "num_classes": len(classes), "source": f"{root} (cache {cache.name})"}
        except (OSError, ValueError, KeyError):
            pass  # an unreadable cache is rebuilt below
    arrays = {"x_train": _stack([p for p, _ in splits["train"]], size), "y_train": labels["train"],
              "x_test": _stack([p for p, _ in splits["test"]], size), "y_test": labels["test"]}
    if unlabeled:
        arrays["x_unlabeled"] = _stack(unlabeled, size)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".ssl-bench-cache-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old state or the whole cache
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        print(f"ssl-bench: could not cache the decoded images in {root} ({e.strerror or e}); they are decoded "
              "again next time", file=sys.stderr)
    return {**arrays, "num_classes": len(classes), "source": str(root)}
