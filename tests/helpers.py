"""Helpers shared by the end-to-end tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
from pathlib import Path


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv rows without the wall-clock column, for comparing two runs' numbers exactly."""
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.pop("elapsed_s")
    return rows
