"""Data loading: the real subset npz, embedded digits, miniature CIFAR files, download, bad inputs."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

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
from ssl_bench.data import load as load_module
from ssl_bench.data.cifar import CIFAR_SPECS, labels_sha256, load_cifar
from ssl_bench.data.download import md5_of

SUBSET_FINGERPRINT = "0458e7bb93621c2c"  # fingerprint of the arrays of ../shared/data/cifar10_subset.npz
DIGITS_FINGERPRINT = "c2aceba31fad67f8"  # changes only with scikit-learn's digits or our conversion/split


@pytest.fixture(autouse=True)
def no_network(tmp_path_factory, monkeypatch):
    """Downloads are on by default: point every CIFAR URL at an absent local file, so that no test here can
    reach the network by accident (a test that downloads sets its own URL)."""
    nowhere = tmp_path_factory.mktemp("offline") / "absent.tar.gz"
    for spec in CIFAR_SPECS.values():
        monkeypatch.setenv(spec.url_env, nowhere.as_uri())


@pytest.fixture(scope="module")
def subset(shared_data):
    return load_dataset("cifar10_subset", root=shared_data)


# ---------------------------------------------------------------------------------- the real subset


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
    assert subset.hflip  # natural photographs; the .npz has no hflip member, so the default holds


def test_subset_loads_the_same_by_path_and_through_the_env_root(subset, shared_data, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_DATA", str(shared_data))
    assert load_dataset("cifar10_subset").fingerprint == subset.fingerprint
    by_path = load_dataset(str(shared_data / "cifar10_subset.npz"))
    assert by_path.fingerprint == subset.fingerprint
    # by name it is the registered data set (family cifar10); by path it is a user .npz, which has the family
    # it declares (here none): the file name is never read as a family
    assert (by_path.family, by_path.kind) == (None, "npz")


def test_dataset_is_frozen(subset):
    with pytest.raises(dataclasses.FrozenInstanceError):
        subset.num_classes = 3


# ---------------------------------------------------------------------------------- embedded digits


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


def test_digits_are_never_mirrored_cifar_is(digits, tmp_path, mini):
    # reference weak augmentation (libml/augment.py DEFAULT_AUGMENT): SVHN shift only, CIFAR mirror + shift
    assert digits.hflip is False
    write_miniature_cifar(tmp_path, "cifar10", *mini["cifar10"])
    assert load_dataset("cifar10", root=tmp_path).hflip is True


# ----------------------------------------------------------------------------------- official files


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
def mini():
    """60 train / 20 test images, all 10 CIFAR-10 classes; CIFAR-100 labels spread over 0..99.

    Seeded random pixels rather than the shared subset: the file format and the download do not depend on
    what the pixels show, and these tests then run wherever ssl-bench is installed (no shared data needed).
    """
    rng = np.random.default_rng(10)
    x_tr = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y_tr, y_te = rng.permutation(np.arange(60) % 10), rng.permutation(np.arange(20) % 10)
    return {"cifar10": (x_tr, y_tr, x_te, y_te),
            "cifar100": (x_tr, y_tr * 10 + np.arange(60) % 10, x_te, y_te * 10 + np.arange(20) % 10)}


@pytest.fixture(autouse=True)
def miniature_counts_as_official(monkeypatch, mini):
    """The miniature files of these tests stand in for the official ones: their sizes and label hashes are
    declared official here. (tests/test_data_safety.py checks that, with the real declaration, a folder of other
    sizes or labels is refused.)"""
    for name, (_, y_tr, _, y_te) in mini.items():
        spec = CIFAR_SPECS[name]
        parts = np.array_split(y_tr, len(spec.train_files))   # as write_miniature_cifar splits them
        official = {f: (len(y), labels_sha256(y)) for f, y in zip(spec.train_files, parts, strict=True)}
        official[spec.test_files[0]] = (len(y_te), labels_sha256(y_te))
        monkeypatch.setitem(CIFAR_SPECS, name, dataclasses.replace(spec, official=official))


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


def test_missing_official_data_without_download_is_one_line_naming_the_folder_and_the_fixes(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar100", root=tmp_path, download=False)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in (str(tmp_path / "cifar-100-python"), "train, test", "remove --no-download", "--data-root",
                   "SSL_BENCH_DATA", "torchvision", "cifar-100-python.tar.gz", CIFAR_SPECS["cifar100"].md5):
        assert needle in msg
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing created


def test_half_present_official_folder_lists_the_missing_files(tmp_path, mini):
    folder = write_miniature_cifar(tmp_path, "cifar10", *mini["cifar10"])
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"incomplete \(missing data_batch_3, test_batch"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_pickle_with_foreign_code_is_refused(tmp_path, mini):
    folder = write_miniature_cifar(tmp_path, "cifar10", *mini["cifar10"])
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": io.BytesIO(b"x")}, protocol=2))
    with pytest.raises(DatasetFormatError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)


# ----------------------------------------------------------------------------------------- download


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
    monkeypatch.setenv("SSL_BENCH_CIFAR10_URL", url)  # a "mirror" serving another file than the official one
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", root=root)  # default settings: download on, published MD5
    assert not (root / "cifar-10-batches-py").exists()
    assert not root.exists()  # no partial download left behind, not even the data root it would have made


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
    with pytest.raises(DatasetNotFoundError, match=r"Downloading .*absent.tar.gz failed.*--data-root"):
        load_cifar("cifar10", tmp_path, download=True, url=(tmp_path / "absent.tar.gz").as_uri())


@pytest.fixture
def served_archive(tmp_path, mini, monkeypatch):
    """A miniature CIFAR-10 tarball served at SSL_BENCH_CIFAR10_URL, published as the official one (its MD5 in
    the spec): what the default settings download, without a network. Returns (archive path, its MD5)."""
    write_miniature_cifar(tmp_path / "src", "cifar10", *mini["cifar10"])
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    monkeypatch.setenv("SSL_BENCH_CIFAR10_URL", _tarball(tmp_path / "src", archive))
    published = dataclasses.replace(CIFAR_SPECS["cifar10"], md5=md5_of(archive))
    monkeypatch.setitem(CIFAR_SPECS, "cifar10", published)
    return archive, md5_of(archive)


def test_missing_cifar_is_downloaded_by_default_md5_checked_and_loaded(tmp_path, mini, served_archive):
    root = tmp_path / "fresh" / "root"  # does not exist yet: the download creates it
    ds = load_dataset("cifar10", root=root)  # default settings: no download argument, no md5
    np.testing.assert_array_equal(ds.x_train, mini["cifar10"][0])
    np.testing.assert_array_equal(ds.y_test, mini["cifar10"][3])
    assert md5_of(root / "cifar-10-python.tar.gz") == served_archive[1]  # the checked archive, kept
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    served_archive[0].unlink()  # the files are there now: nothing is fetched again
    assert load_dataset("cifar10", root=root).fingerprint == ds.fingerprint


def test_download_shows_a_progress_bar_over_the_whole_archive(tmp_path, served_archive, monkeypatch):
    from ssl_bench.data import download

    bars = []

    class RecordingBar:
        def __init__(self, total, **kwargs):
            self.total, self.done, self.kwargs = total, 0, kwargs
            bars.append(self)

        def update(self, n):
            self.done += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(download, "tqdm", RecordingBar)
    load_dataset("cifar10", root=tmp_path / "root")
    size = served_archive[0].stat().st_size
    assert [(b.total, b.done, b.kwargs["unit"]) for b in bars] == [(size, size, "B")]


def test_corrupt_download_is_refused_and_leaves_nothing_to_use(tmp_path, served_archive):
    archive, good_md5 = served_archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in transit
    archive.write_bytes(bytes(data))
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=good_md5):
        load_dataset("cifar10", root=root)
    assert not root.exists()  # no archive, no temporary file, no extracted folder, no empty data root
    with pytest.raises(DatasetNotFoundError):  # and nothing half-written is picked up later
        load_dataset("cifar10", root=root, download=False)


def test_a_wrong_archive_already_in_the_root_is_fetched_again_not_used(tmp_path, served_archive):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(served_archive[0].read_bytes()[:100])  # truncated copy
    with pytest.raises(DatasetNotFoundError, match="remove --no-download"):  # never extracted
        load_dataset("cifar10", root=root, download=False)
    ds = load_dataset("cifar10", root=root)
    assert md5_of(root / "cifar-10-python.tar.gz") == served_archive[1] and len(ds.x_train) == 60


def test_no_download_still_extracts_a_verified_archive_already_in_the_root(tmp_path, served_archive):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(served_archive[0].read_bytes())
    served_archive[0].unlink()  # nothing to fetch: only the local archive can provide the files
    assert len(load_dataset("cifar10", root=root, download=False).x_train) == 60


class _DroppedConnection:
    """A response that delivers one block and then fails with ``error`` (a lost connection by default)."""

    headers = {"Content-Length": "1000000"}

    def __init__(self, error: BaseException | None = None):
        self.calls = 0
        self.error = error or ConnectionResetError(104, "Connection reset by peer")

    def read(self, n):
        self.calls += 1
        if self.calls > 1:
            raise self.error
        return b"x" * 1000

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_interrupted_download_leaves_no_partial_file_and_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _DroppedConnection())
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError, match=r"Connection reset.*offline or unreachable"):
        load_dataset("cifar10", root=root)
    assert not root.exists()
    ctrl_c = _DroppedConnection(KeyboardInterrupt())
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: ctrl_c)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C mid-download: propagates, and still cleans up
        load_dataset("cifar10", root=root)
    assert not root.exists()


def test_offline_is_one_line_with_the_ways_to_get_the_files(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.delenv("SSL_BENCH_CIFAR10_URL")  # the official URL
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    for needle in (CIFAR_SPECS["cifar10"].url, "Network is unreachable", "offline", "--data-root",
                   "SSL_BENCH_DATA", str(tmp_path), "cifar-10-python.tar.gz", CIFAR_SPECS["cifar10"].md5):
        assert needle in msg
    assert not any(tmp_path.iterdir())


def test_data_root_that_is_a_file_or_unwritable_is_named_with_the_fix(tmp_path, served_archive):
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    with pytest.raises(DatasetNotFoundError, match=r"the data root .*a-file is a file, expected a folder"):
        load_dataset("cifar10", root=root)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the root's parent should be")
    with pytest.raises(DatasetNotFoundError, match=r"Cannot write the download into .*blocker/root"):
        load_dataset("cifar10", root=blocker / "root")


# ------------------------------------------------------------------------------- bring your own npz


def _arrays(n_train=12, n_test=6, classes=3):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
            "y_test": np.arange(n_test) % classes}


def test_own_npz_loads_with_kind_family_and_statistics(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "mine.npz", **arrays, family="cifar100")
    ds = load_dataset("mine", root=tmp_path)
    assert (ds.kind, ds.family, ds.num_classes) == ("npz", "cifar100", 3)
    flat = arrays["x_train"].reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ds.std, flat.std(0), rtol=1e-9)
    arrays["x_train"][0, 0, 0, 0] ^= 1  # one pixel differs -> another fingerprint
    np.savez(tmp_path / "other.npz", **arrays)
    other = load_dataset(str(tmp_path / "other.npz"))
    assert other.fingerprint != ds.fingerprint and other.family is None
    assert ds.hflip is True and other.hflip is True  # no hflip member: natural images, mirrored


@pytest.mark.parametrize("stored,expected", [(False, False), (True, True), (np.uint8(0), False), (1, True)])
def test_npz_says_whether_mirroring_keeps_labels(tmp_path, stored, expected):
    np.savez(tmp_path / "letters.npz", **_arrays(), hflip=stored)
    ds = load_dataset("letters", root=tmp_path)
    assert ds.hflip is expected
    assert ds.record_fields()["dataset_hflip"] is expected  # what a run record stores


@pytest.mark.parametrize("stored,shown", [(2, "2"), (np.array([True, False]), r"\[True, False\]"),
                                          (0.0, "0.0")])
def test_bad_hflip_member_is_refused_with_the_fix(tmp_path, stored, shown):
    np.savez(tmp_path / "bad.npz", **_arrays(), hflip=stored)
    with pytest.raises(DatasetFormatError, match=rf"bad.npz: member 'hflip' is {shown} .*a scalar bool"):
        load_dataset("bad", root=tmp_path)


def test_record_fields_are_plain_json_and_describe_the_data(tmp_path):
    np.savez(tmp_path / "cifar10_mine.npz", **_arrays(), hflip=False, family="cifar10")
    ds = load_dataset("cifar10_mine", root=tmp_path)
    fields = json.loads(json.dumps(ds.record_fields()))  # plain types only
    assert fields == {"dataset": "cifar10_mine", "dataset_kind": "npz", "dataset_family": "cifar10",
                      "dataset_fingerprint": ds.fingerprint, "dataset_hflip": False,
                      "dataset_num_classes": 3, "dataset_num_train": 12, "dataset_num_test": 6}


@pytest.mark.parametrize("change,match", [
    ({"x_train": np.zeros((12, 32, 32, 3), np.float32)}, r"x_train has dtype float32, expected uint8"),
    ({"x_train": np.zeros((12, 3, 32, 32), np.uint8)}, r"x_train has shape \(12, 3, 32, 32\).*transpose"),
    ({"y_train": np.arange(11) % 3}, r"x_train has 12 images but y_train has 11 labels"),
    ({"y_test": np.array([0, 1, 2, 3, 0, 1])}, r"y_test has label 3, outside \[0, 3\)"),
    ({"y_train": np.arange(12) % 3 - 1}, r"y_train has labels outside \[0, 2\).*\[-1\]"),
    ({"y_train": np.eye(3)[np.arange(12) % 3]}, r"y_train has shape \(12, 3\).*not one-hot"),
    ({"x_test": None}, r"missing array\(s\) x_test"),
    # at least two classes, non-empty splits (a one-class data set would report 100 %)
    ({"y_train": np.zeros(12, np.int64), "y_test": np.zeros(6, np.int64)},
     r"every training label is 0, expected images of at least 2 classes"),
    ({"y_train": np.zeros(12, np.int64), "y_test": np.arange(6) % 2}, r"every training label is 0"),
    ({"num_classes": np.int64(1), "y_train": np.zeros(12, np.int64), "y_test": np.zeros(6, np.int64)},
     r"num_classes is 1, expected at least 2"),
    ({"x_test": np.zeros((0, 32, 32, 3), np.uint8), "y_test": np.zeros(0, np.int64)},
     r"x_test is empty \(0 images\)"),
    ({"x_train": np.zeros((0, 32, 32, 3), np.uint8), "y_train": np.zeros(0, np.int64)},
     r"x_train is empty \(0 images\)"),
    ({"num_classes": np.array([3, 3])}, r"member 'num_classes' is \[3, 3\].*integer scalar"),
    # every member a numeric array, extra ones included
    ({"class_names": np.array(["cat", "dog", "eel"])}, r"member 'class_names' has dtype <U3, expected a num"),
    ({"meta": np.zeros(2, dtype=[("a", "i4")])}, r"member 'meta' has dtype .*expected a numeric array"),
])
def test_bad_npz_gives_a_clear_error_naming_the_problem(tmp_path, change, match):
    arrays = {**_arrays(), **change}
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(DatasetFormatError, match=match) as err:
        load_dataset("bad", root=tmp_path)
    assert str(tmp_path / "bad.npz") in str(err.value)


class _RunsCodeWhenUnpickled:
    """Unpickling this creates the file ``marker``: the proof that a loader ran code from a data file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_member_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    payload = np.empty(1, dtype=object)
    payload[0] = _RunsCodeWhenUnpickled(marker)
    np.savez(tmp_path / "evil.npz", **_arrays(), extra=payload)  # np.savez pickles object arrays
    assert not marker.exists()
    with pytest.raises(DatasetFormatError, match=r"member 'extra' is an object array.*refused") as e:
        load_dataset("evil", root=tmp_path)
    assert not marker.exists() and "\n" not in str(e.value) and str(tmp_path / "evil.npz") in str(e.value)
    load_module.list_datasets(tmp_path)  # listing the data sets reads only the zip directory
    assert not marker.exists()


