"""Bring your own data: a ``.npz`` file with train and test images and labels.

Format (``np.savez`` / ``np.savez_compressed``)::

    x_train      uint8 (N, H, W, 3)  HWC RGB images, pixels 0..255, N >= 1
    y_train      int   (N,)          class indices 0..K-1 (any integer dtype), at least 2 classes
    x_test       uint8 (M, H, W, 3)  same H, W as x_train, M >= 1
    y_test       int   (M,)
    num_classes  int scalar          optional; default max(y_train) + 1; at least 2
    hflip        bool scalar         optional; default True. Whether a horizontally mirrored image keeps
                                     its label, i.e. whether the weak augmentation may flip it: False for
                                     digits, letters, anything with a handedness (the reference augments
                                     SVHN by shifts only); True for natural photographs (CIFAR). 0 / 1 work.

Example: ``np.savez("datasets/mydigits.npz", x_train=..., y_train=..., x_test=..., y_test=..., hflip=False)``.

Every member must be a numeric array: the file is opened with ``allow_pickle=False``, so object arrays (which
could run code when unpickled) are refused without being unpickled, and so are strings and other non-numeric
members, each with the member's name. The models of the benchmark take 32x32 images; other sizes load, and it
is up to the model whether it accepts them.

    family       str scalar          optional; the benchmark the data stands in for, one of the registry's
                                     families (ssl_bench/data/registry.py: cifar10, cifar100, svhn, svhn_extra,
                                     stl10), e.g. family="cifar10" for a CIFAR-10 subset: its reference settings,
                                     default model and paper columns then apply. Without it the data set has no
                                     family. The file name is never read as one: cifar10_noisy.npz without a
                                     family member gets none of CIFAR-10's settings.

Naming: ``<root>/<name>.npz`` is found by ``load_dataset(name)``; the path of a ``.npz`` works too. Its kind
is ``"npz"``; registered ``.npz`` data sets (``cifar10_subset``) take name, kind and family from the registry.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .base import MIN_CLASSES, DatasetFormatError, DatasetNotFoundError, ImageDataset, file_kind

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_KEYS = ("num_classes", "hflip", "family")
TEXT_KEYS = ("family",)  # the one member that may be a (unicode, never pickled) string
NUMERIC_KINDS = "biufc"  # numpy dtype kinds: bool, signed, unsigned, float, complex
# Stated maxima, checked from the members' .npy headers before any array is read (a forged header claiming a
# 2.8 TiB array would otherwise be an allocation error): far above every data set the benchmark reads.
MAX_MEMBER_BYTES = 2**36   # 64 GiB per array (SVHN + extra's 604,388 32x32x3 images are 1.9 GB)
MAX_IMAGE_SIDE = 4096      # pixels (STL-10's are 96, ImageNet's are resized to 224 or so)
MAX_CLASSES = 100_000      # ImageNet-21k has 21,841
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def check_headers(path: Path) -> None:
    """Every ``.npy`` member's header (shape and dtype), read without reading its data: the bytes it claims must
    be in the archive and under ``MAX_MEMBER_BYTES``, and images must be 1 to ``MAX_IMAGE_SIDE`` pixels a side.

    Raises:
        DatasetFormatError: naming the file, the member and the claimed shape.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        return   # not a zip archive: read_members says what it is
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            try:
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in _HEADER_READERS:
                        continue   # a newer header format: read_members reads (and checks) it
                    shape, _, dtype = _HEADER_READERS[version](f)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise DatasetFormatError(f"{path}: member {key!r} has no readable .npy header ({e}); the file is "
                                         "truncated or corrupted: save it again with np.savez.") from e
            if dtype.hasobject:
                continue   # refused by read_members without unpickling
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if claimed > MAX_MEMBER_BYTES or claimed > info.file_size:
                raise DatasetFormatError(
                    f"{path}: member {key!r} claims shape {tuple(shape)} of {dtype} ({claimed} bytes) but holds "
                    f"{info.file_size} bytes (limit {MAX_MEMBER_BYTES}); the file is forged or truncated: save it "
                    "again with np.savez.")
            if key in ("x_train", "x_test") and len(shape) == 4 and not all(
                    1 <= side <= MAX_IMAGE_SIDE for side in shape[1:3]):
                raise DatasetFormatError(
                    f"{path}: member {key!r} holds images of {shape[1]}x{shape[2]} pixels, expected 1 to "
                    f"{MAX_IMAGE_SIDE} pixels a side (the models take 32x32): resize the images.")


