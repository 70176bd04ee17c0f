"""Checkpoints: safe loads, atomic saves, exact resumes, refusal of a checkpoint that belongs to another run.

A checkpoint holds everything that determines the rest of a training (``ssl_bench.run.state.checkpoint_state``):
student, teachers, optimizer, scheduler, each smoother (with its generator), the algorithm's own module, the
run's own generators (the index streams', the augmentation's, the algorithm's: the loop never draws from a
process-wide generator after the model's initialisation), the evaluation history and the step.

Loading never runs code: ``torch.load(weights_only=True)`` accepts tensors and plain types only, so a
crafted ``checkpoint.pt`` in a shared results folder is refused instead of executed (PyTorch's own default
since 2.6). Saving therefore checks that the state holds nothing else.
"""

from __future__ import annotations

import collections
import errno as errno_codes
import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import UserError
from ssl_bench.records import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
# What every checkpoint written by the training loop has; a loadable file without them is something else.
REQUIRED_KEYS = ("step", "identity")

# Exactly the types torch's weights_only unpickler rebuilds (torch/_weights_only_unpickler.py,
# _get_allowed_globals and the pickle opcodes it accepts). Exact types, not isinstance: np.float64 is a
# float subclass, yet pickles through numpy and is refused on load.
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, bytearray, type(None), torch.device, torch.dtype)
_PLAIN_CONTAINERS = (dict, collections.OrderedDict, collections.Counter, list, tuple, set, torch.Size)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_FIX = "delete it to restart the run from step 0 (--resume keeps its directory), or restore a good copy"


class CheckpointMismatch(UserError):
    """The checkpoint was written by a run with other settings or other shapes; nothing was loaded."""


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: corrupt, empty, truncated, not a checkpoint, or unsafe."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (disk full, read-only folder); the previous checkpoint is unchanged."""


# -- saving and loading --------------------------------------------------------------------------------------


def check_plain(state: Any, name: str = "state") -> None:
    """Raise TypeError naming the first entry of ``state`` that a weights_only load would refuse.

    Allowed: tensors, bool/int/float/complex/str/bytes/None, torch.device/dtype/Size and dicts, lists,
    tuples and sets of these. A numpy array or scalar, or any other object, is refused with its key path.
    """
    kind = type(state)
    if kind in _TENSOR_TYPES or kind in _PLAIN_SCALARS:
        return
    if kind in _PLAIN_CONTAINERS:
        if isinstance(state, dict):
            for key, value in state.items():
                check_plain(key, f"{name} key {key!r}")
                check_plain(value, f"{name}[{key!r}]")
        else:
            for i, value in enumerate(state):
                check_plain(value, f"{name}[{i}]")
        return
    hint = (" (numpy values: store a torch.Tensor or a Python number instead)"
            if kind.__module__.split(".")[0] == "numpy" else "")
    raise TypeError(f"checkpoint {name} is a {kind.__module__}.{kind.__qualname__}; a checkpoint holds only "
                    f"tensors and plain types (int, float, str, bool, None, dict, list, tuple){hint}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise to memory, then write atomically: a run killed mid-write keeps its last good checkpoint.

    Raises TypeError (nothing written) if ``state`` holds anything a weights_only load would refuse, and
    CheckpointSaveError (an OSError) naming the path if the disk is full or the folder is read-only.
    """
    path = Path(path)
    check_plain(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        reason = e.strerror or str(e)
        code = f" ({errno_codes.errorcode[e.errno]})" if e.errno in errno_codes.errorcode else ""
        error = CheckpointSaveError(
            f"cannot write checkpoint {path}: {reason}{code}; the previous checkpoint there, if any, is kept "
            f"unchanged. Free disk space or make {path.parent} writable, then continue the run with --resume")
        error.errno = e.errno
        raise error from e


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: nothing in it can run code.

    A file that cannot be used (empty, truncated, corrupt, not a checkpoint, or holding objects whose
    loading would run code) raises CheckpointError: one line naming the path, what is wrong and the fix.
    Nothing is executed and nothing in the folder is changed. OSErrors (missing file, no permission) pass.
    """
    path = Path(path)
    # Opened here, read-only, so that an OSError from torch.load below can only mean bytes it cannot decode
    # (its zip reader reports some truncations as EINVAL); a missing or unreadable file fails here as itself.
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise CheckpointError(f"checkpoint {path} is empty (0 bytes), probably from a full disk or a "
                                  f"copy that failed; {_FIX}")
        try:
            state = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:   # every way torch/pickle report bytes they cannot decode: unusable file
            raise CheckpointError(_load_failure(path, e)) from e
    if not isinstance(state, dict) or not all(k in state for k in REQUIRED_KEYS):
        what = (f"a dict without {[k for k in REQUIRED_KEYS if k not in state]}" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise CheckpointError(f"{path} is not an ssl-bench checkpoint (it holds {what}, not a training "
                              f"state); {_FIX}")
    return state


def _load_failure(path: Path, error: Exception) -> str:
    """The one-line reason a checkpoint failed to load, from the error torch raised."""
    text = str(error)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return (f"refused to load checkpoint {path}: loading it would call {unsafe.group(1)}, which can run "
                f"code (nothing was run). ssl-bench checkpoints hold only tensors and plain types; a file "
                f"written by an older ssl-bench or by someone else is not one; {_FIX}")
    if isinstance(error, (EOFError, OSError)) or "central directory" in text:
        detail = "is truncated (a copy or write that did not finish)"
    else:
        first_line = text.strip().splitlines()[0][:120] if text.strip() else type(error).__name__
        if "Weights only load failed" in text:
            inner = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            first_line = inner.group(1).strip()[:120] if inner else first_line
        detail = f"is corrupt or not a checkpoint ({type(error).__name__}: {first_line})"
    return f"checkpoint {path} {detail}; {_FIX}"


# -- identity ----------------------------------------------------------------------------------------------


def shapes(module_state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Parameter and buffer shapes of a state dict, as plain lists (part of a checkpoint's identity)."""
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
            differences.append(f"{key}: checkpoint has {saved.get(key)!r}, "
                               f"this run has {expected.get(key)!r}")
    s_shapes, e_shapes = saved.get("shapes", {}), expected.get("shapes", {})
    missing = sorted(set(e_shapes) - set(s_shapes))
    extra = sorted(set(s_shapes) - set(e_shapes))
    if missing:
        differences.append(f"parameters missing from the checkpoint: {_first(missing)}")
    if extra:
        differences.append(f"parameters the model does not have: {_first(extra)}")
    wrong = [f"{k} {s_shapes[k]} vs {e_shapes[k]}" for k in sorted(set(s_shapes) & set(e_shapes))
             if s_shapes[k] != e_shapes[k]]
    if wrong:
        differences.append(f"shape mismatches (checkpoint vs model): {wrong[:5]}")
    if differences:
        raise CheckpointMismatch(f"{path} does not match this run, nothing was loaded:\n  - "
                                 + "\n  - ".join(differences)
                                 + "\nStart a new run (drop --resume) or resume with the settings in its "
                                   "config.json.")


def _first(names: list[str], n: int = 5) -> str:
    return f"{names[:n]}{' ...' if len(names) > n else ''}"
