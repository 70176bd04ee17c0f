"""Data sources that are not what they claim (issue 21): each is one line naming the source and the fix, and a run
over it creates nothing (no run folder, no data root, no partial download).

- a folder in CIFAR's layout whose files are not the official size or labels is refused, not recorded as
  ``cifar10 (full)``; the official sizes and label hashes are checked against /work/shared/data's label arrays;
  the same for SVHN's and STL-10's layouts and their official sizes;
- constant-colour images (per-channel std 0) are refused where the data set is built, before any run folder;
- a dataset path that is a device or a FIFO is refused without being opened (no hang);
- a bad ``SSL_BENCH_<NAME>_URL`` (malformed, unreachable, the wrong file, a device) names the variable, its value
  and the fix. Only local ``file://`` URLs are used.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ssl_bench.cli import main
from ssl_bench.data import DatasetFormatError, ImageDataset, load_dataset, stl10, svhn
from ssl_bench.data.cifar import CIFAR_SPECS, check_official, labels_sha256

SMOKE = ["--profile", "smoke", "--labels", "20", "--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def no_network(tmp_path_factory, monkeypatch):
    """Every download URL points at an absent local file unless a test sets its own: nothing here goes online."""
    nowhere = tmp_path_factory.mktemp("offline") / "absent.tar.gz"
    for var in ("SSL_BENCH_CIFAR10_URL", "SSL_BENCH_CIFAR100_URL", "SSL_BENCH_SVHN_TRAIN_URL",
                "SSL_BENCH_SVHN_TEST_URL", "SSL_BENCH_STL10_URL"):
        monkeypatch.setenv(var, nowhere.as_uri())


def one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("ssl-bench: downloading")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def write_official_format(root: Path, name: str, per_file: int) -> Path:
    """A folder in ``name``'s official layout and file format, each file holding ``per_file`` random images."""
    spec = CIFAR_SPECS[name]
    folder = root / spec.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in spec.train_files + spec.test_files:
        entry = {b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 spec.label_key: [int(v) for v in np.arange(per_file) % spec.num_classes]}
        (folder / f).write_bytes(pickle.dumps(entry, protocol=2))
    return folder


# ------------------------------------------------------------------------- CIFAR folders of another size


def test_the_declared_official_sizes_and_label_hashes_are_those_of_the_official_label_arrays(shared_data):
    path = shared_data / "cifar_labels.npz"
    if not path.exists():
        pytest.skip(f"{path} not found; set SSL_BENCH_DATA to the folder with cifar_labels.npz")
    with np.load(path) as labels:
        c10 = np.split(labels["cifar10_train"], 5) + [labels["cifar10_test"]]
        c100 = [labels["cifar100_train"], labels["cifar100_test"]]
    for name, arrays in (("cifar10", c10), ("cifar100", c100)):
        spec = CIFAR_SPECS[name]
        files = spec.train_files + spec.test_files
        assert spec.official == {f: (len(y), labels_sha256(y)) for f, y in zip(files, arrays, strict=True)}
        for f, y in zip(files, arrays, strict=True):   # the official labels pass; images are not looked at
            images = np.zeros((len(y), 1), np.uint8)
            assert check_official(spec, Path(f), images, y)[1] is y
        shuffled = np.random.default_rng(0).permutation(arrays[0])   # the right count, not the official order
        with pytest.raises(DatasetFormatError, match=r"holds 10000 images but not the official labels|holds 50000"):
            check_official(spec, Path(files[0]), np.zeros((len(shuffled), 1), np.uint8), shuffled)


@pytest.mark.parametrize(("name", "first_file", "official"), [
    ("cifar10", "data_batch_1", "50000 training images in data_batch_1..5, 10000 test images in test_batch"),
    ("cifar100", "train", "50000 training images in train, 10000 test images in test"),
])
def test_a_fake_cifar_folder_of_another_size_is_refused_not_recorded_as_the_full_data_set(
        tmp_path, capsys, name, first_file, official):
    folder = write_official_format(tmp_path / "data", name, per_file=100)   # 500 training images for CIFAR-10
    results = tmp_path / "results"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", name, "--data-root", str(tmp_path / "data"),
                                  "--results-dir", str(results), "--no-download"])
    for needle in (str(folder / first_file), "holds 100 images", official, "not the official data set",
                   "np.savez", "--dataset NAME.npz", CIFAR_SPECS[name].md5):
        assert needle in err, (needle, err)
    assert not results.exists()


