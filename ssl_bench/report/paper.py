"""The paper's Table 6 and the question "did this run use the paper's configuration?".

Table 6 of Huang et al., "Spatial Ensemble" (NeurIPS 2021) is stored in ``ssl_bench/paper_table6.json``
(package data, with its source and transcription notes). A run is in the **paper configuration**, and its
leaderboard cell shows the paper's number beside it, when its *effective* settings are the reference's:

* the ``full`` profile's protocol: the full data set, the family's default model, the profile's steps,
  batch and evaluation cadence;
* the algorithm's effective hyper-parameters and every other setting that
  ``ssl_bench.algorithm.reference_configuration(algorithm, dataset_family)`` names (mu, lr, weight decay,
  ...), the strong augmentation and the momentum equal to the reference values, however they were set
  (defaults or ``--alg-arg``);
* the smoothing settings the strategy reads at the paper's values (layer-wise, p = 0.5, m = 0.999).

A setting that differs from the reference is a *deviation*: it gives the run a leaderboard row of its own.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ssl_bench import algorithm as algorithm_registry
from ssl_bench.config import PROFILES, RunConfig
from ssl_bench.errors import UserError
from ssl_bench.models import default_model
from ssl_bench.records import RunRecord
from ssl_bench.smoothing import PARAMETER_DEFAULTS

PAPER_PROFILE = "full"
PAPER_DATASET_KIND = "full"
PAPER_TABLE_FILE = "paper_table6.json"
# The paper's smoothing settings are smoothing.py's defaults (their sources are cited there): layer-wise
# units, p = 0.5 (Sec. 4.1, FixMatch), m = 0.999 (FixMatch's EMA), buffers as the reference's EMA.
PAPER_SMOOTHING: dict[str, Any] = PARAMETER_DEFAULTS


@functools.lru_cache(maxsize=1)
def load_paper_table() -> dict[str, Any]:
    """The paper's Table 6 as stored in ``ssl_bench/paper_table6.json`` (package data)."""
    table = json.loads(resources.files("ssl_bench.report").joinpath(PAPER_TABLE_FILE).read_text(encoding="utf-8"))
    keys = [(row["algorithm"], row["smooth"]) for row in table["rows"]]
    if len(keys) != len(set(keys)):
        raise UserError(f"{PAPER_TABLE_FILE} maps two rows to the same (algorithm, smooth) key")
    return table


def paper_columns(family: str | None) -> list[int]:
    """The label budgets of ``family`` in the paper's Table 6 (empty for a family the paper lacks)."""
    return [int(n) for n in load_paper_table()["columns"].get(family or "", [])]


def paper_statistic(algorithm: str, smooth: str) -> str:
    """How the paper's row for (algorithm, smooth) was read off a training (a results key: the median of the
    last 20 evaluations for the FixMatch codebase's baselines, the last evaluation for the paper's own
    FixMatch rows; ``paper_table6.json`` ``statistic_notes``)."""
    for row in load_paper_table()["rows"]:
        if row["algorithm"] == algorithm and row["smooth"] == smooth:
            return str(row.get("statistic", "teacher_median_last20"))
    return "teacher_median_last20"


def paper_number(algorithm: str, smooth: str, family: str | None, labels: int) -> float | None:
    """The paper's top-1 for (algorithm, smooth) on ``family`` with ``labels`` labels, or None."""
    for row in load_paper_table()["rows"]:
        if row["algorithm"] == algorithm and row["smooth"] == smooth:
            value = row.get(family or "", {}).get(str(labels))
            return None if value is None else float(value)
    return None


# ----------------------------------------------------------------------------------------------------
# Reference settings and deviations from them


def reference_settings(algorithm: str, family: str | None) -> dict[str, Any] | None:
    """The reference's settings for ``algorithm`` on ``family``; None when the registry has none for it.

    None for a plug-in: only built-in names are looked up, so no file named by a record is imported. Then
    the record's ``alg_overrides`` decide (:func:`deviations`).
    """
    found = _reference_settings(algorithm_registry.reference_configuration, algorithm_registry.builtin_algorithms,
                                algorithm, family)
    return None if found is None else dict(found)


