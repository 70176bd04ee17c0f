"""One entry point for every data set: ``load_dataset(name, root, download)``, and where the data root is.

Names:
    a registered name          :data:`ssl_bench.data.registry.DATASETS`: ``cifar10``, ``cifar100``, ``svhn``,
                               ``svhn_extra``, ``stl10`` (official files, downloaded into the data root when
                               missing, unless ``download=False``), ``digits`` (embedded in scikit-learn),
                               ``cifar10_subset`` (``<root>/cifar10_subset.npz``)
    ``imagefolder:PATH[@SIZE]`` a folder of images (:mod:`ssl_bench.data.imagefolder`)
    any other name             ``<root>/<name>.npz`` (:mod:`ssl_bench.data.npz`)
    a path                     a ``.npz`` file (any file name, e.g. ``./foo/bar.npz``), or an official CIFAR
                               folder (``.../cifar-10-batches-py``); other folders are refused with the fix

A name is a path when it ends in ``.npz``, contains a path separator, or starts with ``.`` or ``~``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ssl_bench.errors import UserError

from .base import DatasetFormatError, DatasetNotFoundError, ImageDataset, file_kind
from .cifar import CIFAR_SPECS, load_cifar
from .imagefolder import PREFIX as IMAGEFOLDER_PREFIX
from .imagefolder import load_imagefolder_arrays
from .npz import REQUIRED_KEYS, load_npz
from .registry import DATASETS

DATA_ROOT_ENV = "SSL_BENCH_DATA"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
CACHE_DIR_NAME = "ssl-bench"
# how the checkout's pyproject.toml names the project (a regex: tomllib is not in Python 3.10)
PROJECT_NAME = re.compile(r"""^name\s*=\s*["']ssl-bench["']\s*$""", re.MULTILINE)


def source_checkout() -> Path | None:
    """The ssl-bench source checkout this package is imported from, or ``None`` for an installed package.

    A checkout (or an editable install) has the project's ``pyproject.toml`` beside the ``ssl_bench`` package;
    a wheel installed into site-packages does not.
    """
    repo = PACKAGE_DIR.parent
    pyproject = repo / "pyproject.toml"
    try:
        if pyproject.is_file() and PROJECT_NAME.search(pyproject.read_text(encoding="utf-8")):
            return repo
    except (OSError, UnicodeDecodeError):
        pass
    return None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ssl-bench``, or ``~/.cache/ssl-bench`` when that is unset or not absolute."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # the XDG base directory spec says a relative path is invalid and must be ignored
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / CACHE_DIR_NAME


def default_data_root() -> Path:
    """``<checkout>/datasets`` in a source checkout (git-ignored apart from its README), else the user-level
    :func:`user_cache_dir`, so that an installed package works from any directory."""
    repo = source_checkout()
    return repo / "datasets" if repo is not None else user_cache_dir()


def resolve_data_root(root: str | Path | None = None) -> Path:
    """The data root, first that applies:

    1. ``root`` (the CLI's ``--data-root``), if given and not empty;
    2. ``$SSL_BENCH_DATA``, if set and not empty;
    3. ``<checkout>/datasets`` when ssl-bench runs from its source checkout (``pyproject.toml`` of ssl-bench
       beside the package; editable installs included);
    4. otherwise ``$XDG_CACHE_HOME/ssl-bench`` or ``~/.cache/ssl-bench``.

    ``~`` is expanded; the folder is not created here (a download creates it).
    """
    if root is not None and str(root).strip():
        return Path(root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return default_data_root()


def builtin_names() -> list[str]:
    """The registered data sets that need no ``.npz`` (official files or embedded), sorted."""
    return sorted(n for n, d in DATASETS.items() if d.layout != (f"{n}.npz",))


def list_datasets(root: str | Path | None = None) -> list[str]:
    """Names ``load_dataset`` accepts with this root: the built-in ones and each ``<root>/*.npz`` data set."""
    folder = resolve_data_root(root)
    found = []
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        if not path.is_file():
            continue   # a FIFO or device named *.npz is never opened (it would block or never end)
        try:
            with np.load(path, allow_pickle=False) as npz:  # reads only the zip directory
                # files without the four arrays (e.g. cifar_labels.npz, labels only) are not data sets
                if set(REQUIRED_KEYS) <= set(npz.files) and path.stem not in builtin_names():
                    found.append(path.stem)
        except (OSError, ValueError, AttributeError, TypeError):
            continue  # unreadable, or a bare .npy under a .npz name: load_dataset(name) would report why
    return builtin_names() + found


def is_path_like(name: str) -> bool:
    """Whether ``--dataset`` was given a path rather than a name (module docstring)."""
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return name.endswith(".npz") or any(s in name for s in seps) or name.startswith((".", "~"))


def load_from_path(name: str, download: bool = True) -> ImageDataset:
    """A data set given by path: a ``.npz`` file, or an official CIFAR folder (its parent is the root)."""
    path = Path(name).expanduser()
    if path.is_dir():
        for spec in CIFAR_SPECS.values():
            if path.name == spec.folder:
                return load_cifar(spec.name, path.parent, download=download)
        inside = [spec for spec in CIFAR_SPECS.values() if (path / spec.folder).is_dir()]
        if inside:
            hint = f"it holds {inside[0].folder}/, so use --data-root {path} --dataset {inside[0].name}"
        else:
            hint = "give the path of a .npz file, or use --data-root DIR --dataset NAME for DIR/NAME.npz"
        raise DatasetNotFoundError(
            f"--dataset {name}: {path} is a folder, expected a data set name (cifar10, cifar100, digits, or "
            f"<name> for <data root>/<name>.npz) or the path of a .npz file; {hint}.")
    if not path.exists():
        raise DatasetNotFoundError(
            f"--dataset {name}: {path} does not exist; expected a data set name (cifar10, cifar100, digits, "
            "or <name> for <data root>/<name>.npz) or the path of an existing .npz file.")
    if not path.is_file():   # never opened: a FIFO blocks until someone writes, /dev/zero never ends
        raise DatasetFormatError(
            f"--dataset {name}: {path} is {file_kind(path)}, not a data file; expected a data set name (cifar10, "
            "cifar100, digits, or <name> for <data root>/<name>.npz) or the path of a regular .npz file "
            "(np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)).")
    return load_npz(path)


def load_imagefolder(name: str) -> ImageDataset:
    """``imagefolder:PATH[@SIZE]`` as an :class:`ImageDataset` (no family; mirrored; kind ``"folder"``)."""
    try:
        arrays = load_imagefolder_arrays(name)
    except ValueError as e:
        if type(e) is ValueError:  # the syntax of the name, not the content (DatasetFormatError)
            raise DatasetNotFoundError(str(e)) from e
        raise
    source, num_classes = arrays.pop("source"), arrays.pop("num_classes")
    return ImageDataset(name=name, **arrays, num_classes=int(num_classes), kind="folder", family=None,
                        source=str(source), hflip=True)


def load_dataset(name: str, root: str | Path | None = None, download: bool = True) -> ImageDataset:
    """Load a data set by name or path (see the module docstring for the names).

    Args:
        name: a registered name (``cifar10``, ``cifar100``, ``svhn``, ``svhn_extra``, ``stl10``, ``digits``,
            ``cifar10_subset``), ``imagefolder:PATH[@SIZE]``, the stem of ``<root>/<name>.npz``, or a path to a
            ``.npz`` (or to an official CIFAR folder).
        root: data root; resolved by :func:`resolve_data_root` (``root`` > ``$SSL_BENCH_DATA`` >
            ``<checkout>/datasets`` > the user cache folder). Not used for a name that is a path.
        download: for the official data sets only: when files are missing, fetch the official files into
            the data root (MD5-checked, atomic). True by default; False (``--no-download``) reports the
            missing files instead. Other data sets have nothing to download; the flag is ignored for them.

    Raises:
        DatasetNotFoundError (a FileNotFoundError): the files are missing (or cannot be downloaded); the
            message names the expected path and the ways to provide them.
        DatasetFormatError (a ValueError): the files exist but are not valid.
        ChecksumError (a ValueError): a downloaded archive does not have the published MD5.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"data set name must be a non-empty string, got {name!r}; "
                        f"try one of {builtin_names()}")
    if name in DATASETS:
        return DATASETS[name].load(resolve_data_root(root), download)
    if name.startswith(IMAGEFOLDER_PREFIX):
        return load_imagefolder(name)
    if is_path_like(name):
        return load_from_path(name, download=download)
    folder = resolve_data_root(root)
    path = folder / f"{name}.npz"
    if not path.exists():   # a FIFO or device of that name is reported as what it is by load_npz, never opened
        import difflib  # issue 26: "did you mean" for a mistyped name

        close = difflib.get_close_matches(name, list_datasets(folder), n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise DatasetNotFoundError(
            f"unknown data set {name!r}: {hint}it is not built in and {path} does not exist. "
            f"Available with data root {folder}: {', '.join(list_datasets(folder))}. Your own data: save "
            "x_train, y_train, x_test, y_test with np.savez as <name>.npz in the data root (--data-root DIR "
            f"or {DATA_ROOT_ENV}=DIR), or pass the path of the .npz itself.")
    return load_npz(path, name=name)
