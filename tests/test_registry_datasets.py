"""The data registry and its data sets: declared families, SVHN and STL-10 in their official formats (miniatures
written here), downloads from file:// URLs (corrupt, truncated), image folders, 96-px augmentation and models, smoke
runs, and the FixMatch paper's Table 2 as reference data."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from ssl_bench.augment import TRANSLATE_FRACTION, strong_augment, weak_augment
from ssl_bench.config import RunConfig
from ssl_bench.data import ChecksumError, DatasetFormatError, DatasetNotFoundError, load_dataset
from ssl_bench.data import imagefolder as imagefolder_module
from ssl_bench.data import stl10 as stl10_module
from ssl_bench.data import svhn as svhn_module
from ssl_bench.data.download import RemoteFile, md5_of
from ssl_bench.data.published import fixmatch_table2_accuracy, fixmatch_table2_columns, load_fixmatch_table2
from ssl_bench.data.registry import DATASETS, FAMILIES, FIXMATCH_TABLE2, SE_TABLE6, family_of
from ssl_bench.models import build_model, check_model_name, default_model
from ssl_bench.report.paper import paper_columns
from ssl_bench.run.build import build_training, plan_teachers
from ssl_bench.run.loop import next_batch, train


@pytest.fixture(autouse=True)
def no_network(tmp_path_factory, monkeypatch):
    """Point every SVHN / STL-10 URL at an absent local file: no test here can reach the network by accident."""
    nowhere = (tmp_path_factory.mktemp("offline") / "absent").as_uri()
    for spec in (*svhn_module.SVHN_FILES.values(), stl10_module.STL10_ARCHIVE):
        monkeypatch.setenv(spec.url_env, nowhere)


@pytest.fixture(autouse=True)
def miniature_counts_as_official(monkeypatch, svhn_mini, stl_mini):
    """The miniature SVHN / STL-10 files of these tests stand in for the official ones: their sizes are declared
    official here. (tests/test_data_safety.py checks that, with the real declaration, files of other sizes are
    refused.)"""
    for split, (x, _) in svhn_mini.items():
        monkeypatch.setitem(svhn_module.SVHN_IMAGES, split, len(x))
    for split in ("train", "test", "unlabeled"):
        x = stl_mini[split][0] if split != "unlabeled" else stl_mini[split]
        monkeypatch.setitem(stl10_module.STL10_IMAGES, f"{split}_X.bin", len(x))
    monkeypatch.setattr(stl10_module, "STL10_FOLDS", (10, 2))   # write_stl10's folds: 10 lines of 2 indices


def _arrays(n_train=12, n_test=6, classes=3, side=32):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n_train, side, side, 3), dtype=np.uint8),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.integers(0, 256, (n_test, side, side, 3), dtype=np.uint8),
            "y_test": np.arange(n_test) % classes}


# ---------------------------------------------------------------------------------------------- families


def test_a_file_name_is_never_a_family(tmp_path):
    np.savez(tmp_path / "cifar10_anything.npz", **_arrays())
    np.savez(tmp_path / "cifar100_anything.npz", **_arrays())
    for name in ("cifar10_anything", "cifar100_anything"):
        assert load_dataset(name, root=tmp_path).family is None
        assert family_of(name, tmp_path) is None
        assert family_of(str(tmp_path / f"{name}.npz")) is None
    # no CIFAR-100 reference settings for a file merely named so: the '*' weight decay and the no-family model
    (c,) = plan_teachers([RunConfig(dataset="cifar100_anything", data_root=str(tmp_path), profile="full")])
    assert (c.weight_decay, c.model) == (5e-4, "wrn28_2")


def test_a_declared_family_brings_its_reference_settings(tmp_path):
    np.savez(tmp_path / "mine.npz", **_arrays(), family="cifar100")
    assert load_dataset("mine", root=tmp_path).family == "cifar100"
    (c,) = plan_teachers([RunConfig(dataset="mine", data_root=str(tmp_path), profile="full")])
    # algorithms/fixmatch.py reference['cifar100'] and the registry's CIFAR-100 model
    assert (c.weight_decay, c.model) == (1e-3, "wrn28_8")


@pytest.mark.parametrize("stored,shown", [("cifar-10", "'cifar-10'"), (np.array(["cifar10", "svhn"]), "cifar10"),
                                          (3, "3")])
def test_an_unknown_family_member_is_refused_with_the_known_ones(tmp_path, stored, shown):
    np.savez(tmp_path / "bad.npz", **_arrays(), family=stored)
    with pytest.raises(DatasetFormatError, match=rf"member 'family' is .*{shown}.*expected one of cifar10, cifar100"):
        load_dataset("bad", root=tmp_path)


def test_every_family_has_a_buildable_default_model_and_the_table6_budgets_match_the_paper_file():
    for name, fam in FAMILIES.items():
        check_model_name(fam.default_model)
        assert default_model(name) == fam.default_model
        assert paper_columns(name) == list(fam.budgets.get(SE_TABLE6, ()))
    assert default_model(None) == "wrn28_2"
    assert {d.family for d in DATASETS.values()} - {None} <= set(FAMILIES)


def test_registered_entries_agree_with_what_their_loaders_build(shared_data):
    for name in ("digits", "cifar10_subset"):
        spec, ds = DATASETS[name], load_dataset(name, root=shared_data)
        assert (ds.family, ds.hflip, ds.num_classes, ds.kind, ds.x_train.shape[1]) == (
            spec.family, spec.hflip, spec.num_classes, spec.kind, spec.image_size)


# ------------------------------------------------------------------------------------------------- SVHN


def write_svhn(folder: Path, split: str, x: np.ndarray, digits: np.ndarray) -> Path:
    """An official-format .mat: X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 stored as 10."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}_32x32.mat"
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"X": np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "y": y})
    return path