def test_npz_with_a_non_array_member_or_not_npz_at_all_is_refused(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, **_arrays())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", b"hello")
    with pytest.raises(DatasetFormatError, match=r"odd.npz: member 'notes.txt' is not a numpy array"):
        load_dataset("odd", root=tmp_path)
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DatasetFormatError, match=r"single.npz: holds a single array, expected a .npz"):
        load_dataset("single", root=tmp_path)
    (tmp_path / "pickled.npz").write_bytes(pickle.dumps({"x_train": 1}))
    with pytest.raises(DatasetFormatError, match=r"pickled.npz: not a .npz file"):
        load_dataset("pickled", root=tmp_path)
    (tmp_path / "truncated.npz").write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DatasetFormatError, match=r"truncated.npz: not a readable .npz file"):
        load_dataset("truncated", root=tmp_path)


def test_unknown_name_lists_what_is_available(tmp_path):
    np.savez(tmp_path / "mine.npz", **_arrays())
    with pytest.raises(DatasetNotFoundError,
                       match=r"'nope'.*: cifar10, cifar100, digits, stl10, svhn, svhn_extra, mine"):
        load_dataset("nope", root=tmp_path)


def test_image_dataset_validates_its_arrays():
    a = _arrays()
    with pytest.raises(DatasetFormatError, match="labels outside"):
        ImageDataset("x", a["x_train"], a["y_train"], a["x_test"], a["y_test"], num_classes=2, kind="npz",
                     family=None, source="test")
    with pytest.raises(DatasetFormatError, match="num_classes is 1, expected at least 2"):
        ImageDataset("x", a["x_train"], a["y_train"] * 0, a["x_test"], a["y_test"] * 0, num_classes=1,
                     kind="npz", family=None, source="test")
    with pytest.raises(ValueError, match="hflip must be a bool"):
        ImageDataset("x", **a, num_classes=3, kind="npz", family=None, source="test", hflip="no")
    assert not hasattr(ImageDataset, "describe")  # removed as unused; record_fields() describes a data set


