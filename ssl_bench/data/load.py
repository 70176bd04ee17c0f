"""One entry point for every data set: ``load_dataset(name, root, download)``, and where the data root is.

Names:
    ``cifar10``, ``cifar100``   official "python version" files, torchvision layout (:mod:`ssl_bench.data.cifar`)
    ``digits``                  embedded in scikit-learn, needs no files (:mod:`ssl_bench.data.embedded`)
    any other name              ``<root>/<name>.npz`` (:mod:`ssl_bench.data.npz`)
    a path ending in ``.npz``   that file
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, ImageDataset
from .cifar import CIFAR_SPECS, load_cifar
from .embedded import EMBEDDED
from .npz import REQUIRED_KEYS, load_npz

DATA_ROOT_ENV = "SSL_BENCH_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO_ROOT / "datasets"  # git-ignored apart from its README


def resolve_data_root(root: str | Path | None = None) -> Path:
    """The data root: ``root`` (``--data-root``) if given, else ``$SSL_BENCH_DATA`` if set, else ``<repo>/datasets``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_ROOT


def builtin_names() -> list[str]:
    return sorted(CIFAR_SPECS) + sorted(EMBEDDED)


def list_datasets(root: str | Path | None = None) -> list[str]:
    """Names ``load_dataset`` accepts with this root: the built-in ones and every ``<root>/*.npz`` data set."""
    folder = resolve_data_root(root)
    found = []
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(path, allow_pickle=False) as npz:  # reads only the zip directory
                # files without the four arrays (e.g. cifar_labels.npz, labels only) are not data sets
                if set(REQUIRED_KEYS) <= set(npz.files) and path.stem not in builtin_names():
                    found.append(path.stem)
        except (OSError, ValueError):
            continue  # unreadable: load_dataset(name) would report why
    return builtin_names() + found


def load_dataset(name: str, root: str | Path | None = None, download: bool = False) -> ImageDataset:
    """Load a data set by name (see the module docstring for the names).

    Args:
        name: ``cifar10``, ``cifar100``, ``digits``, the stem of ``<root>/<name>.npz``, or a path to a ``.npz``.
        root: data root; resolved by :func:`resolve_data_root` (``root`` > ``$SSL_BENCH_DATA`` > ``<repo>/datasets``).
        download: for ``cifar10`` / ``cifar100`` only: fetch the official archive into the root if files are
            missing. Other data sets have nothing to download; the flag is ignored for them.

    Raises:
        DatasetNotFoundError (a FileNotFoundError): the files are missing; the message names the expected path and
            the ways to provide them.
        DatasetFormatError (a ValueError): the files exist but are not valid.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"data set name must be a non-empty string, got {name!r}; try one of {builtin_names()}")
    if name.endswith(".npz"):
        return load_npz(Path(name))
    if name in CIFAR_SPECS:
        return load_cifar(name, resolve_data_root(root), download=download)
    if name in EMBEDDED:
        return EMBEDDED[name]()
    folder = resolve_data_root(root)
    path = folder / f"{name}.npz"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"unknown data set {name!r}: it is not built in and {path} does not exist.\n"
            f"Available with data root {folder}: {', '.join(list_datasets(folder))}.\n"
            "Built in: cifar10, cifar100 (official files; --download fetches them), digits (no files needed). "
            "Your own data: save x_train, y_train, x_test, y_test with np.savez as <name>.npz in the data root "
            f"(--data-root DIR or {DATA_ROOT_ENV}=DIR), or pass the path of the .npz itself.")
    return load_npz(path, name=name)
