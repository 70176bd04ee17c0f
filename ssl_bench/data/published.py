"""The FixMatch paper's Table 2 for SVHN and STL-10 as reference data (``fixmatch_table2.json``, package data).

Stored as the paper prints it (error rate in percent, mean and std over 5 splits, with its source and
transcription notes in the file); read here as top-1 accuracy = 100 - error, the leaderboard's unit. The label
budgets of the table are the registry's (``FAMILIES[f].budgets["fixmatch_table2"]``); a test checks they agree.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

TABLE2_FILE = "fixmatch_table2.json"


@functools.lru_cache(maxsize=1)
def load_fixmatch_table2() -> dict[str, Any]:
    """The stored table (plain JSON types), rows keyed by (algorithm, strong_augment) checked to be unique."""
    table = json.loads(resources.files("ssl_bench.data").joinpath(TABLE2_FILE).read_text(encoding="utf-8"))
    keys = [(row["algorithm"], row["strong_augment"]) for row in table["rows"]]
    if len(keys) != len(set(keys)):
        raise ValueError(f"{TABLE2_FILE} maps two rows to the same (algorithm, strong_augment) key")
    return table


def fixmatch_table2_columns(family: str | None) -> list[int]:
    """The label budgets of ``family`` in Table 2's SVHN / STL-10 columns (empty for other families)."""
    return [int(n) for n in load_fixmatch_table2()["columns"].get(family or "", [])]


def fixmatch_table2_accuracy(algorithm: str, family: str | None, labels: int,
                             strong_augment: str | None = "ramc") -> tuple[float, float] | None:
    """(top-1 accuracy, std) in percent of ``algorithm`` on ``family`` with ``labels`` labels, or None.

    ``strong_augment`` selects among the FixMatch rows (``"ramc"``: FixMatch (RA); ``"cta"``: FixMatch (CTA));
    rows of other algorithms have none and match any value.
    """
    for row in load_fixmatch_table2()["rows"]:
        if row["algorithm"] == algorithm and row["strong_augment"] in (None, strong_augment):
            cell = row.get(family or "", {}).get(str(labels))
            return None if cell is None else (round(100.0 - float(cell[0]), 2), float(cell[1]))
    return None
