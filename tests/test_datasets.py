"""Data loading: the real subset npz, the embedded digits, miniature official CIFAR files, download, bad inputs."""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile

import numpy as np
import pytest

from ssl_bench.data import (
    ChecksumError,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageDataset,
    load_dataset,
    resolve_data_root,
)
from ssl_bench.data.cifar import CIFAR_SPECS, load_cifar
from ssl_bench.data.download import md5_of
from ssl_bench.data.load import DEFAULT_DATA_ROOT

SUBSET_FINGERPRINT = "0458e7bb93621c2c"  # fingerprint of the arrays of ../shared/data/cifar10_subset.npz
DIGITS_FINGERPRINT = "c2aceba31fad67f8"  # changes only if scikit-learn's digits or our conversion/split change


@pytest.fixture(scope="module")
def subset(shared_data):
    return load_dataset("cifar10_subset", root=shared_data)


# --------------------------------------------------------------------------------------------- the real subset


def test_subset_npz_has_the_shapes_and_classes_its_readme_states(subset, shared_data):
    assert subset.x_train.shape == (5482, 32, 32, 3) and subset.x_train.dtype == np.uint8
    assert subset.x_test.shape == (1017, 32, 32, 3) and subset.x_test.dtype == np.uint8
    assert subset.y_train.dtype == np.int64 and subset.y_test.dtype == np.int64
    assert subset.num_classes == 10
    assert (subset.kind, subset.family, subset.name) == ("subset", "cifar10", "cifar10_subset")
    train_counts, test_counts = np.bincount(subset.y_train), np.bincount(subset.y_test)
    assert len(train_counts) == 10 and 527 <= train_counts.min() and train_counts.max() <= 577
    assert len(test_counts) == 10 and 87 <= test_counts.min() and test_counts.max() <= 114
    assert subset.source == str(shared_data / "cifar10_subset.npz")
    assert subset.fingerprint == SUBSET_FINGERPRINT
    assert all(0.2 < m < 0.6 for m in subset.mean) and all(0.15 < s < 0.35 for s in subset.std)
    assert "5482 train / 1017 test" in subset.describe() and SUBSET_FINGERPRINT in subset.describe()


