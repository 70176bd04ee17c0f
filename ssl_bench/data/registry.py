"""The data sets ssl-bench knows by name, and the families that decide which published settings apply.

A **family** is the benchmark a data set belongs to: it selects the algorithms' reference settings
(``reference[family]`` in ``algorithms/*.py``), the default model, and the label budgets (and numbers) of the
published tables. A data set's family is *declared*, never guessed from its name: by its entry here, or by a
user ``.npz``'s ``family`` member (``ssl_bench/data/npz.py``); everything else has none (``None``: the
``"*"`` reference settings, the default model of no family, no paper columns).

Every registered data set declares its name, family, classes, image size, whether a mirrored image keeps its
label, and how it is obtained (URLs, MD5s, file layout); ``load`` builds it through its module's reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import ImageDataset
from .cifar import CIFAR_SPECS, load_cifar
from .download import RemoteFile
from .embedded import load_digits
from .splits import TABLE6_BUDGETS, LabelSplit, fold_split, make_split
from .stl10 import STL10_ARCHIVE, load_stl10_arrays
from .svhn import SVHN_FILES, load_svhn_arrays

# Tables whose label budgets (columns) ssl-bench reproduces.
SE_TABLE6 = "spatial_ensemble_table6"  # Huang et al., NeurIPS 2021, Table 6 (ssl_bench/paper_table6.json)
FIXMATCH_TABLE2 = "fixmatch_table2"     # Sohn et al., NeurIPS 2020, Table 2 (ssl_bench/data/fixmatch_table2.json)


@dataclass(frozen=True)
class Family:
    """A benchmark: its default model (with the source) and the label budgets of the published tables."""

    name: str
    default_model: str
    model_source: str
    budgets: dict[str, tuple[int, ...]] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("cifar10", "wrn28_2", "FixMatch paper Sec. 4.1: WRN-28-2 for CIFAR-10 (fixmatch.py defaults: filters 32, "
           "repeat 4, scales = ilog2(32) - 2 = 3)",
           {SE_TABLE6: TABLE6_BUDGETS["cifar10"], FIXMATCH_TABLE2: (40, 250, 4000)}),
    Family("cifar100", "wrn28_8", "FixMatch paper Sec. 4.1: WRN-28-8 for CIFAR-100 (filters 128)",
           {SE_TABLE6: TABLE6_BUDGETS["cifar100"], FIXMATCH_TABLE2: (400, 2500, 10000)}),
    Family("svhn", "wrn28_2", "FixMatch paper Sec. 4.1: WRN-28-2 for SVHN (fixmatch.py defaults, 32 px: scales 3)",
           {FIXMATCH_TABLE2: (40, 250, 1000)}),
    Family("svhn_extra", "wrn28_2", "USB classic_cv configs fixmatch_svhn_*: wrn_28_2 (as svhn)"),
    # fixmatch.py: scales=FLAGS.scales or (log_width - 2) with log_width = utils.ilog2(96) = ceil(log2 96) = 7,
    # so the reference's STL-10 network has 5 scales (32..512 channels) of repeat=4 blocks: wrn28_2_s5.
    Family("stl10", "wrn28_2_s5", "google-research/fixmatch fixmatch.py: filters 32, repeat 4, scales = "
           "ilog2(96) - 2 = 5 at 96 px (libml/models.py ResNet)",
           {FIXMATCH_TABLE2: (1000,)}),
)}
NO_FAMILY_MODEL = "wrn28_2"  # data sets without a family get the CIFAR-10 network (32 px, any number of classes)


@dataclass(frozen=True)
class DatasetSpec:
    """One named data set: what it is, how it is obtained, and the function that loads it from a data root."""

    name: str
    family: str | None
    num_classes: int
    image_size: int
    hflip: bool          # True when a mirrored image keeps its label (the weak augmentation may flip)
    kind: str            # ImageDataset.kind
    obtained: str        # one sentence: where the files come from
    layout: tuple[str, ...]   # paths under the data root once in place
    files: tuple[RemoteFile, ...] = ()
    # how create_split.py distributes a budget over the classes (ssl_bench/data/splits.py): "balanced", or
    # "distribution" with the reference's class order (which decides ties)
    allocation: str = "balanced"
    class_order: tuple[int, ...] | None = None
    loader: Callable[[Path, bool], dict[str, Any] | ImageDataset] | None = field(default=None, repr=False)

    def load(self, root: Path, download: bool = True) -> ImageDataset:
        """Load from ``root`` (downloading missing files when ``download``), as this entry declares."""
        got = self.loader(root, download)
        if isinstance(got, ImageDataset):
            ds = got
        else:
            arrays = dict(got)
            source = arrays.pop("source")
            ds = ImageDataset(name=self.name, **arrays, num_classes=self.num_classes, kind=self.kind,
                              family=self.family, source=source, hflip=self.hflip)
        if (ds.family, ds.hflip, ds.num_classes, ds.kind) != (self.family, self.hflip, self.num_classes, self.kind):
            raise AssertionError(f"registry entry {self.name!r} and its loader disagree")  # a code bug, not user data
        return ds


def _cifar_files(name: str) -> tuple[RemoteFile, ...]:
    spec = CIFAR_SPECS[name]
    return (RemoteFile(spec.url, spec.md5, spec.url_env),)


def _npz(root: Path, download: bool, name: str) -> ImageDataset:
    from .npz import load_npz  # npz reads the registry's families: imported when used, no import cycle

    return load_npz(Path(root) / f"{name}.npz", name=name, declared=DATASETS[name])


DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (
    DatasetSpec("cifar10", "cifar10", 10, 32, True, "full",
                "official 'python version' tarball (https://www.cs.toronto.edu/~kriz/cifar.html), downloaded",
                ("cifar-10-batches-py/data_batch_1..5", "cifar-10-batches-py/test_batch"), _cifar_files("cifar10"),
                loader=lambda root, download: load_cifar("cifar10", root, download=download)),
    DatasetSpec("cifar100", "cifar100", 100, 32, True, "full",
                "official 'python version' tarball (https://www.cs.toronto.edu/~kriz/cifar.html), downloaded",
                ("cifar-100-python/train", "cifar-100-python/test"), _cifar_files("cifar100"),
                loader=lambda root, download: load_cifar("cifar100", root, download=download)),
    DatasetSpec("cifar10_subset", "cifar10", 10, 32, True, "subset",
                "cifar10_subset.npz in the data root: the leading images of each official CIFAR-10 batch file "
                "(5,482 train, 1,017 test; shipped in /work/shared/data, see its README)",
                ("cifar10_subset.npz",), (), loader=lambda root, download: _npz(root, download, "cifar10_subset")),
    DatasetSpec("digits", None, 10, 32, False, "embedded",
                "scikit-learn's load_digits (ships with scikit-learn), 8x8 -> 32x32 RGB",
                (), (), loader=lambda root, download: load_digits()),
    DatasetSpec("svhn", "svhn", 10, 32, False, "full",
                "official train/test .mat files (http://ufldl.stanford.edu/housenumbers/), downloaded; train "
                "only, the FixMatch paper's svhn_noextra",
                ("svhn/train_32x32.mat", "svhn/test_32x32.mat"), (SVHN_FILES["train"], SVHN_FILES["test"]),
                # create_split.py distributes the labels like the classes; its class c is the label c + 1 of the
                # .mat, i.e. the digits 1..9, 0 (ssl-bench's class k is the digit k)
                allocation="distribution", class_order=(1, 2, 3, 4, 5, 6, 7, 8, 9, 0),
                loader=lambda root, download: load_svhn_arrays(root, with_extra=False, download=download)),
    DatasetSpec("svhn_extra", "svhn_extra", 10, 32, False, "full",
                "official train/test/extra .mat files, downloaded; train + extra (604,388 images) as USB",
                ("svhn/train_32x32.mat", "svhn/extra_32x32.mat", "svhn/test_32x32.mat"), tuple(SVHN_FILES.values()),
                # USB: lb_samples_per_class = num_labels / num_classes (semilearn/datasets/utils.py), balanced
                loader=lambda root, download: load_svhn_arrays(root, with_extra=True, download=download)),
    DatasetSpec("stl10", "stl10", 10, 96, True, "full",
                "official binary tarball (http://ai.stanford.edu/~acoates/stl10/), downloaded; 5,000 labelled, "
                "100,000 unlabelled (memory-mapped), 8,000 test images",
                tuple(f"stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
                                                    "unlabeled_X.bin", "fold_indices.txt")), (STL10_ARCHIVE,),
                loader=lambda root, download: load_stl10_arrays(root, download=download)),
)}


def split_for(dataset: ImageDataset, num_labels: int, seed: int) -> LabelSplit:
    """The label split of ``dataset`` as the reference draws it for this data set (ssl_bench/data/splits.py).

    A budget equal to the fold size of a data set with official folds (STL-10, 1000): fold ``seed``. A
    registered data set that distributes labels like its classes (SVHN): ``allocation="distribution"``.
    Everything else: the class-balanced draw.
    """
    if dataset.folds is not None and num_labels == dataset.folds.shape[1]:
        return fold_split(dataset.folds, seed, len(dataset.y_train), dataset.num_classes)
    spec = DATASETS.get(dataset.name)
    registered = spec is not None and (spec.kind, spec.family) == (dataset.kind, dataset.family)
    return make_split(dataset.y_train, num_labels, dataset.num_classes, seed,
                      allocation=spec.allocation if registered else "balanced",
                      class_order=spec.class_order if registered else None)


def family(name: str) -> Family | None:
    """The :class:`Family` called ``name`` (``None`` for ``None``); raises ValueError naming the known ones."""
    if name is None:
        return None
    if name not in FAMILIES:
        raise ValueError(f"unknown data set family {name!r}; known families: {', '.join(FAMILIES)} (or none)")
    return FAMILIES[name]


def default_model(family_name: str | None) -> str:
    """The reference's model for a family (:data:`FAMILIES`), :data:`NO_FAMILY_MODEL` without one."""
    found = family(family_name)
    return NO_FAMILY_MODEL if found is None else found.default_model