def check_family(path: Path, value: np.ndarray) -> str:
    """The ``family`` member as a registered family name; DatasetFormatError naming the known ones otherwise."""
    from .registry import FAMILIES

    if value.shape != () or value.dtype.kind != "U" or str(value) not in FAMILIES:
        shown = value.tolist() if value.size <= 4 else f"an array of shape {value.shape}"
        raise DatasetFormatError(
            f"{path}: member 'family' is {shown!r} ({value.dtype}), expected one of {', '.join(FAMILIES)} as a "
            "string, e.g. np.savez(..., family='cifar10'), or no family member (no reference settings apply).")
    return str(value)


def read_members(path: Path) -> dict[str, np.ndarray]:
    """Every member of the ``.npz`` at ``path``, each checked to be a numeric array, without unpickling.

    Raises:
        DatasetFormatError: not a readable .npz; a member that is an object array, not an array at all, or
            of a non-numeric dtype (strings, records); the message names the file and the member.
    """
    arrays: dict[str, np.ndarray] = {}
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:  # neither .npy nor .npz, or a pickle, which allow_pickle=False refuses unopened
        raise DatasetFormatError(f"{path}: not a .npz file ({e}); save the data with np.savez.") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetFormatError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}).") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array saved under a .npz name
        raise DatasetFormatError(
            f"{path}: holds a single array, expected a .npz archive of named arrays "
            f"{', '.join(REQUIRED_KEYS)}: save it with np.savez(path, x_train=..., y_train=..., ...).")
    with loaded as npz:
        for key in npz.files:
            try:
                value = npz[key]
            except ValueError as e:  # object arrays under allow_pickle=False, or a malformed .npy member
                if "pickle" in str(e):
                    raise DatasetFormatError(
                        f"{path}: member {key!r} is an object array, which only unpickling could read "
                        "(refused: it could run code); expected a numeric array. Save plain arrays (uint8 "
                        "images, integer labels), not Python objects.") from e
                raise DatasetFormatError(
                    f"{path}: member {key!r} is not a readable array ({e}); the file is truncated or "
                    "corrupted: save it again with np.savez.") from e
            except (OSError, zipfile.BadZipFile, EOFError) as e:  # truncated or corrupted archive
                raise DatasetFormatError(
                    f"{path}: member {key!r} is unreadable ({type(e).__name__}: {e}); the file is truncated "
                    "or corrupted: save it again.") from e
            if not isinstance(value, np.ndarray):
                raise DatasetFormatError(
                    f"{path}: member {key!r} is not a numpy array (a {type(value).__name__} file inside the "
                    "archive); expected only numeric arrays. Rebuild the file with np.savez.")
            if value.dtype.kind not in NUMERIC_KINDS and not (key in TEXT_KEYS and value.dtype.kind == "U"):
                raise DatasetFormatError(
                    f"{path}: member {key!r} has dtype {value.dtype}, expected a numeric array (bool, int, "
                    "float); remove it or convert it, e.g. class names to integer indices.")
            arrays[key] = value
    return arrays