@pytest.fixture
def svhn_mini():
    rng = np.random.default_rng(1)
    return {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10)
            for split, n in (("train", 20), ("test", 10), ("extra", 30))}


def test_svhn_official_files_round_trip_with_the_digit_zero_as_class_zero(tmp_path, svhn_mini):
    for split, (x, y) in svhn_mini.items():
        write_svhn(tmp_path / "svhn", split, x, y)
    ds = load_dataset("svhn", root=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train, svhn_mini["train"][0])
    np.testing.assert_array_equal(ds.y_train, svhn_mini["train"][1])   # stored 10 -> class 0
    np.testing.assert_array_equal(ds.x_test, svhn_mini["test"][0])
    assert (ds.family, ds.hflip, ds.kind, ds.x_unlabeled) == ("svhn", False, "full", None)
    both = load_dataset("svhn_extra", root=tmp_path, download=False)
    np.testing.assert_array_equal(both.x_train, np.concatenate([svhn_mini["train"][0], svhn_mini["extra"][0]]))
    np.testing.assert_array_equal(both.y_train, np.concatenate([svhn_mini["train"][1], svhn_mini["extra"][1]]))
    assert (both.family, both.hflip) == ("svhn_extra", False)


def test_svhn_missing_without_download_names_the_files_and_the_fixes(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"svhn: .*lacks train_32x32.mat, test_32x32.mat.*"
                                                   r"remove --no-download.*e26dedcc434d2e4c54c9b2d4a06d8373"):
        load_dataset("svhn", root=tmp_path, download=False)


@pytest.fixture
def served_svhn(tmp_path, svhn_mini, monkeypatch):
    """The miniature files served at file:// URLs and published as the official ones (their MD5s)."""
    for split, (x, y) in svhn_mini.items():
        path = write_svhn(tmp_path / "served", split, x, y)
        spec = svhn_module.SVHN_FILES[split]
        monkeypatch.setenv(spec.url_env, path.as_uri())
        monkeypatch.setitem(svhn_module.SVHN_FILES, split, RemoteFile(spec.url, md5_of(path), spec.url_env))
    return tmp_path / "served"