def test_the_registered_cifar10_subset_is_still_its_named_subset(shared_data, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["run", *SMOKE, "--dataset", "cifar10_subset", "--data-root", str(shared_data), "--results-dir",
                 str(results), "--steps", "1", "--eval-every", "1"]) == 0
    assert "dataset cifar10_subset [subset]" in capsys.readouterr().out


# ------------------------------------------------------------------- SVHN and STL-10 files of another size


def write_svhn_format(folder: Path, sizes: dict[str, int]) -> None:
    """``.mat`` files in SVHN's official format (X (32, 32, 3, N) uint8, y (N, 1) in 1..10) of the given sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in sizes.items():
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                          "y": (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]})


def write_stl10_format(folder: Path, sizes: dict[str, int]) -> None:
    """``stl10_binary/`` in STL-10's official format, each ``*_X.bin`` of the given number of images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in sizes.items():
        (folder / f"{split}_X.bin").write_bytes(rng.integers(0, 256, n * stl10.IMAGE_BYTES, dtype=np.uint8).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    (folder / "fold_indices.txt").write_text("\n".join(" ".join(map(str, range(k, sizes["train"], 10)))
                                                       for k in range(10)))


@pytest.mark.parametrize(("name", "first_file", "official"), [
    ("svhn", "svhn/test_32x32.mat", "73257 training images in train_32x32.mat, 26032 test images in test_32x32.mat"),
    ("svhn_extra", "svhn/test_32x32.mat", "73257 training images in train_32x32.mat, 26032 test images in "
                                          "test_32x32.mat, 531131 extra images in extra_32x32.mat"),
    ("stl10", "stl10_binary/train_X.bin", "5000 labelled training images in train_X.bin, 8000 test images in "
                                          "test_X.bin, 100000 unlabelled images in unlabeled_X.bin, 10 folds of "
                                          "1000 training indices in fold_indices.txt"),
])
def test_a_fake_svhn_or_stl10_folder_of_another_size_is_refused_not_recorded_as_the_full_data_set(
        tmp_path, capsys, name, first_file, official):
    data = tmp_path / "data"
    if name == "stl10":
        write_stl10_format(data / "stl10_binary", {"train": 20, "test": 20, "unlabeled": 20})
        download = f"{stl10.STL10_ARCHIVE.filename}, MD5 {stl10.STL10_ARCHIVE.md5}"
    else:
        write_svhn_format(data / "svhn", {"train": 20, "test": 20, "extra": 20})
        download = f"test_32x32.mat (MD5 {svhn.SVHN_FILES['test'].md5})"
    results = tmp_path / "results"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", name, "--data-root", str(data),
                                  "--results-dir", str(results), "--no-download"])
    folder = (data / first_file).parent
    for needle in (f"error: {name}: {data / first_file} holds 20 images, the official file", f"({name} is {official})",
                   f"so {folder} is not the official data set and is not recorded as {name}",
                   f"Fix: replace {folder} by the official files", download, "np.savez", "--dataset NAME.npz"):
        assert needle in err, (needle, err)
    assert not results.exists()


@pytest.mark.parametrize("wrong", ["train", "test", "extra"])
def test_each_svhn_file_is_checked_against_its_official_size(tmp_path, monkeypatch, wrong):
    """One file of another size among files declared official: that file, with its real official size, is named."""
    real = dict(svhn.SVHN_IMAGES)
    for split in real:
        if split != wrong:
            monkeypatch.setitem(svhn.SVHN_IMAGES, split, 20)
    write_svhn_format(tmp_path / "svhn", {"train": 20, "test": 20, "extra": 20})
    with pytest.raises(DatasetFormatError, match=rf"svhn_extra: .*{wrong}_32x32.mat holds 20 images, the official "
                                                 rf"file {real[wrong]} \(svhn_extra is "):
        load_dataset("svhn_extra", root=tmp_path, download=False)
    if wrong != "extra":   # svhn reads train and test only
        with pytest.raises(DatasetFormatError, match=rf"svhn: .*{wrong}_32x32.mat holds 20 images"):
            load_dataset("svhn", root=tmp_path, download=False)
    else:
        assert load_dataset("svhn", root=tmp_path, download=False).kind == "full"