def _hflip(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    if "hflip" not in arrays:
        return True  # natural images are the common case, and the CIFAR families mirror
    value = arrays["hflip"]
    if value.shape != () or value.dtype.kind not in "biu" or int(value) not in (0, 1):
        shown = value.tolist() if value.size <= 4 else f"an array of shape {value.shape}"
        raise DatasetFormatError(
            f"{path}: member 'hflip' is {shown!r} ({value.dtype}), expected a scalar bool: hflip=False when "
            "a mirrored image changes its label (digits, letters), hflip=True (the default) when it does "
            "not.")
    return bool(value)


def _num_classes(path: Path, arrays: dict[str, np.ndarray]) -> int:
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    if "num_classes" in arrays:
        declared = arrays["num_classes"]
        if declared.shape != () or declared.dtype.kind not in "iu":
            raise DatasetFormatError(
                f"{path}: member 'num_classes' is {declared.tolist()!r} ({declared.dtype}), expected an "
                "integer scalar (the number of classes, at least 2), e.g. np.savez(..., num_classes=10).")
        if int(declared) > MAX_CLASSES:   # too few is reported by ImageDataset's validation
            raise DatasetFormatError(f"{path}: member 'num_classes' is {int(declared)}, expected {MIN_CLASSES} to "
                                     f"{MAX_CLASSES}.")
        return int(declared)
    labels_ok = y_train.ndim == 1 and np.issubdtype(y_train.dtype, np.integer) and len(y_train) > 0
    if not labels_ok:
        return MIN_CLASSES  # placeholder: the validation reports what is wrong with y_train
    # at least 2, so that a training set of one class is reported as such rather than as "num_classes = 1"
    num_classes = max(int(y_train.max()) + 1, MIN_CLASSES)
    if num_classes > MAX_CLASSES:
        raise DatasetFormatError(f"{path}: y_train has label {int(y_train.max())}, so {num_classes} classes; at most "
                                 f"{MAX_CLASSES} are supported. Labels are class indices 0..K-1: renumber them.")
    if (int(y_train.min()) >= 0 and y_test.ndim == 1 and np.issubdtype(y_test.dtype, np.integer)
            and len(y_test) and int(y_test.max()) >= num_classes):
        raise DatasetFormatError(
            f"{path}: y_test has label {int(y_test.max())}, outside [0, {num_classes}) where num_classes = "
            f"max(y_train) + 1. Fix the labels, or store num_classes in the .npz if some "
            "classes have no training image.")
    return num_classes


def load_npz(path: str | Path, name: str | None = None, declared: Any = None) -> ImageDataset:
    """Load and validate a user ``.npz`` data set (format in the module docstring).

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetFormatError: unreadable file, a non-numeric or pickled member, missing keys, wrong dtype or
            shape, mismatched lengths, empty split, fewer than 2 classes, labels out of range, a bad ``hflip``,
            ``num_classes`` or ``family``; the message names the file, the member and what was expected.

    ``declared``: the registry's entry (a DatasetSpec) when the file is a registered data set; its kind,
    family and hflip then apply, and a ``family`` member must agree with it.
    """
    path = Path(path).expanduser()
    name = name or path.stem
    if not path.is_file():   # a device or FIFO is never opened: /dev/zero would never end, a FIFO blocks
        what = f"is {file_kind(path)}, not a .npz file" if path.exists() else "not found"
        raise DatasetNotFoundError(
            f"{name}: {path} {what}. A user data set is a .npz with arrays {', '.join(REQUIRED_KEYS)} "
            "(format: ssl_bench/data/npz.py); put it in the data root (--data-root / SSL_BENCH_DATA) as "
            "<name>.npz, or pass the path to the .npz itself.")
    check_headers(path)   # before any array is read
    arrays = read_members(path)
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DatasetFormatError(
            f"{path}: missing array(s) {', '.join(missing)}; found {sorted(arrays)}. "
            f"Expected {', '.join(REQUIRED_KEYS)} (optional: {', '.join(OPTIONAL_KEYS)}).")
    family = check_family(path, arrays["family"]) if "family" in arrays else None
    kind, hflip = "npz", _hflip(path, arrays)
    if declared is not None:
        if family not in (None, declared.family):
            raise DatasetFormatError(f"{path}: member 'family' is {family!r} but the registered data set {name!r} "
                                     f"is of family {declared.family!r}; remove the member or rename the file.")
        family, kind, hflip = declared.family, declared.kind, declared.hflip
    return ImageDataset(
        name=name, **{k: arrays[k] for k in REQUIRED_KEYS}, num_classes=_num_classes(path, arrays),
        kind=kind, family=family, source=str(path), hflip=hflip,
    )
