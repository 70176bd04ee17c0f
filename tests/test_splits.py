"""Label-budget splits on the complete official CIFAR-10/100 labels (../shared/data/cifar_labels.npz)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssl_bench.data import TABLE6_BUDGETS, LabelSplit, make_split

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}

# Golden value: CIFAR-10, 40 labels, seed 0. If this changes, every stored split and every run's split_hash
# changes meaning; only update it deliberately (and say so in the changelog).
GOLDEN_CIFAR10_40_SEED0 = "ee8acf8d43d66829"
GOLDEN_CIFAR10_40_SEED0_FIRST = [269, 855, 921, 2693, 3697, 4139, 6037, 7275]


@pytest.fixture(scope="module")
def labels(shared_data):
    path = shared_data / "cifar_labels.npz"
    if not path.exists():
        pytest.skip(f"{path} not found; set SSL_BENCH_DATA to the folder with cifar_labels.npz")
    with np.load(path) as f:
        return {"cifar10": f["cifar10_train"], "cifar100": f["cifar100_train"]}


BUDGETS = [(ds, n) for ds, budgets in TABLE6_BUDGETS.items() for n in budgets]


@pytest.mark.parametrize("dataset,num_labels", BUDGETS)
def test_table6_budget_is_exactly_balanced_with_all_images_unlabelled(labels, dataset, num_labels):
    y, k = labels[dataset], NUM_CLASSES[dataset]
    split = make_split(y, num_labels, k, seed=0)
    assert len(split.labeled) == split.num_labels == num_labels
    assert np.bincount(y[split.labeled], minlength=k).tolist() == [num_labels // k] * k
    assert split.labeled.dtype == np.int64 and (np.diff(split.labeled) > 0).all()  # sorted, unique
    assert 0 <= split.labeled[0] and split.labeled[-1] < len(y)
    np.testing.assert_array_equal(split.unlabeled, np.arange(len(y)))  # FixMatch: the whole training set


def test_table6_budgets_are_the_papers():
    assert TABLE6_BUDGETS == {"cifar10": (20, 40, 250, 4000), "cifar100": (200, 400, 2500, 10000)}


def test_same_seed_same_split_different_seed_different_split(labels):
    y = labels["cifar10"]
    a, b, c = make_split(y, 250, 10, 3), make_split(y.copy(), 250, 10, 3), make_split(y, 250, 10, 4)
    np.testing.assert_array_equal(a.labeled, b.labeled)
    assert a.hash == b.hash
    assert not np.array_equal(a.labeled, c.labeled) and a.hash != c.hash


def test_golden_hash_of_cifar10_40_labels_seed0(labels):
    split = make_split(labels["cifar10"], 40, 10, 0)
    assert split.labeled[:8].tolist() == GOLDEN_CIFAR10_40_SEED0_FIRST
    assert split.hash == GOLDEN_CIFAR10_40_SEED0


def test_budgets_are_nested_for_one_seed(labels):
    y = labels["cifar100"]
    sets = [set(make_split(y, n, 100, 7).labeled.tolist()) for n in TABLE6_BUDGETS["cifar100"]]
    assert all(small <= big for small, big in zip(sets[:-1], sets[1:], strict=True))


def test_draw_neither_uses_nor_moves_the_global_rng(labels):
    y = labels["cifar10"]
    np.random.seed(1)
    _, key, pos, *_ = np.random.get_state()
    first = make_split(y, 40, 10, 0)
    _, key_after, pos_after, *_ = np.random.get_state()
    assert pos_after == pos and np.array_equal(key_after, key)  # global state untouched
    np.random.seed(2)
    assert make_split(y, 40, 10, 0).hash == first.hash  # and not read


def test_save_load_round_trip_and_tampered_file_is_refused(labels, tmp_path):
    split = make_split(labels["cifar10"], 40, 10, 0)
    path = split.save(tmp_path / "split.json")
    stored = json.loads(path.read_text())
    assert stored["hash"] == split.hash and stored["unlabeled"] == "all" and len(stored["labeled"]) == 40
    again = LabelSplit.load(path)
    np.testing.assert_array_equal(again.labeled, split.labeled)
    np.testing.assert_array_equal(again.unlabeled, split.unlabeled)
    assert (again.hash, again.seed, again.num_labels, again.num_classes) == (split.hash, 0, 40, 10)
    stored["labeled"][0] += 1
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="hash mismatch"):
        LabelSplit.load(path)


TINY = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])  # class sizes 3, 5, 4
TINY13 = np.append(TINY, 2)  # class sizes 3, 5, 5


@pytest.mark.parametrize("y,num_labels,num_classes,match", [
    (TINY, 0, 3, r"num_labels=0.*positive multiple"),
    (TINY, -3, 3, r"num_labels=-3.*positive multiple"),
    (TINY, 7, 3, r"num_labels=7 is not a multiple of num_classes=3.*use 6 or 9"),
    (TINY13, 12, 3, r"needs 4 labelled images per class, but class 0 has only 3.*largest balanced budget "
                    r"here is 9, or use 13 \(every training image labelled\)"),
    (TINY, 13, 3, r"num_labels=13 is more than the 12 training images; use at most 12"),
    (TINY[:11], 10, 3, r"not a multiple of num_classes=3.*use 9 or 12, or 11 \(every training image"),
    (np.array([0, 1, 2, 3]), 4, 3, r"labels \[3\] outside \[0, 3\)"),
    (np.array([0, -1, 1, 2]), 3, 3, r"labels \[-1\] outside \[0, 3\)"),
    (np.array([0.0, 1.0, 2.0]), 3, 3, r"1-D integer array"),
])
def test_invalid_requests_raise_clear_errors(y, num_labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        make_split(y, num_labels, num_classes, seed=0)


def test_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed=-1"):
        make_split(TINY, 3, 3, seed=-1)


# ------------------------------------------------------------------------------ the fully-labelled ceiling


@pytest.mark.parametrize("y", [TINY, TINY[:11], TINY13], ids=["sizes-3-5-4", "11-not-a-multiple", "3-5-5"])
def test_budget_equal_to_the_training_set_labels_every_image_balanced_or_not(y):
    split = make_split(y, len(y), 3, seed=5)
    np.testing.assert_array_equal(split.labeled, np.arange(len(y)))
    np.testing.assert_array_equal(split.unlabeled, np.arange(len(y)))
    assert split.fully_labeled and split.num_labels == split.num_train == len(y)
    assert np.bincount(y[split.labeled]).tolist() == np.bincount(y).tolist()  # the classes' own sizes
    assert not make_split(y, 3, 3, seed=5).fully_labeled  # smaller budgets: balanced draws as before
    assert np.bincount(y[make_split(y, 9, 3, seed=5).labeled]).tolist() == [3, 3, 3]


def test_fully_labelled_cifar10_subset_and_full_cifar10(shared_data, labels):
    with np.load(shared_data / "cifar10_subset.npz") as f:
        y_subset = f["y_train"]
    assert len(y_subset) == 5482 and len(set(np.bincount(y_subset).tolist())) > 1  # unbalanced, not 10 x k
    split = make_split(y_subset, 5482, 10, seed=0)
    np.testing.assert_array_equal(split.labeled, np.arange(5482))
    # full CIFAR-10 is balanced (10 x 5000): the ceiling and the balanced draw of 5000 per class coincide
    y = labels["cifar10"]
    full = make_split(y, 50000, 10, seed=0)
    np.testing.assert_array_equal(full.labeled, np.arange(50000))
    assert full.fully_labeled and full.labels_per_class == 5000


def test_fully_labelled_split_round_trips_with_its_hash(tmp_path):
    split = make_split(TINY, 12, 3, seed=1)
    again = LabelSplit.load(split.save(tmp_path / "split.json"))
    np.testing.assert_array_equal(again.labeled, np.arange(12))
    assert again.hash == split.hash and again.fully_labeled
