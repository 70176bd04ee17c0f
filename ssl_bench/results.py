"""Run directories and run records: one directory per run, never overwritten, every write atomic.

The layout and the ``record.json`` schema are described in ``docs/CONTRACTS.md``; the leaderboard is
derived from these records alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ssl_bench

SCHEMA_VERSION = 1
# The official FixMatch reports the median of the last 20 evaluations (FixMatch paper, Sec. 4).
MEDIAN_WINDOW = 20


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a killed writer never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a run record")


def atomic_write_csv(path: Path, rows: Sequence[dict[str, Any]], first_columns: Sequence[str]) -> None:
    """Write rows as CSV with ``first_columns`` first and any other keys after them, in first-seen order."""
    columns = list(first_columns)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def run_base_name(config: Any) -> str:
    """Human-readable stem of a run directory: algorithm, smoothing, data, budget, seed and profile."""
    smooth = config.smooth if config.granularity == "layer" else f"{config.smooth}_{config.granularity}"
    dataset = Path(config.dataset).stem if config.dataset.endswith(".npz") else config.dataset
    algorithm = Path(config.algorithm).stem
    return f"{algorithm}-{smooth}-{dataset}-{config.labels}-s{config.seed}-{config.profile}"


def create_run_dir(results_dir: Path, base: str) -> Path:
    """Create a new, empty run directory ``base``, ``base-2``, ``base-3``, ... and never reuse an existing one.

    ``os.mkdir`` is atomic, so two runs that start at the same moment get different directories.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        path = results_dir / (base if k == 1 else f"{base}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"more than 10000 runs named {base!r} in {results_dir}")


def find_runs(results_dir: Path, base: str) -> list[Path]:
    """Existing run directories for the same settings, oldest first."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    found = [p for p in results_dir.iterdir()
             if p.is_dir() and (p.name == base or (p.name.startswith(base + "-") and p.name[len(base) + 1:].isdigit()))]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def git_commit() -> str | None:
    """The commit of the ssl-bench checkout, with ``+dirty`` when it has uncommitted changes."""
    repo = Path(ssl_bench.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    return {"ssl_bench": ssl_bench.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    return " ".join(["python", *sys.argv]) if sys.argv and sys.argv[0] else ""


def summarize_evaluations(history: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Both evaluation conventions, named as such.

    ``*_median_last20``: median of the last 20 evaluations (official FixMatch). ``*_best``: best
    accuracy seen (USB / TorchSSL; chosen on the test set, so optimistic). ``*_last``: final evaluation.
    """
    history = list(history)
    out: dict[str, Any] = {"num_evals": len(history)}
    for who in ("teacher", "student"):
        accs = [h[f"{who}_acc"] for h in history]
        if not accs:
            out.update({f"{who}_median_last20": None, f"{who}_best": None, f"{who}_last": None})
            continue
        out[f"{who}_median_last20"] = float(np.median(accs[-MEDIAN_WINDOW:]))
        out[f"{who}_best"] = float(max(accs))
        out[f"{who}_last"] = float(accs[-1])
    return out