@pytest.mark.parametrize("wrong", ["train_X.bin", "test_X.bin", "unlabeled_X.bin"])
def test_each_stl10_file_is_checked_against_its_official_size(tmp_path, monkeypatch, wrong):
    real = dict(stl10.STL10_IMAGES)
    for f in real:
        if f != wrong:
            monkeypatch.setitem(stl10.STL10_IMAGES, f, 20)
    write_stl10_format(tmp_path / "stl10_binary", {"train": 20, "test": 20, "unlabeled": 20})
    with pytest.raises(DatasetFormatError, match=rf"stl10: .*{wrong} holds 20 images, the official file {real[wrong]} "
                                                 r"\(stl10 is "):
        load_dataset("stl10", root=tmp_path, download=False)
    monkeypatch.setitem(stl10.STL10_IMAGES, wrong, 20)   # all sizes declared: the folds are checked next
    with pytest.raises(DatasetFormatError, match=r"stl10: .*fold_indices.txt holds 10 folds of 2 training indices, "
                                                 r"the official file 10 of 1000 \(stl10 is "):
        load_dataset("stl10", root=tmp_path, download=False)
    monkeypatch.setattr(stl10, "STL10_FOLDS", (10, 2))   # and these folds: the same folder loads
    assert load_dataset("stl10", root=tmp_path, download=False).kind == "full"


# ----------------------------------------------------------------------------------- constant colours


def constant_npz(path: Path, colour: tuple[int, int, int]) -> Path:
    x = np.broadcast_to(np.array(colour, np.uint8), (40, 8, 8, 3)).copy()
    y = np.arange(40) % 2
    np.savez(path, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    return path


def test_constant_colour_images_are_one_line_before_any_run_folder(tmp_path, capsys):
    path = constant_npz(tmp_path / "flat.npz", (7, 7, 7))
    results = tmp_path / "results"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", str(path), "--results-dir", str(results)])
    for needle in (str(path), "every training image is the same flat colour", "red 7, green 7, blue 7",
                   "std 0", "Fix: rebuild the images"):
        assert needle in err, (needle, err)
    assert "normalize" not in err
    assert not results.exists()   # the run failed before open_run_dirs: no orphan failed run folder


def test_one_constant_channel_is_named():
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    x[..., 2] = 0   # no blue anywhere
    y = np.arange(20) % 2
    with pytest.raises(DatasetFormatError, match=r"'mine' \(here\): the blue channel is the same in every pixel "
                                                 r"\(x_train blue 0 everywhere, std 0\).*np.repeat"):
        ImageDataset(name="mine", x_train=x, y_train=y, x_test=x, y_test=y, num_classes=2, kind="npz",
                     family=None, source="here")


# ------------------------------------------------------------------------------- devices and FIFOs


@pytest.mark.parametrize("kind", ["/dev/null", "a link to /dev/zero"])
def test_a_device_as_the_dataset_is_one_line_and_nothing_is_created(tmp_path, capsys, kind):
    path = "/dev/null"
    if kind != "/dev/null":
        path = str(tmp_path / "zero.npz")
        os.symlink("/dev/zero", path)
    results = tmp_path / "results"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", path, "--results-dir", str(results)])
    assert f"--dataset {path}: {path} is a character device, not a data file" in err and "regular .npz" in err
    assert not results.exists()


def test_a_fifo_as_the_dataset_is_one_line_and_never_blocks(tmp_path):
    """In a subprocess with a timeout: opening a FIFO blocks until someone writes, which used to hang the run
    (reading the data set's declared family opened it)."""
    fifo, results = tmp_path / "pipe.npz", tmp_path / "results"
    os.mkfifo(fifo)
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "mine.npz")   # and one in the data root, given by name
    for dataset in (str(fifo), "mine"):
        done = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "run", *SMOKE, "--dataset", dataset,
                               "--data-root", str(root), "--results-dir", str(results)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "is a FIFO (named pipe), not a" in done.stderr and "Traceback" not in done.stderr
    assert not results.exists() and sorted(p.name for p in root.iterdir()) == ["mine.npz"]


# ------------------------------------------------------------------------------------ download URLs