# ----------------------------------------------------------------------------- names that are paths


def test_dataset_given_as_a_relative_path_loads_that_file(tmp_path, monkeypatch):
    (tmp_path / "foo").mkdir()
    np.savez(tmp_path / "foo" / "bar.npz", **_arrays())
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("./foo/bar.npz", root=tmp_path / "elsewhere")
    assert (ds.name, ds.source) == ("bar", "foo/bar.npz")
    assert load_dataset("foo/bar.npz").fingerprint == ds.fingerprint
    (tmp_path / "foo" / "bar.npz").rename(tmp_path / "foo" / "bar.data")  # any file name, given as a path
    assert load_dataset("foo/bar.data").fingerprint == ds.fingerprint


def test_dataset_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"--dataset \./nope/x.npz: nope/x.npz does not exist"):
        load_dataset("./nope/x.npz")
    with pytest.raises(DatasetNotFoundError, match=r"absent.npz does not exist"):
        load_dataset(str(tmp_path / "absent.npz"))


def test_dataset_given_as_a_folder_is_refused_with_the_right_flags(tmp_path, mini):
    with pytest.raises(DatasetNotFoundError, match=r"is a folder, expected a data set name.*path of a \.npz"):
        load_dataset(str(tmp_path))
    folder = write_miniature_cifar(tmp_path, "cifar10", *mini["cifar10"])
    with pytest.raises(DatasetNotFoundError, match=rf"so use --data-root {tmp_path} --dataset cifar10"):
        load_dataset(str(tmp_path) + "/")
    ds = load_dataset(str(folder))  # the official folder itself: handled, its parent is the root
    assert (ds.name, ds.source) == ("cifar10", str(folder))
    (tmp_path / "real-dir.npz").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"real-dir.npz is a folder"):
        load_dataset(str(tmp_path / "real-dir.npz"))


