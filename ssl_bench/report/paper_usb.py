"""USB's published classic-CV numbers: the second reference of the leaderboard, beside the paper's Table 6.

``ssl_bench/paper_usb.json`` (package data) holds microsoft/Semi-supervised-learning ``results/classic_cv.csv``
(file commit and date inside) for FlexMatch, FreeMatch, SoftMatch, AdaMatch, Dash, SimMatch and USB's own
FixMatch and supervised runs, turned from error rates into top-1 accuracy (``100 - error``), with USB's
protocol and its caveats: the numbers are the *best* evaluation (ssl-bench's ``teacher_best``) of an EMA
teacher (smooth ``tma``), and USB's classic CIFAR-100 uses WRN-28-2 where the papers use WRN-28-8.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

USB_TABLE_FILE = "paper_usb.json"


@functools.lru_cache(maxsize=1)
def load_usb_table() -> dict[str, Any]:
    """The stored USB table (source, protocol, note, columns, rows); rows are unique per algorithm."""
    table = json.loads(resources.files("ssl_bench.report").joinpath(USB_TABLE_FILE).read_text(encoding="utf-8"))
    names = [row["algorithm"] for row in table["rows"]]
    if len(names) != len(set(names)):
        raise ValueError(f"{USB_TABLE_FILE} lists an algorithm twice: {sorted(names)}")
    return table


def usb_columns(family: str | None) -> list[int]:
    """The label budgets USB reports for ``family`` (``cifar10``, ``cifar100``); empty for another family."""
    return [int(n) for n in load_usb_table()["columns"].get(family or "", [])]


def usb_number(algorithm: str, family: str | None, labels: int) -> tuple[float, float] | None:
    """USB's ``(top-1 accuracy, std over its 3 seeds)`` in percent, or None where USB has no such cell.

    The statistic is USB's best evaluation of an EMA teacher: compare with a record's ``teacher_best`` of a
    ``tma`` teacher (``load_usb_table()["source"]["statistic"]``).
    """
    for row in load_usb_table()["rows"]:
        if row["algorithm"] == algorithm:
            cell = row.get(family or "", {}).get(str(labels))
            return None if cell is None else (float(cell["accuracy"]), float(cell["std"]))
    return None
