"""Long-form exports for pandas and spreadsheets: every run record (``ssl-bench export``) and every paired
comparison (``ssl-bench compare --format csv|json``), one row per run or per difference.

A run's row holds what identifies it (``run_id``, ``status``, its training and teacher), every identifying setting
exactly as ``record.settings`` holds it (``RunConfig.identity()``: a new setting appears as a column by itself),
what the record says about the data and the machine, and every statistic of ``record.results``. CSV cells are
plain text (``alg_args`` as JSON); the JSON export keeps the types.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from ssl_bench.records import RunRecord
from ssl_bench.report.compare import Comparison

EXPORT_FORMATS = ("csv", "json")
# Beside the settings and the statistics: which run it is, and what the record says about its data and machine.
RUN_FIELDS = ("run_id", "status", "training", "teacher", "algorithm", "targets_from", "dataset", "alg_args",
              "alg_overrides")
DESCRIPTION_FIELDS = ("dataset_kind", "dataset_family", "dataset_fingerprint", "train_size", "split_hash",
                      "steps_done", "algorithm_sha256", "device", "commit", "started", "finished", "wall_seconds")


def run_rows(runs: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """One row per run: identification, ``settings.*``, description, ``results.*`` (column names unprefixed;
    a statistic never shares a name with a setting)."""
    rows = []
    for run in runs:
        data = run.to_dict()
        row: dict[str, Any] = {k: data.get(k) for k in RUN_FIELDS}
        row["status"] = getattr(run.status, "value", run.status)
        row.update(data.get("settings") or {})
        row.update({k: data.get(k) for k in DESCRIPTION_FIELDS})
        clash = set(data.get("results") or {}) & set(row)
        if clash:   # a bug in the record format, not in the user's data
            raise RuntimeError(f"record {run.run_id}: results keys {sorted(clash)} shadow other columns")
        row.update(data.get("results") or {})
        rows.append(row)
    return rows


def comparison_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """One row per paired difference: its section, what is compared with what, and the paired statistics."""
    rows = []
    for comp in comparisons:
        for kind, arms in (("strategy_minus_tma", comp.arms), ("gain_over_supervised", comp.over_supervised)):
            for arm in arms:
                d = arm.diff
                rows.append({**comp.section._asdict(), "labels": comp.labels, "stat": comp.stat, "kind": kind,
                             "algorithm": comp.algorithm, "arm": arm.label, "baseline": arm.baseline_label,
                             "n": d.n, "mean": d.mean, "std": d.std, "ci_low": d.low, "ci_high": d.high,
                             "arm_mean": arm.arm_mean, "baseline_mean": arm.baseline_mean, "paired_seeds": d.seeds,
                             "only_arm_seeds": d.only_arm, "only_baseline_seeds": d.only_baseline,
                             "verdict": d.verdict})
    return rows


def render_rows(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """``csv`` (columns in first-seen order, lists and dicts as JSON, missing cells empty) or ``json`` (a list)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=1, default=_plain) + "\n"
    if fmt != "csv":
        raise ValueError(f"format {fmt!r}; expected one of {EXPORT_FORMATS}")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return out.getvalue()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value
