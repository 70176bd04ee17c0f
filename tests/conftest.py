"""Shared test set-up: the real offline data lives in ../shared/data unless SSL_BENCH_DATA says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SSL_BENCH_DATA", REPO.parent / "shared" / "data"))

# Tests are small; one thread keeps them deterministic and leaves the second core to the rest of CI.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with cifar10_subset.npz and cifar_labels.npz; tests that need it skip loudly if it is missing."""
    if not (SHARED_DATA / "cifar10_subset.npz").exists():
        pytest.skip(f"real data not found in {SHARED_DATA}; set SSL_BENCH_DATA to the folder with cifar10_subset.npz")
    return SHARED_DATA


@pytest.fixture
def builtin_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The algorithm registry with only the built-ins (all imported): a test may register a name that another
    test's plug-in file took, and lists of algorithms show no plug-in of an earlier test."""
    import ssl_bench.algorithm as algorithm

    for name in algorithm.builtin_algorithms():
        algorithm.load_algorithm_class(name)
    monkeypatch.setattr(algorithm, "_REGISTRY", {n: c for n, c in algorithm._REGISTRY.items()
                                                 if algorithm._is_builtin(c)})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip, with one reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (pytest -m cuda on a GPU: scripts/device_check.sh)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