@functools.lru_cache(maxsize=256)
def _reference_settings(reference: Any, builtins: Any, algorithm: str,
                        family: str | None) -> tuple[tuple[str, Any], ...] | None:
    # Cached (a lookup scans the algorithm files, ~1 ms; a leaderboard asks a few times per record), keyed
    # by the registry's functions too, so a replaced one (tests) is asked afresh.
    # Built-in names only: a record naming a plug-in file must not make the leaderboard import (run) it.
    if algorithm not in builtins():
        return None
    try:
        settings = dict(reference(algorithm, family))
    except (LookupError, ValueError):  # a family without a reference
        return None
    return tuple({**_protocol_settings(), **settings}.items())


# Settings the reference shares across algorithms, whose reference value is RunConfig's default (the
# sources are cited in ssl_bench/config.py): the strong augmentation pool and the SGD momentum.
PROTOCOL_SETTINGS = ("strong_augment", "momentum")


def _protocol_settings() -> dict[str, Any]:
    """The reference values of :data:`PROTOCOL_SETTINGS` (those RunConfig declares with a fixed default)."""
    defaults = {}
    for name in PROTOCOL_SETTINGS:
        spec = RunConfig.__dataclass_fields__.get(name)
        if spec is not None and isinstance(spec.default, str | int | float):
            defaults[name] = spec.default
    return defaults


_RECORD_FIELDS = frozenset(RunRecord.__dataclass_fields__)


def effective_value(record: RunRecord, name: str) -> Any:
    """The run's effective value of a reference setting: its hyper-parameters first, then record fields."""
    if record.alg_args and name in record.alg_args:
        return record.alg_args[name]
    if name in _RECORD_FIELDS:
        return getattr(record, name, None)
    return record.settings.get(name)


def same_value(a: Any, b: Any) -> bool:
    """Equal, with floats compared to 1e-9 relative (0.95 typed on a command line equals the default 0.95)."""
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    if number(a) and number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def deviations(record: RunRecord) -> dict[str, Any]:
    """The settings in which the run differs from the reference (name -> the run's value).

    A setting the record does not know (an older record) is not a deviation; it only withholds the paper
    number (:func:`is_paper_configuration`).
    """
    reference = reference_settings(record.algorithm, record.dataset_family)
    if reference is None:
        return dict(record.alg_overrides or {})
    out = {}
    for name, wanted in reference.items():
        value = effective_value(record, name)
        if value is not None and not same_value(value, wanted):
            out[name] = value
    return out


def smoothing_at_paper_values(settings: Mapping[str, Any]) -> bool:
    """The strategy's settings (only those it reads) at the paper's values: layer-wise, p = 0.5, m = 0.999."""
    return all(same_value(value, PAPER_SMOOTHING[name]) for name, value in settings.items()
               if name in PAPER_SMOOTHING)


def follows_paper_protocol(record: RunRecord) -> bool:
    """The ``full`` profile's protocol: full data set, the family's default model, steps, batch, cadence."""
    if record.profile != PAPER_PROFILE or record.dataset_kind != PAPER_DATASET_KIND:
        return False
    try:
        model = default_model(record.dataset_family)
    except ValueError:
        return False
    full = PROFILES[PAPER_PROFILE]
    # The evaluation cadence matters too: the statistic is the median of the last 20 evaluations.
    return (record.model == model and record.steps == full.steps and record.batch_size == full.batch_size
            and record.eval_every == full.eval_every)


def is_paper_configuration(record: RunRecord, smoothing_settings: Mapping[str, Any]) -> bool:
    """True when the run's effective settings are the paper's (see the module docstring)."""
    if not (follows_paper_protocol(record) and smoothing_at_paper_values(smoothing_settings)):
        return False
    reference = reference_settings(record.algorithm, record.dataset_family)
    if reference is None:
        return not record.alg_overrides
    return all(effective_value(record, name) is not None for name in reference) and not deviations(record)