def test_svhn_is_downloaded_md5_checked_and_loaded(tmp_path, svhn_mini, served_svhn):
    ds = load_dataset("svhn", root=tmp_path / "root")
    np.testing.assert_array_equal(ds.x_train, svhn_mini["train"][0])
    assert sorted(p.name for p in (tmp_path / "root" / "svhn").iterdir()) == ["test_32x32.mat", "train_32x32.mat"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_or_truncated_svhn_download_is_refused_and_leaves_nothing(tmp_path, served_svhn, damage):
    served = served_svhn / "train_32x32.mat"
    data = served.read_bytes()
    served.write_bytes(data[:len(data) // 2] if damage == "truncate" else
                       data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=svhn_module.SVHN_FILES["train"].md5):
        load_dataset("svhn", root=root)
    assert not (root / "svhn" / "train_32x32.mat").exists()
    assert not [p for p in root.rglob("*") if p.is_file() and p.name != "test_32x32.mat"]  # no partial file


def test_a_truncated_svhn_file_in_place_is_a_format_error_with_the_fix(tmp_path, svhn_mini):
    for split in ("train", "test"):
        write_svhn(tmp_path / "svhn", split, *svhn_mini[split])
    path = tmp_path / "svhn" / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DatasetFormatError, match=r"train_32x32.mat: not a readable SVHN .mat file.*delete it"):
        load_dataset("svhn", root=tmp_path, download=False)


# ----------------------------------------------------------------------------------------------- STL-10


def stl_bytes(images: np.ndarray) -> bytes:
    """HWC images -> the official layout: per image 3 channels, each 96x96 stored column-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()


@pytest.fixture
def stl_mini():
    rng = np.random.default_rng(2)
    return {"train": (rng.integers(0, 256, (20, 96, 96, 3), dtype=np.uint8), np.arange(20) % 10),
            "test": (rng.integers(0, 256, (10, 96, 96, 3), dtype=np.uint8), np.arange(10) % 10),
            "unlabeled": rng.integers(0, 256, (30, 96, 96, 3), dtype=np.uint8)}


def write_stl10(root: Path, mini: dict) -> Path:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        x, y = mini[split]
        (folder / f"{split}_X.bin").write_bytes(stl_bytes(x))
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # official labels 1..10
    (folder / "unlabeled_X.bin").write_bytes(stl_bytes(mini["unlabeled"]))
    (folder / "fold_indices.txt").write_text("\n".join(" ".join(map(str, range(k, 20, 10))) for k in range(10)))
    return folder


def test_stl10_column_major_files_become_hwc_images_and_the_unlabelled_set_stays_mapped(tmp_path, stl_mini):
    write_stl10(tmp_path, stl_mini)
    ds = load_dataset("stl10", root=tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train, stl_mini["train"][0])
    np.testing.assert_array_equal(ds.y_train, stl_mini["train"][1])
    np.testing.assert_array_equal(ds.x_test, stl_mini["test"][0])
    np.testing.assert_array_equal(ds.x_unlabeled, stl_mini["unlabeled"])
    assert isinstance(ds.x_unlabeled.base, np.memmap) and not ds.x_unlabeled.flags.writeable  # never copied
    assert (ds.family, ds.hflip, ds.x_train.shape[1:]) == ("stl10", True, (96, 96, 3))
    # one hand-checked pixel: row 5, column 70, green = byte 1*96*96 + 70*96 + 5 of the image's record
    raw = (tmp_path / "stl10_binary" / "train_X.bin").read_bytes()[3 * 27648: 4 * 27648]  # image 3's record
    assert ds.x_train[3, 5, 70, 1] == raw[9216 + 70 * 96 + 5]
    # the extra images change the data set's identity (one pixel of them; their number is the official one)
    other = dict(stl_mini, unlabeled=stl_mini["unlabeled"].copy())
    other["unlabeled"][-1, 0, 0, 0] ^= 1
    write_stl10(tmp_path / "other", other)
    assert load_dataset("stl10", root=tmp_path / "other", download=False).fingerprint != ds.fingerprint


@pytest.mark.parametrize("file,cut,match", [("unlabeled_X.bin", 100, "not a whole number of 3x96x96 images"),
                                            ("train_y.bin", 1, "19 labels for 20 images")])
def test_truncated_stl10_files_are_format_errors_with_the_fix(tmp_path, stl_mini, file, cut, match):
    path = write_stl10(tmp_path, stl_mini) / file
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DatasetFormatError, match=rf"{file}: .*{match}"):
        load_dataset("stl10", root=tmp_path, download=False)


@pytest.fixture
def served_stl10(tmp_path, stl_mini, monkeypatch):
    folder = write_stl10(tmp_path / "src", stl_mini)
    archive = tmp_path / "served" / "stl10_binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="stl10_binary")
    spec = stl10_module.STL10_ARCHIVE
    monkeypatch.setenv(spec.url_env, archive.as_uri())
    monkeypatch.setattr(stl10_module, "STL10_ARCHIVE", RemoteFile(spec.url, md5_of(archive), spec.url_env))
    return archive


def test_stl10_archive_is_downloaded_md5_checked_extracted_and_loaded(tmp_path, stl_mini, served_stl10):
    ds = load_dataset("stl10", root=tmp_path / "root")
    np.testing.assert_array_equal(ds.x_unlabeled, stl_mini["unlabeled"])
    assert (tmp_path / "root" / "stl10_binary.tar.gz").is_file()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_or_truncated_stl10_archive_is_refused_and_nothing_extracted(tmp_path, served_stl10, damage):
    data = served_stl10.read_bytes()
    served_stl10.write_bytes(data[:len(data) // 2] if damage == "truncate" else
                             data[:500] + bytes([data[500] ^ 0xFF]) + data[501:])
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=stl10_module.STL10_ARCHIVE.md5):
        load_dataset("stl10", root=root)
    assert not [p for p in root.rglob("*") if p.is_file()]
    with pytest.raises(DatasetNotFoundError, match=rf"stl10: .*lacks train_X.bin.*{stl10_module.STL10_ARCHIVE.md5}"):
        load_dataset("stl10", root=root, download=False)  # nothing half-written is picked up later


def test_stl10_missing_without_download_names_the_official_archive(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"remove --no-download.*stl10_binary.tar.gz \(MD5 "
                                                   r"91f7769df0f17e558f3565bffb0c7dfb, from http://ai.stanford"):
        load_dataset("stl10", root=tmp_path, download=False)


def test_a_tarball_with_an_unsafe_member_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.bin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    spec = stl10_module.STL10_ARCHIVE
    monkeypatch.setenv(spec.url_env, archive.as_uri())
    monkeypatch.setattr(stl10_module, "STL10_ARCHIVE", RemoteFile(spec.url, md5_of(archive), spec.url_env))
    with pytest.raises(DatasetFormatError, match="unsafe path"):
        load_dataset("stl10", root=tmp_path / "root")
    assert not (tmp_path / "escaped.bin").exists()


# ------------------------------------------------------------------------------------------ image folders


def write_folder(root: Path, per_class: int = 4, unlabeled: int = 3) -> Path:
    from PIL import Image

    colours = {"cat": (200, 30, 10), "dog": (10, 40, 220)}
    for split, n in (("train", per_class), ("test", 2)):
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 30), colour).save(root / split / name / f"{i}.png")
    (root / "unlabeled").mkdir()
    for i in range(unlabeled):
        Image.new("RGB", (20, 50), (i, i, i)).save(root / "unlabeled" / f"u{i}.jpg", quality=100)
    return root


def test_image_folder_loads_classes_in_sorted_order_resized_and_cached(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    ds = load_dataset(f"imagefolder:{root}@16")
    assert ds.x_train.shape == (8, 16, 16, 3) and ds.x_test.shape == (4, 16, 16, 3)
    assert ds.x_unlabeled.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(ds.y_train, [0, 0, 0, 0, 1, 1, 1, 1])  # cat = 0, dog = 1 (sorted names)
    assert (ds.x_train[:4] == (200, 30, 10)).all() and (ds.x_train[4:] == (10, 40, 220)).all()  # flat colours
    assert (ds.family, ds.kind, ds.hflip, ds.name) == (None, "folder", True, f"imagefolder:{root}@16")
    caches = list(root.glob(".ssl-bench-cache-16px-*.npz"))
    assert len(caches) == 1

    def no_decoding(path, size):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(imagefolder_module, "decode", no_decoding)
    assert load_dataset(f"imagefolder:{root}@16").fingerprint == ds.fingerprint  # from the cache
    monkeypatch.undo()
    from PIL import Image

    Image.new("RGB", (30, 30), (0, 255, 0)).save(root / "train" / "cat" / "new.png")
    assert len(load_dataset(f"imagefolder:{root}@16").x_train) == 9  # a new image: a new cache
    assert len(list(root.glob(".ssl-bench-cache-16px-*.npz"))) == 2


def test_image_folder_keeps_the_centre_square_without_stretching(tmp_path):
    from PIL import Image

    root = write_folder(tmp_path / "pets")
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, :20], img[:, 20:40], img[:, 40:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(img).save(root / "train" / "cat" / "0.png")
    x = load_dataset(f"imagefolder:{root}@20").x_train[0]
    # shorter side 20 -> unchanged scale; the centre 20 columns are the green third, exactly
    assert (x == (0, 255, 0)).all()


@pytest.mark.parametrize("spec,error,match", [
    ("imagefolder:{root}@abc", DatasetNotFoundError, r"image size after '@' must be an integer >= 8"),
    ("imagefolder:{root}/nowhere", DatasetNotFoundError, r"nowhere does not exist; expected .*train/<class>"),
])
def test_bad_image_folder_specs_are_one_line_with_the_form(tmp_path, spec, error, match):
    with pytest.raises(error, match=match):
        load_dataset(spec.format(root=tmp_path))


def test_image_folder_test_classes_must_be_train_classes(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "test" / "bird").mkdir()
    with pytest.raises(DatasetFormatError, match=r"class folder\(s\) \['bird'\] that train/ lacks"):
        load_dataset(f"imagefolder:{root}")


def test_a_broken_image_is_named(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match=r"broken.png is not a readable image"):
        load_dataset(f"imagefolder:{root}")


# ------------------------------------------------------------------------------------- 96 px: augment, model


def test_weak_shift_at_96_px_is_the_references_12_px():
    # reference DEFAULT_AUGMENT['stl10'] = Primitives.ms(12): reflect-pad 12 and crop; 12.5 % of the side
    rows = torch.arange(96, dtype=torch.uint8).view(1, 1, 96, 1).expand(64, 1, 96, 96)
    cols = torch.arange(96, dtype=torch.uint8).view(1, 1, 1, 96).expand(64, 1, 96, 96)
    x = torch.cat([rows, cols, torch.zeros_like(rows)], dim=1).contiguous()
    out = weak_augment(x, torch.Generator().manual_seed(0), flip=False)
    # the centre pixel (48, 48) moves by the draw's offset: within +-12, and the draws reach the bound
    dy = out[:, 0, 48, 48].long() - 48
    dx = out[:, 1, 48, 48].long() - 48
    assert round(TRANSLATE_FRACTION * 96) == 12
    assert dy.abs().max() <= 12 and dx.abs().max() <= 12 and max(dy.abs().max(), dx.abs().max()) >= 10
    strong = strong_augment(x, torch.Generator().manual_seed(0), flip=True)
    assert strong.shape == x.shape and strong.dtype == torch.uint8


def test_the_stl10_network_has_the_references_five_scales():
    model = build_model(default_model("stl10"), 10)
    assert [g[0].conv1.out_channels for g in model.groups] == [32, 64, 128, 256, 512]  # filters << scale
    assert len(model.groups[0]) == 4  # repeat=4
    features = model.groups(model.stem(torch.zeros(1, 3, 96, 96)))
    assert features.shape == (1, 512, 6, 6)  # 96 / 2**4
    assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 10)


# ------------------------------------------------------------------------------------------- smoke runs


def smoke(tmp_path: Path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", smooth="tma", labels=10, profile="smoke",
                results_dir=str(tmp_path / "results"), device="cpu")
    base.update(changes)
    return RunConfig(**base)


def test_smoke_run_on_svhn_miniature(tmp_path, svhn_mini):
    for split in ("train", "test"):
        write_svhn(tmp_path / "data" / "svhn", split, *svhn_mini[split])
    record, _ = train(smoke(tmp_path, dataset="svhn", data_root=str(tmp_path / "data")), progress=False)
    assert record["status"] == "finished" and record["dataset_family"] == "svhn" and record["hflip"] is False


def test_smoke_run_on_stl10_miniature_draws_from_the_unlabelled_files(tmp_path, stl_mini):
    write_stl10(tmp_path / "data", stl_mini)
    config = smoke(tmp_path, dataset="stl10", data_root=str(tmp_path / "data"))
    run = build_training(config)
    assert run.x_unlabeled_pool.shape == (50, 3, 96, 96)
    np.testing.assert_array_equal(run.x_unlabeled_pool[20:].permute(0, 2, 3, 1).numpy(), stl_mini["unlabeled"])
    drawn = torch.cat([run.streams.unlabeled.next(25) for _ in range(4)])
    assert drawn.max() >= 20 and drawn.min() < 20 and drawn.max() < 50  # train and unlabelled images
    assert next_batch(run).u[0].shape == (run.config.batch_size * run.config.mu, 3, 96, 96)
    record, _ = train(config, progress=False)
    assert record["status"] == "finished" and record["dataset_family"] == "stl10"


def test_smoke_run_on_an_image_folder(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=6)
    record, _ = train(smoke(tmp_path, dataset=f"imagefolder:{root}", labels=4), progress=False)
    assert record["status"] == "finished" and record["dataset_family"] is None


# ------------------------------------------------------------------------------------ FixMatch Table 2


def test_table2_budgets_are_the_registrys_and_values_are_accuracies():
    for family in ("svhn", "stl10"):
        assert fixmatch_table2_columns(family) == list(FAMILIES[family].budgets[FIXMATCH_TABLE2])
    assert fixmatch_table2_accuracy("fixmatch", "svhn", 40) == (96.04, 2.17)         # 100 - 3.96 (RA)
    assert fixmatch_table2_accuracy("fixmatch", "svhn", 40, "cta") == (92.35, 7.65)  # 100 - 7.65 (CTA)
    assert fixmatch_table2_accuracy("pi_model", "svhn", 40) is None                  # '-' in the paper
    assert fixmatch_table2_accuracy("fixmatch", "cifar10", 40) is None               # not transcribed here
    # independent source: the paper's STL-10 results as Papers-with-Code lists them (percentage correct)
    independent = {("pi_model", None): 73.77, ("pseudo_label", None): 72.01, ("mean_teacher", None): 78.57,
                   ("mixmatch", None): 89.59, ("uda", None): 92.34, ("remixmatch", None): 94.77,
                   ("fixmatch", "ramc"): 92.02, ("fixmatch", "cta"): 94.83}
    for (algorithm, augment), accuracy in independent.items():
        assert fixmatch_table2_accuracy(algorithm, "stl10", 1000, augment)[0] == accuracy
    table = load_fixmatch_table2()
    assert json.loads(json.dumps(table)) == table and "Table 2" in table["source"]["table"]


# ------------------------------------------------------------------------------ the reference's split rules


def test_distribution_allocation_hand_worked_and_on_svhns_class_sizes():
    from ssl_bench.data.splits import distribution_counts

    # sizes (1, 3), budget 4, by hand: stats (1/3, 1); picks 1, 0, 1, 1 -> (1, 3)
    assert distribution_counts(np.array([1, 3]), 4).tolist() == [1, 3]
    # a tie goes to the first class in the reference's order
    assert distribution_counts(np.array([2, 2]), 1).tolist() == [1, 0]
    assert distribution_counts(np.array([2, 2]), 1, order=(1, 0)).tolist() == [0, 1]
    # SVHN train class sizes of the digits 0..9 (official train_32x32.mat), budget 40, reference class order
    sizes = np.array([4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659])
    order = DATASETS["svhn"].class_order
    assert distribution_counts(sizes, 40, order).tolist() == [3, 7, 6, 4, 4, 4, 3, 3, 3, 3]
    assert distribution_counts(sizes, 250, order).sum() == 250


def test_svhn_splits_follow_the_class_distribution_and_svhn_extra_is_balanced(tmp_path, monkeypatch):
    from ssl_bench.data.registry import split_for

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(10), [10, 30, 20, 10, 10, 10, 10, 10, 10, 10])  # digit 1 three times as common
    x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    for split in ("train", "test", "extra"):
        write_svhn(tmp_path / "svhn", split, x, y)
        monkeypatch.setitem(svhn_module.SVHN_IMAGES, split, len(y))   # this miniature's size stands for official
    svhn = load_dataset("svhn", root=tmp_path, download=False)
    per_class = np.bincount(svhn.y_train[split_for(svhn, 14, 0).labeled], minlength=10)
    # by hand (reference order 1, 2, .., 9, 0; stats 1, 2/3, 1/3 x 8): picks 1, 2, 3, .., 9, 0, then 1, 2, 1 and
    # at the 14th an all-zero tie that goes to the first class, the digit 1
    assert per_class.tolist() == [1, 4, 2, 1, 1, 1, 1, 1, 1, 1]
    extra = load_dataset("svhn_extra", root=tmp_path, download=False)
    assert np.bincount(extra.y_train[split_for(extra, 20, 0).labeled], minlength=10).tolist() == [2] * 10


def test_stl10_budget_of_a_fold_is_the_official_fold(tmp_path, stl_mini):
    from ssl_bench.data.registry import split_for

    write_stl10(tmp_path, stl_mini)  # fold k holds the training indices k and k + 10
    ds = load_dataset("stl10", root=tmp_path, download=False)
    assert ds.folds.shape == (10, 2)
    split = split_for(ds, 2, 3)
    assert split.labeled.tolist() == [3, 13] and len(split.unlabeled) == 20
    with pytest.raises(ValueError, match=r"10 official label folds.*0\.\.9"):
        split_for(ds, 2, 10)
    assert len(split_for(ds, 10, 0).labeled) == 10  # another budget: the class-balanced draw


@pytest.mark.parametrize("dataset,labels,expected", [
    ("svhn", "40", ["32 px, no flips, family svhn: reference['*'] (no 'svhn' entry) of algorithms/fixmatch.py",
                    "default model wrn28_2: FixMatch paper", "weight_decay=0.0005", "mu=7", "model=wrn28_2"]),
    ("stl10", "1000", ["96 px, mirrored, family stl10", "wrn28_2_s5: google-research/fixmatch fixmatch.py",
                       "scales = ilog2(96) - 2 = 5", "model=wrn28_2_s5", "labels=1000"]),
])
def test_dry_run_shows_the_reference_settings_with_their_sources(capsys, tmp_path, dataset, labels, expected):
    from ssl_bench.cli import main

    assert main(["--alg", "fixmatch", "--dataset", dataset, "--labels", labels, "--data-root", str(tmp_path),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, text
    assert not any(tmp_path.iterdir())  # nothing downloaded or read


@pytest.mark.parametrize("name", ["wrn28_2_s0", "wrn27_2_s5"])
def test_bad_wide_resnet_scales_are_refused(name):
    with pytest.raises(ValueError, match="a Wide ResNet needs"):
        check_model_name(name)