# ---------------------------------------------------------------------------------------- data root


def test_resolve_data_root_precedence_explicit_then_env_then_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_DATA", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert load_module.source_checkout() == repo  # the tests run from the checkout
    assert resolve_data_root() == repo / "datasets" == resolve_data_root("")
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"


def _installed_package(tmp_path, monkeypatch, pyproject: str | None = None) -> Path:
    """Make the loader believe it was imported from ``<tmp>/site-packages/ssl_bench`` (a wheel install)."""
    site = tmp_path / "site-packages"
    (site / "ssl_bench").mkdir(parents=True)
    if pyproject is not None:
        (site / "pyproject.toml").write_text(pyproject)
    monkeypatch.setattr(load_module, "PACKAGE_DIR", site / "ssl_bench")
    monkeypatch.delenv("SSL_BENCH_DATA", raising=False)
    return site


def test_installed_package_keeps_data_in_the_user_cache(tmp_path, monkeypatch):
    _installed_package(tmp_path, monkeypatch, pyproject='[project]\nname = "someone-else"\n')
    assert load_module.source_checkout() is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root() == tmp_path / "xdg" / "ssl-bench"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unusable in ("", "relative/cache"):  # unset, or relative (invalid by the XDG spec): ~/.cache
        monkeypatch.setenv("XDG_CACHE_HOME", unusable)
        assert resolve_data_root() == tmp_path / "home" / ".cache" / "ssl-bench"
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "env"))  # the overrides still win
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "cli") == tmp_path / "cli"


def test_checkout_is_recognised_by_the_projects_own_pyproject(tmp_path, monkeypatch):
    site = _installed_package(tmp_path, monkeypatch, pyproject="[project]\nname='ssl-bench'\n")
    assert load_module.source_checkout() == site and resolve_data_root() == site / "datasets"
    (site / "pyproject.toml").write_text('[project]\nname = "ssl-bench-plugins"\n')
    assert load_module.source_checkout() is None


def test_installed_package_downloads_into_the_user_cache(tmp_path, monkeypatch, served_archive):
    _installed_package(tmp_path, monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = load_dataset("cifar10")
    assert ds.source == str(tmp_path / "xdg" / "ssl-bench" / "cifar-10-batches-py")

