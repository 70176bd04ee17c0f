"""Helpers shared by the end-to-end tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
from pathlib import Path

# Calibration sums the test set's confidences: another --eval-batch-size (which a resume may change; it does not
# identify a run) batches the evaluation forward passes differently, the CPU's convolutions round differently at
# another batch size, and ECE / NLL move in the 6th digit (measured: 3.5e-6 relative). Top-1 (an argmax count)
# and everything else stay exact.
CALIBRATION_COLUMNS = ("teacher_ece", "teacher_nll")


class _Close(str):
    """A metrics.csv value equal to another within 1e-4 relative."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        if not self or not other:
            return str.__eq__(self, other)
        a, b = float(self), float(other)
        return abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-12)

    __hash__ = str.__hash__


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv rows without the wall-clock column, for comparing two runs' numbers exactly (the
    calibration columns within 1e-4 relative: ``CALIBRATION_COLUMNS``)."""
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.pop("elapsed_s")
        for column in CALIBRATION_COLUMNS:
            if column in row:
                row[column] = _Close(row[column])
    return rows