def test_subset_loads_the_same_by_path_and_through_the_env_root(subset, shared_data, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_DATA", str(shared_data))
    assert load_dataset("cifar10_subset").fingerprint == subset.fingerprint
    by_path = load_dataset(str(shared_data / "cifar10_subset.npz"))
    assert by_path.fingerprint == subset.fingerprint and by_path.family == "cifar10"


def test_dataset_is_frozen(subset):
    with pytest.raises(dataclasses.FrozenInstanceError):
        subset.num_classes = 3


# --------------------------------------------------------------------------------------------- embedded digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_are_32x32_rgb_uint8_with_the_17_scaled_grey_levels(digits):
    assert digits.x_train.shape == (1442, 32, 32, 3) and digits.x_test.shape == (355, 32, 32, 3)
    assert digits.x_train.dtype == np.uint8 and (digits.kind, digits.family) == ("embedded", None)
    levels = np.rint(np.arange(17) * 255 / 16).astype(np.uint8)
    assert set(np.unique(digits.x_train)) <= set(levels.tolist()) and digits.x_train.max() == 255
    x = digits.x_train
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()  # grey replicated to RGB
    blocks = x[..., 0].reshape(-1, 8, 4, 8, 4)  # nearest neighbour x4: every 4x4 block is one value
    assert (blocks == blocks[:, :, :1, :, :1]).all()


def test_digits_split_is_stratified_and_deterministic(digits):
    from sklearn.datasets import load_digits

    sizes = np.bincount(load_digits().target)
    assert np.bincount(digits.y_test).tolist() == (sizes // 5).tolist()  # every fifth image of each class
    assert np.bincount(digits.y_train).tolist() == (sizes - sizes // 5).tolist()
    assert load_dataset("digits").fingerprint == digits.fingerprint == DIGITS_FINGERPRINT


# --------------------------------------------------------------------------------------------- official files


def _official_pickle(entry: dict) -> bytes:
    """Pickle like the official files: protocol 2 dict with bytes keys, arrays under numpy 1's module name."""
    raw = pickle.dumps(entry, protocol=2)
    return raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))  # HWC -> CHW-flattened rows


def write_miniature_cifar(root, name, x_train, y_train, x_test, y_test):
    """Official-format files for ``name`` under ``root`` (train split over the official file names)."""
    spec = CIFAR_SPECS[name]
    folder = root / spec.folder
    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(x_train)), len(spec.train_files))
    files = [(f, x_train[i], y_train[i]) for f, i in zip(spec.train_files, parts, strict=True)]
    for fname, x, y in files + [(spec.test_files[0], x_test, y_test)]:
        entry = {b"batch_label": f"{fname} (miniature)".encode(), b"data": _rows(x),
                 b"filenames": [f"img_{i}.png".encode() for i in range(len(x))]}
        if name == "cifar10":
            entry[b"labels"] = [int(v) for v in y]
        else:
            entry[b"fine_labels"] = [int(v) for v in y]
            entry[b"coarse_labels"] = [int(v) // 5 for v in y]
        (folder / fname).write_bytes(_official_pickle(entry))
    return folder


@pytest.fixture(scope="module")
def mini(subset):
    """60 train / 20 test real images; CIFAR-100 labels spread over 0..99."""
    x_tr, x_te = subset.x_train[:60], subset.x_test[:20]
    y_tr, y_te = subset.y_train[:60], subset.y_test[:20]
    return {"cifar10": (x_tr, y_tr, x_te, y_te),
            "cifar100": (x_tr, y_tr * 10 + np.arange(60) % 10, x_te, y_te * 10 + np.arange(20) % 10)}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_miniature_official_files_round_trip_pixels_and_labels(tmp_path, mini, name):
    x_tr, y_tr, x_te, y_te = mini[name]
    folder = write_miniature_cifar(tmp_path, name, x_tr, y_tr, x_te, y_te)
    ds = load_dataset(name, root=tmp_path)
    np.testing.assert_array_equal(ds.x_train, x_tr)
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.x_test, x_te)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert (ds.kind, ds.family, ds.num_classes) == ("full", name, CIFAR_SPECS[name].num_classes)
    assert ds.source == str(folder) and ds.x_train.flags.c_contiguous


def test_missing_official_data_names_the_expected_folder_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar100", root=tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    for needle in (str(tmp_path / "cifar-100-python"), "train, test", "--download", "--data-root",
                   "SSL_BENCH_DATA", "torchvision"):
        assert needle in msg


def test_half_present_official_folder_lists_the_missing_files(tmp_path, mini):
    folder = write_miniature_cifar(tmp_path, "cifar10", *mini["cifar10"])
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"incomplete \(missing data_batch_3, test_batch"):
        load_dataset("cifar10", root=tmp_path)


def test_pickle_with_foreign_code_is_refused(tmp_path, mini):
    folder = write_miniature_cifar(tmp_path, "cifar10", *mini["cifar10"])
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": io.BytesIO(b"x")}, protocol=2))
    with pytest.raises(DatasetFormatError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)


# --------------------------------------------------------------------------------------------- download


def _tarball(src_root, dest) -> str:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return dest.as_uri()


