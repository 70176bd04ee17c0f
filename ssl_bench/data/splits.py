"""Label-budget splits: which training images keep their labels, a pure function of (labels, budget, seed).

Convention (FixMatch, Sohn et al., NeurIPS 2020, and its official code google-research/fixmatch):

* The labelled set is class-balanced: ``num_labels / num_classes`` images of every class ("40 labels" on
  CIFAR-10 = 4 per class). In the official ``scripts/create_split.py`` the images of each class are shuffled
  with the seed and the first ones taken, in proportion to the class distribution (uniform on CIFAR).
* The unlabelled set is the **whole** training set, labelled images included (their labels are not used).
  In the official code ``scripts/create_unlabeled.py`` writes every training record to
  ``<dataset>-unlabel.tfrecord`` once, independent of any split, and ``libml/data.py`` (``DataSets.creator``)
  pairs that same file with every ``<dataset>.<seed>@<size>-label.tfrecord``. (Its default ``valid=1`` holds
  out the first image of that stream; ssl-bench holds out nothing, since the benchmark reports test accuracy.)
* The fully-labelled ceiling: a budget equal to the training set size labels every training image, balanced
  or not (the supervised upper bound; e.g. ``--labels 5482`` on the CIFAR-10 subset, ``50000`` on CIFAR-10).

Draw used here (not index-compatible with the official TensorFlow splits, which used numpy's legacy global
RNG): one 64-bit key per training image is drawn from ``np.random.PCG64(seed)``'s raw output
(``random_raw``), and every class keeps its ``num_labels / num_classes`` images with the smallest keys (ties
by index). No global RNG is touched. Why the raw stream rather than ``Generator(PCG64(seed)).choice``: numpy's
random "Compatibility policy" allows ``Generator`` methods to change their streams in feature releases, while
the PCG64 docstring guarantees that a fixed seed always produces the same integer stream; a split must not
change when numpy is upgraded. As in the official code, budgets are nested: for one seed, the 40-label set
lies inside the 250-label set.

Two exceptions, both the reference's own protocol, chosen per data set by the registry
(:func:`ssl_bench.data.registry.split_for`):

* ``allocation="distribution"`` (SVHN): ``create_split.py`` does not balance the classes; it distributes the
  budget to match the class distribution of the training set ("Distribute labels to match the input
  distribution": a greedy loop that gives the next label to ``argmax(stats - npos / max(npos.max(), 1))``, with
  ``stats`` the class sizes over the largest). On SVHN's train set that is 3, 7, 6, 4, 4, 4, 3, 3, 3, 3 labels
  of the digits 0..9 for a budget of 40, not 4 each. :func:`distribution_counts` runs the same loop (in the
  reference's class order, which decides ties), then every class keeps its count of smallest keys.
* official folds (STL-10): with a budget of 1000 the reference replaces the draw by line ``seed`` of
  ``stl10_fold_indices.txt`` (``create_split.py``: ``if 'stl10' in argv[1] and FLAGS.size == 1000``), one of
  the data set's 10 official folds: :func:`fold_split`.

A split is stored as JSON (:meth:`LabelSplit.save`) beside each run; its ``hash`` is checked when loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.errors import UserError

# Label budgets of the paper's Table 6 (the FixMatch protocol: CIFAR-10 with 2/4/25/400 labels per class,
# CIFAR-100 with 2/4/25/100 per class).
TABLE6_BUDGETS: dict[str, tuple[int, ...]] = {
    "cifar10": (20, 40, 250, 4000),
    "cifar100": (200, 400, 2500, 10000),
}

SPLIT_FORMAT = 1
HASH_CHARS = 16


def split_hash(labeled: np.ndarray, unlabeled: np.ndarray, num_labels: int, seed: int) -> str:
    """Short sha256 over the labelled and unlabelled indices (little-endian int64) + budget + seed."""
    h = hashlib.sha256(b"ssl-bench label split v1\n")
    h.update(np.ascontiguousarray(labeled, dtype="<i8").tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(unlabeled, dtype="<i8").tobytes())
    h.update(f"|{int(num_labels)}|{int(seed)}".encode())
    return h.hexdigest()[:HASH_CHARS]


def _index_array(values: Any, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise UserError(f"LabelSplit.{what} must be a 1-D array of integer indices, got {a.dtype} {a.shape}")
    return a.astype(np.int64)


@dataclass(frozen=True, eq=False)
class LabelSplit:
    """The labelled / unlabelled index sets of one (data set, budget, seed).

    Attributes:
        labeled: sorted, unique int64 indices into the training set whose labels are used.
        unlabeled: sorted int64 indices used as unlabelled data (``arange(num_train)`` from
            :func:`make_split`).
        num_labels: the label budget (``len(labeled)``).
        seed: the split seed.
        num_classes: classes of the data set (``num_labels / num_classes`` labels per class, except for the
            fully-labelled ceiling, which keeps the classes' own sizes).
        num_train: size of the training set the indices refer to.
        hash: :func:`split_hash` of the above, computed here (so it always matches the indices).
    """

    labeled: np.ndarray = field(repr=False)
    unlabeled: np.ndarray = field(repr=False)
    num_labels: int
    seed: int
    num_classes: int
    num_train: int
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        labeled = _index_array(self.labeled, "labeled")
        unlabeled = _index_array(self.unlabeled, "unlabeled")
        for what, idx in (("labeled", labeled), ("unlabeled", unlabeled)):
            if idx.size and (idx.min() < 0 or idx.max() >= self.num_train):
                raise UserError(f"LabelSplit.{what} has indices outside [0, {self.num_train})")
            if idx.size > 1 and not (np.diff(idx) > 0).all():
                raise UserError(f"LabelSplit.{what} must be sorted and unique")
        if len(labeled) != self.num_labels:
            raise UserError(f"LabelSplit has {len(labeled)} labelled indices but "
                            f"num_labels={self.num_labels}")
        object.__setattr__(self, "labeled", labeled)
        object.__setattr__(self, "unlabeled", unlabeled)
        object.__setattr__(self, "hash", split_hash(labeled, unlabeled, self.num_labels, self.seed))

    @property
    def labels_per_class(self) -> int:
        """Labels of each class in a balanced split (for an unbalanced ceiling: the floor of the mean)."""
        return self.num_labels // self.num_classes

    @property
    def fully_labeled(self) -> bool:
        """True for the fully-labelled ceiling: every training image keeps its label."""
        return self.num_labels == self.num_train

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict. An unlabelled set equal to the whole training set is written as ``"all"``."""
        whole = len(self.unlabeled) == self.num_train and bool(
            (self.unlabeled == np.arange(self.num_train)).all())
        return {
            "format": SPLIT_FORMAT,
            "num_labels": int(self.num_labels),
            "num_classes": int(self.num_classes),
            "seed": int(self.seed),
            "num_train": int(self.num_train),
            "hash": self.hash,
            "labeled": self.labeled.tolist(),
            "unlabeled": "all" if whole else self.unlabeled.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSplit:
        """Inverse of :meth:`to_dict`; raises ValueError if the stored hash does not match the indices."""
        try:
            unlabeled = np.arange(d["num_train"]) if d["unlabeled"] == "all" else d["unlabeled"]
            split = cls(labeled=d["labeled"], unlabeled=unlabeled, num_labels=int(d["num_labels"]),
                        seed=int(d["seed"]), num_classes=int(d["num_classes"]), num_train=int(d["num_train"]))
        except KeyError as e:
            raise UserError(f"label split is missing the field {e}; "
                            "expected the keys of LabelSplit.to_dict()") from e
        if "hash" in d and d["hash"] != split.hash:
            raise UserError(f"label split hash mismatch: stored {d['hash']}, recomputed {split.hash}; "
                            "the indices were edited or the file is corrupted")
        return split

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (atomically: a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelSplit:
        """Read a split written by :meth:`save` (hash verified)."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _nearest_budgets(num_labels: int, num_classes: int) -> str:
    lower = (num_labels // num_classes) * num_classes
    options = [b for b in (lower, lower + num_classes) if b > 0]
    return " or ".join(str(b) for b in options)


ALLOCATIONS = ("balanced", "distribution")


def distribution_counts(class_sizes: np.ndarray, num_labels: int, order: tuple[int, ...] | None = None) -> np.ndarray:
    """Labels per class that follow the class distribution: google-research/fixmatch scripts/create_split.py.

    ``class_sizes[c]``: training images of class ``c``; ``order``: the classes in the reference's index order
    (ties go to the first there); default ``0..K-1``. Returns int64 counts (indexed by our classes) summing to
    ``num_labels``.
    """
    sizes = np.asarray(class_sizes, dtype=np.float64)
    order = tuple(range(len(sizes))) if order is None else tuple(order)
    stats = sizes[list(order)] / sizes.max()
    npos = np.zeros(len(sizes), np.int64)
    for _ in range(num_labels):
        npos[int(np.argmax(stats - npos / max(npos.max(), 1)))] += 1
    counts = np.zeros(len(sizes), np.int64)
    counts[list(order)] = npos
    return counts


def fold_split(folds: np.ndarray, fold: int, num_train: int, num_classes: int) -> LabelSplit:
    """The labelled set is the official fold ``fold`` (a row of ``folds``); every image is unlabelled too."""
    if not 0 <= fold < len(folds):
        raise UserError(f"split seed {fold}: the data set has {len(folds)} official label folds, so the seed picks "
                        f"one of 0..{len(folds) - 1} (the reference uses folds 1..5)")
    labeled = np.unique(folds[fold])
    everything = np.arange(num_train, dtype=np.int64)
    return LabelSplit(labeled=labeled, unlabeled=everything, num_labels=len(labeled), seed=fold,
                      num_classes=num_classes, num_train=num_train)


def make_split(y_train: np.ndarray, num_labels: int, num_classes: int, seed: int,
               allocation: str = "balanced", class_order: tuple[int, ...] | None = None) -> LabelSplit:
    """Draw a class-balanced labelled set of ``num_labels`` images; every training image is unlabelled too.

    Pure function of (``y_train``, ``num_labels``, ``seed``): see the module docstring for the draw and the
    FixMatch convention it follows. ``allocation="distribution"`` gives each class its share of the budget as
    :func:`distribution_counts` computes it (``class_order``: the reference's class order), instead of
    ``num_labels / num_classes`` each; any budget up to the training set size is then possible.

    ``num_labels == len(y_train)`` is the fully-labelled ceiling: every training image keeps its label,
    whether or not the classes are balanced or the size a multiple of ``num_classes`` (e.g. all 5482 images of
    the CIFAR-10 subset). Where a balanced draw of that size exists (50000 = 10 x 5000 on CIFAR-10) it is the
    same set, so both readings agree. Any other budget must be a multiple of ``num_classes`` that every class
    can fill.

    Raises:
        ValueError: labels not a 1-D integer array or outside ``[0, num_classes)``; ``num_labels <= 0``, above
            the training set, or (below it) not a multiple of ``num_classes`` or more per class than the
            smallest class has; negative seed.
    """
    y = np.asarray(y_train)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"y_train must be a 1-D integer array of class indices, got {y.dtype} {y.shape}")
    for what, v in (("num_labels", num_labels), ("num_classes", num_classes), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise UserError(f"{what} must be an int, got {v!r}")
    num_labels, num_classes, seed = int(num_labels), int(num_classes), int(seed)
    if num_classes < 1:
        raise UserError(f"num_classes={num_classes}: expected a positive number of classes")
    if seed < 0:
        raise UserError(f"seed={seed}: split seeds must be >= 0 (e.g. 0, 1, 2)")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = sorted(set(y[(y < 0) | (y >= num_classes)][:5].tolist()))
        raise UserError(f"y_train has labels {bad} outside [0, {num_classes}) for "
                         f"num_classes={num_classes}; pass the data set's num_classes, and class indices "
                         "(not one-hot or names) as labels")
    num_train = len(y)
    if num_labels <= 0:
        raise UserError(f"num_labels={num_labels}: the label budget must be a positive multiple of "
                        f"num_classes={num_classes}, e.g. {4 * num_classes} (4 per class), or {num_train} "
                        "(every training image labelled)")
    everything = np.arange(num_train, dtype=np.int64)
    if allocation not in ALLOCATIONS:
        raise UserError(f"allocation={allocation!r}: expected one of {ALLOCATIONS}")
    if num_labels == num_train:  # the fully-labelled ceiling (docstring)
        return LabelSplit(labeled=everything, unlabeled=everything, num_labels=num_labels, seed=seed,
                          num_classes=num_classes, num_train=num_train)
    if num_labels > num_train:
        raise UserError(f"num_labels={num_labels} is more than the {num_train} training images; use at most "
                        f"{num_train} (every image labelled)")
    counts = np.bincount(y, minlength=num_classes)
    if allocation == "distribution":
        wanted = distribution_counts(counts, num_labels, class_order)
        if (wanted > counts).any():
            c = int(np.argmax(wanted - counts))
            raise UserError(f"num_labels={num_labels} gives class {c} {wanted[c]} labels by the class distribution, "
                            f"but it has only {counts[c]} training images; use a smaller budget")
        return _take_smallest_keys(y, wanted, seed, num_labels, num_classes, num_train)
    if num_labels % num_classes:
        raise UserError(f"num_labels={num_labels} is not a multiple of num_classes={num_classes}; the "
                        "labelled set is class-balanced, so use "
                        f"{_nearest_budgets(num_labels, num_classes)}, or {num_train} (every training image "
                        "labelled)")
    per_class = num_labels // num_classes
    smallest = int(counts.argmin())
    if per_class > counts[smallest]:
        raise UserError(f"num_labels={num_labels} needs {per_class} labelled images per class, but class "
                        f"{smallest} has only {counts[smallest]} training images; the largest balanced "
                        f"budget here is {int(counts[smallest]) * num_classes}, or use {num_train} (every "
                        "training image labelled)")

    return _take_smallest_keys(y, np.full(num_classes, per_class), seed, num_labels, num_classes, num_train)


def _take_smallest_keys(y: np.ndarray, per_class: np.ndarray, seed: int, num_labels: int, num_classes: int,
                        num_train: int) -> LabelSplit:
    """Every class ``c`` keeps its ``per_class[c]`` images with the smallest PCG64 keys (module docstring)."""
    keys = np.random.PCG64(seed).random_raw(num_train)  # one uint64 key per image, from the stable raw stream
    labeled = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        order = np.argsort(keys[members], kind="stable")
        labeled.append(members[order[:int(per_class[c])]])
    return LabelSplit(
        labeled=np.sort(np.concatenate(labeled)), unlabeled=np.arange(num_train, dtype=np.int64),
        num_labels=num_labels, seed=seed, num_classes=num_classes, num_train=num_train,
    )
