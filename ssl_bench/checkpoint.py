"""Checkpoints: atomic saves, exact resumes, and refusal of a checkpoint that belongs to another run.

A checkpoint holds everything that determines the rest of a run: student, teacher, optimizer,
scheduler, the smoother (with its generator), the algorithm's own module, every random generator
(torch, numpy, python, the data sampler's, the augmenter's), the evaluation history and the step.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench.results import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointMismatch(ValueError):
    """The checkpoint was written by a run with other settings or other shapes; nothing was loaded."""


def global_rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():   # the current device's only: a resume may see another number of GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise to memory, then write atomically: a run killed mid-write keeps its last good checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds numpy / python RNG states. Only load checkpoints you wrote.
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def shapes(module_state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module_state.items()}


def check_identity(saved: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Refuse to resume from a checkpoint written by a different run, saying exactly what differs.

    ``identity`` holds the settings that make a checkpoint meaningful (algorithm, model, dataset,
    split, smoothing, budget) and the parameter shapes. Nothing is loaded unless everything matches,
    unlike loaders that stop silently at the first mismatching key.
    """
    differences = []
    for key in sorted(set(saved) | set(expected)):
        if key == "shapes":
            continue
        if saved.get(key) != expected.get(key):
            differences.append(f"{key}: checkpoint has {saved.get(key)!r}, this run has {expected.get(key)!r}")
    s_shapes, e_shapes = saved.get("shapes", {}), expected.get("shapes", {})
    missing = sorted(set(e_shapes) - set(s_shapes))
    extra = sorted(set(s_shapes) - set(e_shapes))
    if missing:
        differences.append(f"parameters missing from the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        differences.append(f"parameters the model does not have: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    wrong = [f"{k} {s_shapes[k]} vs {e_shapes[k]}" for k in sorted(set(s_shapes) & set(e_shapes))
             if s_shapes[k] != e_shapes[k]]
    if wrong:
        differences.append(f"shape mismatches (checkpoint vs model): {wrong[:5]}")
    if differences:
        raise CheckpointMismatch(f"{path} does not match this run, nothing was loaded:\n  - " + "\n  - ".join(differences)
                                 + "\nStart a new run (drop --resume) or resume with the settings in its config.json.")