def wrong_archive(tmp_path: Path) -> Path:
    """A readable tarball that is not the official one (its MD5 differs)."""
    src = tmp_path / "payload.txt"
    src.write_text("not CIFAR\n")
    archive = tmp_path / "mirror.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="payload.txt")
    return archive


@pytest.mark.parametrize("case", ["unreachable", "no scheme", "unknown scheme", "bad IPv6", "no host",
                                  "wrong file", "a device"])
def test_a_bad_download_url_names_the_variable_its_value_and_the_fix(tmp_path, capsys, monkeypatch, case):
    value = {"unreachable": (tmp_path / "absent" / "cifar-10-python.tar.gz").as_uri(), "no scheme": "not a url",
             "unknown scheme": "htp://mirror.example/cifar-10-python.tar.gz", "bad IPv6": "http://[::1",
             "no host": "https:///cifar-10-python.tar.gz", "wrong file": wrong_archive(tmp_path).as_uri(),
             "a device": "file:///dev/zero"}[case]
    monkeypatch.setenv("SSL_BENCH_CIFAR10_URL", value)
    root, results = tmp_path / "root", tmp_path / "results"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", "cifar10", "--data-root", str(root),
                                  "--results-dir", str(results)])
    for needle in (f"SSL_BENCH_CIFAR10_URL={value!r}", "unset SSL_BENCH_CIFAR10_URL",
                   CIFAR_SPECS["cifar10"].url, CIFAR_SPECS["cifar10"].md5):
        assert needle in err, (needle, err)
    assert not root.exists() and not results.exists()   # no data root, no partial download, no run folder


@pytest.mark.parametrize(("dataset", "var"), [("svhn", "SSL_BENCH_SVHN_TRAIN_URL"), ("stl10", "SSL_BENCH_STL10_URL")])
def test_the_other_official_data_sets_name_their_variable_too(tmp_path, capsys, monkeypatch, dataset, var):
    monkeypatch.setenv(var, "not a url")
    root = tmp_path / "root"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", dataset, "--data-root", str(root),
                                  "--results-dir", str(tmp_path / "results")])
    assert f"{var}='not a url'" in err and f"unset {var}" in err
    assert not root.exists()


@pytest.mark.parametrize(("dataset", "var", "official"), [
    ("cifar10", "SSL_BENCH_CIFAR10_URL", CIFAR_SPECS["cifar10"].remote),
    ("svhn", "SSL_BENCH_SVHN_TRAIN_URL", svhn.SVHN_FILES["train"]),
])
def test_a_wrong_file_at_a_url_from_the_variable_names_the_variable_and_its_fix_first(
        tmp_path, capsys, monkeypatch, dataset, var, official):
    """Retrying the same URL cannot help: the line opens with the variable, its value and the fix."""
    value = wrong_archive(tmp_path).as_uri()
    monkeypatch.setenv(var, value)
    root = tmp_path / "root"
    err = one_error_line(capsys, ["run", *SMOKE, "--dataset", dataset, "--data-root", str(root),
                                  "--results-dir", str(tmp_path / "results")])
    assert err.startswith(f"error: {dataset}: {var}={value!r}: the file there has MD5 "), err
    fix = err.index(f"Fix: unset {var} to download the official {official.url}, or point it at a copy of "
                    f"{official.filename} with MD5 {official.md5}.")
    assert fix < err.index("deleted") and "Retry" not in err
    assert not root.exists()


def test_the_corruption_sets_url_is_named_too(tmp_path, monkeypatch):
    from ssl_bench.data.corruptions import load_official_corruptions
    from ssl_bench.errors import UserError

    root = tmp_path / "root"
    monkeypatch.setenv("SSL_BENCH_CIFAR10_C_URL", "not a url")
    with pytest.raises(UserError, match=r"SSL_BENCH_CIFAR10_C_URL='not a url': not a URL .*unset SSL_BENCH_CIFAR10_C"):
        load_official_corruptions(root, "cifar10", download=True)
    monkeypatch.setenv("SSL_BENCH_CIFAR10_C_URL", (tmp_path / "absent.tar").as_uri())
    with pytest.raises(FileNotFoundError, match=r"Downloading SSL_BENCH_CIFAR10_C_URL='file://.*absent.tar' failed"):
        load_official_corruptions(root, "cifar10", download=True)
    assert not root.exists()
