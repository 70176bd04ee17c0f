"""Corrupted test sets: the official CIFAR-10-C / CIFAR-100-C files, and a small seeded synthetic set.

**Official** (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019): one ``<corruption>.npy`` per corruption, uint8 ``(50000, 32, 32, 3)`` = the 10,000
test images at severity 1, then severity 2, ... 5; and ``labels.npy``, int ``(50000,)`` (the test labels, five
times).  Archives on Zenodo (MD5s as listed there and in torchvision-style loaders):

* CIFAR-10-C: https://zenodo.org/records/2535967/files/CIFAR-10-C.tar, MD5 56bf5dcef84df0e2308c6dcbcbbd8499
* CIFAR-100-C: https://zenodo.org/records/3555552/files/CIFAR-100-C.tar, MD5 11f0ed0f1191edbf9fa23466ae6021d3

:func:`load_official_corruptions` reads a user's copy (``<root>/CIFAR-10-C/``) or downloads and extracts the
archive (MD5-checked, progress shown, atomic: :mod:`ssl_bench.data.download`; 2.9 GB each).  Files are memory-
mapped, never unpickled (``allow_pickle=False``).

**Synthetic** (``synthetic-c``): for data sets without official files, five corruptions computed on the device
from the clean test images, at 5 severities, seeded.  The severity constants are those of the official
generator (hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``), but the operations are torch
re-implementations (blur with replicate padding, HSV brightness in closed form, area/nearest pixelation), so
the numbers are **not** CIFAR-10-C numbers: records name the set ``synthetic-c`` and never ``cifar10-c``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.data.base import DatasetFormatError, DatasetNotFoundError
from ssl_bench.data.download import RemoteFile, obtain_official

SEVERITIES = (1, 2, 3, 4, 5)
# The 15 corruptions of the benchmark (Hendrycks & Dietterich 2019, Sec. 3 and Figure 1); the archives also
# hold 4 "extra" ones (speckle_noise, gaussian_blur, spatter, saturate), read and reported by name but left out
# of the headline mean.
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


@dataclass(frozen=True)
class CorruptionArchive:
    name: str               # the record's name of the set
    folder: str             # what the archive extracts to
    remote: RemoteFile      # the published archive, its MD5, and $SSL_BENCH_<DATASET>_C_URL that points elsewhere


OFFICIAL: dict[str, CorruptionArchive] = {
    "cifar10": CorruptionArchive("cifar10-c", "CIFAR-10-C", RemoteFile(
        "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar", "56bf5dcef84df0e2308c6dcbcbbd8499",
        "SSL_BENCH_CIFAR10_C_URL")),
    "cifar100": CorruptionArchive("cifar100-c", "CIFAR-100-C", RemoteFile(
        "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar", "11f0ed0f1191edbf9fa23466ae6021d3",
        "SSL_BENCH_CIFAR100_C_URL")),
}


@dataclass(frozen=True)
class OfficialCorruptions:
    """The corruption files found in one folder; :meth:`images` / :attr:`labels` slice one severity."""

    name: str
    folder: Path
    corruptions: tuple[str, ...]
    per_severity: int
    all_labels: np.ndarray

    def images(self, corruption: str, severity: int) -> np.ndarray:
        """uint8 ``(n, 32, 32, 3)`` images of one corruption at one severity (a memory-mapped view)."""
        if corruption not in self.corruptions:
            raise DatasetNotFoundError(f"{self.folder}: no {corruption}.npy; found {list(self.corruptions)}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity={severity!r}; expected one of {SEVERITIES}")
        x = _load(self.folder / f"{corruption}.npy", self.per_severity * len(SEVERITIES))
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise DatasetFormatError(f"{self.folder / f'{corruption}.npy'}: shape {x.shape} dtype {x.dtype}; "
                                     f"expected uint8 (5 x {self.per_severity}, H, W, 3)")
        start = (severity - 1) * self.per_severity
        return x[start:start + self.per_severity]

    def labels(self, severity: int) -> np.ndarray:
        start = (severity - 1) * self.per_severity
        return self.all_labels[start:start + self.per_severity]

    def __iter__(self) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
        """(corruption, severity, images, labels) for every file and severity."""
        for corruption in self.corruptions:
            for severity in SEVERITIES:
                yield corruption, severity, self.images(corruption, severity), self.labels(severity)


def _load(path: Path, rows: int) -> np.ndarray:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:         # an object array: would need unpickling, which runs code
        raise DatasetFormatError(f"{path}: not a plain numeric .npy ({e}); use the official files") from e
    if x.shape[0] != rows:
        raise DatasetFormatError(f"{path}: {x.shape[0]} rows, expected {rows} (5 severities x "
                                 f"{rows // len(SEVERITIES)} test images); the file is truncated or not official")
    return x


def read_corruption_folder(folder: Path, name: str) -> OfficialCorruptions:
    """Read ``labels.npy`` and list ``<corruption>.npy`` files in ``folder`` (known names only)."""
    folder = Path(folder)
    labels_path = folder / "labels.npy"
    if not labels_path.is_file():
        raise DatasetNotFoundError(f"{folder}: no labels.npy; expected the extracted official archive "
                                   f"(labels.npy and one <corruption>.npy per corruption)")
    labels = np.load(labels_path, allow_pickle=False)
    if labels.ndim != 1 or labels.shape[0] % len(SEVERITIES) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(f"{labels_path}: shape {labels.shape} dtype {labels.dtype}; expected integers "
                                 f"(5 x n,)")
    per = labels.shape[0] // len(SEVERITIES)
    if any(not np.array_equal(labels[:per], labels[k * per:(k + 1) * per]) for k in range(1, len(SEVERITIES))):
        raise DatasetFormatError(f"{labels_path}: the five severities' labels differ; expected the test labels "
                                 f"repeated five times")
    known = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    found = tuple(c for c in known if (folder / f"{c}.npy").is_file())
    if not found:
        raise DatasetNotFoundError(f"{folder}: no corruption files ({', '.join(known[:3])}, ...)")
    return OfficialCorruptions(name, folder, found, per, labels.astype(np.int64))


def load_official_corruptions(root: str | Path, dataset: str, *, download: bool = False,
                              url: str | None = None) -> OfficialCorruptions:
    """The official corruption set of ``dataset`` (``cifar10`` or ``cifar100``) under ``root``.

    Looks for ``<root>/CIFAR-10-C/``; with ``download=True`` fetches the archive (``url``: a mirror, default
    ``$SSL_BENCH_<DATASET>_C_URL`` or Zenodo's) and extracts it into ``root``.
    """
    if dataset not in OFFICIAL:
        raise ValueError(f"no official corruption files for {dataset!r} (known: {sorted(OFFICIAL)}); use the "
                         f"synthetic set (synthetic_corruptions), named 'synthetic-c' in records")
    spec, root = OFFICIAL[dataset], Path(root)
    folder, remote = root / spec.folder, spec.remote
    if not (folder / "labels.npy").is_file():
        if not download:
            raise DatasetNotFoundError(
                f"{folder}: not found. Download {remote.url} (MD5 {remote.md5}, 2.9 GB) and extract it into "
                f"{root}, or allow the download")
        # the same checks and lines as the data sets' downloads: a bad $SSL_BENCH_<DATASET>_C_URL is named
        obtain_official(spec.name, f"{folder}: not found.", remote, root / remote.filename, extract=True,
                        advice=f"download {remote.url} (MD5 {remote.md5}) by hand and extract it into {root}",
                        url=url)
    return read_corruption_folder(folder, spec.name)


# ------------------------------------------------------------------------------------------------------------
# synthetic-c
# ------------------------------------------------------------------------------------------------------------

SYNTHETIC_NAME = "synthetic-c"
# Severity constants from hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (the CIFAR-10-C generator).
SYNTHETIC_SEVERITY = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),     # noise standard deviation (pixels in [0, 1])
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),           # blur sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),              # deviations from the channel mean scaled by c
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),            # added to HSV value
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),            # down-scaling factor before scaling back
}
SYNTHETIC_CORRUPTIONS = tuple(SYNTHETIC_SEVERITY)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    # skimage.filters.gaussian (the generator's blur): truncate = 4 sigma, mode "nearest" = replicate padding.
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _brightness(x: Tensor, c: float) -> Tensor:
    # HSV value V = max(r, g, b); with H and S fixed every channel is proportional to V, so raising V to
    # min(V + c, 1) scales the pixel by V' / V (a black pixel, S = 0, becomes grey V').
    value = x.amax(dim=1, keepdim=True)
    new = (value + c).clamp(max=1.0)
    return torch.where(value > 0, x * (new / value.clamp(min=1e-12)), new.expand_as(x))


def synthetic_corrupt(images: Tensor, corruption: str, severity: int, generator: torch.Generator) -> Tensor:
    """One corruption at one severity of float images ``(N, C, H, W)`` in [0, 1]; result clipped to [0, 1]."""
    if corruption not in SYNTHETIC_SEVERITY:
        raise ValueError(f"unknown synthetic corruption {corruption!r}; choose one of {SYNTHETIC_CORRUPTIONS}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity={severity!r}; expected one of {SEVERITIES}")
    c = SYNTHETIC_SEVERITY[corruption][severity - 1]
    x = images.float()
    if corruption == "gaussian_noise":
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        out = x + c * noise
    elif corruption == "gaussian_blur":
        out = _gaussian_blur(x, c)
    elif corruption == "contrast":
        mean = x.mean(dim=(2, 3), keepdim=True)          # per image and channel, as the generator's axis=(0, 1)
        out = (x - mean) * c + mean
    elif corruption == "brightness":
        out = _brightness(x, c)
    else:                                                # pixelate: PIL BOX down, then back up (here: nearest)
        h, w = x.shape[-2:]
        small = F.interpolate(x, size=(max(1, math.floor(h * c)), max(1, math.floor(w * c))), mode="area")
        out = F.interpolate(small, size=(h, w), mode="nearest")
    return out.clamp(0.0, 1.0)


def synthetic_corruptions(images: Tensor, seed: int) -> Iterator[tuple[str, int, Tensor]]:
    """(corruption, severity, corrupted images) for the five corruptions x 5 severities of ``synthetic-c``.

    ``images``: uint8 ``(N, C, H, W)`` on any device (the test set as the evaluation holds it); the corrupted
    images are uint8 too (rounded, as the official generator's ``np.uint8``), so they go through the same
    preparation as clean ones.  Each (corruption, severity) draws from its own generator, seeded with
    ``seed`` and its position, so one cell's numbers do not depend on which others were computed.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"synthetic_corruptions takes uint8 (N, C, H, W) images; got {images.dtype} "
                         f"{tuple(images.shape)}")
    x = images.float() / 255.0
    for i, corruption in enumerate(SYNTHETIC_CORRUPTIONS):
        for severity in SEVERITIES:
            generator = torch.Generator(images.device).manual_seed(seed * 1000 + i * 10 + severity)
            out = synthetic_corrupt(x, corruption, severity, generator)
            yield corruption, severity, (out * 255.0).round().to(torch.uint8)