def declared_npz_family(path: Path) -> str | None:
    """The ``family`` member of the ``.npz`` at ``path`` (read alone, unpickled never), or ``None``.

    A missing or unreadable file gives ``None`` here: loading it reports what is wrong. Only a regular file is
    opened (a FIFO would block, a device never end).
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "family" not in getattr(npz, "files", ()):
                return None
            value = npz["family"]
    except (OSError, ValueError, EOFError):
        return None
    from .npz import check_family  # the one place that validates the member

    return check_family(path, value)


def family_of(dataset: str, root: str | Path | None = None) -> str | None:
    """The declared family of ``--dataset`` without loading its images (for the settings and dry runs).

    A registered name: its entry's. ``imagefolder:...``: none. A user ``.npz`` (a name in the data root, or a
    path): its ``family`` member, or none; the file name is never read as a family.
    """
    from .imagefolder import PREFIX
    from .load import is_path_like, resolve_data_root

    if dataset in DATASETS:
        return DATASETS[dataset].family
    if dataset.startswith(PREFIX):
        return None
    if not is_path_like(dataset):
        return declared_npz_family(resolve_data_root(root) / f"{dataset}.npz")
    path = Path(dataset).expanduser()
    for spec in CIFAR_SPECS.values():  # an official CIFAR folder given by path is that data set
        if path.name == spec.folder and path.is_dir():
            return DATASETS[spec.name].family
    return declared_npz_family(path) if path.suffix == ".npz" else None


__all__ = ["DATASETS", "FAMILIES", "FIXMATCH_TABLE2", "SE_TABLE6", "DatasetSpec", "Family", "default_model",
           "family", "family_of", "split_for"]