def test_download_from_file_url_checks_md5_extracts_and_loads(tmp_path, mini):
    write_miniature_cifar(tmp_path / "src", "cifar10", *mini["cifar10"])
    url = _tarball(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz")
    root = tmp_path / "root"
    ds = load_cifar("cifar10", root, download=True, url=url, md5=md5_of(tmp_path / "cifar-10-python.tar.gz"))
    np.testing.assert_array_equal(ds.x_train, mini["cifar10"][0])
    assert (root / "cifar-10-python.tar.gz").is_file()  # archive kept, as torchvision does
    assert load_dataset("cifar10", root=root).fingerprint == ds.fingerprint  # now present without download


def test_archive_without_the_published_md5_is_refused_and_nothing_extracted(tmp_path, mini, monkeypatch):
    write_miniature_cifar(tmp_path / "src", "cifar10", *mini["cifar10"])
    url = _tarball(tmp_path / "src", tmp_path / "mirror.tar.gz")
    monkeypatch.setenv("SSL_BENCH_CIFAR10_URL", url)  # a "mirror" serving something else than the official file
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", root=root, download=True)
    assert not (root / "cifar-10-batches-py").exists()
    assert not any(root.iterdir())  # no partial download left behind


def test_corrupted_tarball_is_refused(tmp_path, mini):
    write_miniature_cifar(tmp_path / "src", "cifar10", *mini["cifar10"])
    archive = tmp_path / "cifar-10-python.tar.gz"
    url = _tarball(tmp_path / "src", archive)
    good_md5 = md5_of(archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=good_md5):
        load_cifar("cifar10", tmp_path / "root", download=True, url=url, md5=good_md5)
    assert not (tmp_path / "root" / "cifar-10-batches-py").exists()


def test_tarball_escaping_the_root_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"gotcha"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    root = tmp_path / "root"
    with pytest.raises(DatasetFormatError, match="unsafe path"):
        load_cifar("cifar10", root, download=True, url=archive.as_uri(), md5=md5_of(archive))
    assert not (tmp_path / "escaped.txt").exists()


def test_failed_download_is_a_not_found_error_with_the_fixes(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"download from .* failed.*\n(.|\n)*--data-root"):
        load_cifar("cifar10", tmp_path, download=True, url=(tmp_path / "absent.tar.gz").as_uri())


# --------------------------------------------------------------------------------------------- bring your own npz


def _arrays(n_train=12, n_test=6, classes=3):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
            "y_test": np.arange(n_test) % classes}


def test_own_npz_loads_with_kind_family_and_statistics(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "cifar100_mine.npz", **arrays)
    ds = load_dataset("cifar100_mine", root=tmp_path)
    assert (ds.kind, ds.family, ds.num_classes) == ("npz", "cifar100", 3)
    flat = arrays["x_train"].reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ds.std, flat.std(0), rtol=1e-9)
    arrays["x_train"][0, 0, 0, 0] ^= 1  # one pixel differs -> another fingerprint
    np.savez(tmp_path / "other.npz", **arrays)
    other = load_dataset(str(tmp_path / "other.npz"))
    assert other.fingerprint != ds.fingerprint and other.family is None


@pytest.mark.parametrize("change,match", [
    ({"x_train": np.zeros((12, 32, 32, 3), np.float32)}, r"x_train has dtype float32, expected uint8"),
    ({"x_train": np.zeros((12, 3, 32, 32), np.uint8)}, r"x_train has shape \(12, 3, 32, 32\).*transpose"),
    ({"y_train": np.arange(11) % 3}, r"x_train has 12 images but y_train has 11 labels"),
    ({"y_test": np.array([0, 1, 2, 3, 0, 1])}, r"y_test has label 3, outside \[0, 3\)"),
    ({"y_train": np.arange(12) % 3 - 1}, r"y_train has labels outside \[0, 2\).*\[-1\]"),
    ({"y_train": np.eye(3)[np.arange(12) % 3]}, r"y_train has shape \(12, 3\).*not one-hot"),
    ({"x_test": None}, r"missing array\(s\) x_test"),
])
def test_bad_npz_gives_a_clear_error_naming_the_problem(tmp_path, change, match):
    arrays = {**_arrays(), **change}
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(DatasetFormatError, match=match) as err:
        load_dataset("bad", root=tmp_path)
    assert str(tmp_path / "bad.npz") in str(err.value)


def test_unknown_name_lists_what_is_available(tmp_path):
    np.savez(tmp_path / "mine.npz", **_arrays())
    with pytest.raises(DatasetNotFoundError, match=r"unknown data set 'nope'(.|\n)*cifar10, cifar100, digits, mine"):
        load_dataset("nope", root=tmp_path)


def test_image_dataset_validates_its_arrays():
    a = _arrays()
    with pytest.raises(DatasetFormatError, match="labels outside"):
        ImageDataset("x", a["x_train"], a["y_train"], a["x_test"], a["y_test"], num_classes=2, kind="npz",
                     family=None, source="test")


# --------------------------------------------------------------------------------------------- data root


def test_resolve_data_root_precedence_explicit_then_env_then_repo_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_DATA", raising=False)
    assert resolve_data_root() == DEFAULT_DATA_ROOT and DEFAULT_DATA_ROOT.name == "datasets"
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
