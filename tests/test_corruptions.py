"""The CIFAR-10-C reader on miniature generated files, and the synthetic-c corruptions' closed forms."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_bench.data.base import DatasetFormatError, DatasetNotFoundError
from ssl_bench.data.corruptions import (
    OFFICIAL,
    SYNTHETIC_CORRUPTIONS,
    SYNTHETIC_NAME,
    SYNTHETIC_SEVERITY,
    load_official_corruptions,
    read_corruption_folder,
    synthetic_corrupt,
    synthetic_corruptions,
)

N = 4      # test images per severity in the miniature files


def make_folder(root: Path, corruptions=("fog", "saturate"), n: int = N) -> Path:
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(n) % 10, 5)
    np.save(folder / "labels.npy", labels)
    for k, name in enumerate(corruptions):
        x = np.zeros((5 * n, 32, 32, 3), dtype=np.uint8)
        for s in range(5):                               # pixel value = 10 * corruption + severity + image
            x[s * n:(s + 1) * n] = (10 * k + s + 1 + np.arange(n))[:, None, None, None]
        np.save(folder / f"{name}.npy", x)
    return folder


def test_reader_slices_each_severity(tmp_path: Path) -> None:
    make_folder(tmp_path)
    c = load_official_corruptions(tmp_path, "cifar10")
    assert c.name == "cifar10-c" and c.corruptions == ("fog", "saturate") and c.per_severity == N
    x = c.images("saturate", 3)
    assert x.shape == (N, 32, 32, 3) and x.dtype == np.uint8
    assert x[:, 0, 0, 0].tolist() == [10 + 3 + i for i in range(N)]
    assert c.labels(5).tolist() == list(range(N))
    assert len(list(c)) == 2 * 5


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="56bf5dcef84df0e2308c6dcbcbbd8499"):
        load_official_corruptions(tmp_path, "cifar10")
    folder = make_folder(tmp_path)
    np.save(folder / "fog.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match="7 rows, expected 20"):
        read_corruption_folder(folder, "x").images("fog", 1)
    np.save(folder / "fog.npy", np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetFormatError, match="not a plain numeric"):
        read_corruption_folder(folder, "x").images("fog", 1)
    np.save(folder / "labels.npy", np.arange(20))
    with pytest.raises(DatasetFormatError, match="labels differ"):
        read_corruption_folder(folder, "x")
    with pytest.raises(ValueError, match="synthetic-c"):
        load_official_corruptions(tmp_path, "digits")


def test_download_through_a_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import tarfile

    source = tmp_path / "src"
    make_folder(source)
    archive = tmp_path / "CIFAR-10-C.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source / "CIFAR-10-C", arcname="CIFAR-10-C")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    official = OFFICIAL["cifar10"]
    monkeypatch.setitem(OFFICIAL, "cifar10", dataclasses.replace(
        official, remote=dataclasses.replace(official.remote, md5=md5)))
    root = tmp_path / "data"
    root.mkdir()
    c = load_official_corruptions(root, "cifar10", download=True, url=archive.as_uri())
    assert c.images("fog", 2)[0, 0, 0, 0] == 2


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_synthetic_is_seeded_and_named() -> None:
    assert SYNTHETIC_NAME == "synthetic-c"
    clean = (images() * 255).round().to(torch.uint8)
    a = list(synthetic_corruptions(clean, seed=3))
    b = list(synthetic_corruptions(clean, seed=3))
    assert len(a) == len(SYNTHETIC_CORRUPTIONS) * 5
    assert all(x[:2] == y[:2] and torch.equal(x[2], y[2]) and x[2].dtype == torch.uint8
               for x, y in zip(a, b, strict=True))
    c = dict(((name, s), x) for name, s, x in synthetic_corruptions(clean, seed=4))
    assert not torch.equal(c[("gaussian_noise", 1)], a[0][2])
    assert torch.equal(c[("contrast", 1)], a[10][2])            # deterministic corruptions ignore the seed
    with pytest.raises(ValueError, match="uint8"):
        next(synthetic_corruptions(images(), seed=0))


def test_contrast_closed_form() -> None:
    x = images()
    for s in range(1, 6):
        c = SYNTHETIC_SEVERITY["contrast"][s - 1]
        mean = x.mean(dim=(2, 3), keepdim=True)
        out = synthetic_corrupt(x, "contrast", s, torch.Generator())
        assert torch.allclose(out, (x - mean) * c + mean, atol=1e-6)      # inside [0, 1]: no clipping


def test_brightness_closed_form() -> None:
    x = torch.tensor([[0.2, 0.4, 0.1], [0.0, 0.0, 0.0], [0.9, 0.5, 0.95]]).T.reshape(1, 3, 1, 3)
    out = synthetic_corrupt(x, "brightness", 3, torch.Generator())          # c = 0.15
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.2, 0.4, 0.1]) * (0.55 / 0.4))   # V 0.4 -> 0.55
    assert torch.allclose(out[0, :, 0, 1], torch.full((3,), 0.15))           # black -> grey V'
    assert torch.allclose(out[0, :, 0, 2], torch.tensor([0.9, 0.5, 0.95]) / 0.95)          # V capped at 1


def test_noise_blur_and_pixelate() -> None:
    flat = torch.full((2, 3, 16, 16), 0.5)
    for name in ("gaussian_blur", "pixelate", "contrast"):
        assert torch.allclose(synthetic_corrupt(flat, name, 5, torch.Generator()), flat, atol=1e-6), name
    noisy = synthetic_corrupt(torch.full((4, 3, 32, 32), 0.5), "gaussian_noise", 5,
                              torch.Generator().manual_seed(0))
    assert (noisy - 0.5).std().item() == pytest.approx(0.10, rel=0.05)
    delta = torch.zeros(1, 1, 9, 9)
    delta[0, 0, 4, 4] = 1.0
    blurred = synthetic_corrupt(delta, "gaussian_blur", 5, torch.Generator())   # sigma 1: sums to 1 inside
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-4) and blurred[0, 0, 4, 4] < 0.2
    x = images(1)
    pixelated = synthetic_corrupt(x, "pixelate", 5, torch.Generator())          # 8 -> 5 -> 8 pixels
    assert pixelated.unique().numel() <= 5 * 5 * 3
