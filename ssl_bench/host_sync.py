"""Catch host-device synchronisations on the CPU: every way a tensor's value can reach the host, refused.

On a GPU a training step that reads a value back (``.item()``, ``bool(t)``, ``.tolist()``) or whose output
shape depends on the data (``nonzero``, ``unique``, boolean-mask indexing, ``bincount``, which sizes its
output from the data's maximum) makes the host wait for the device: the host can no longer queue the next
kernels while the GPU works, and such a step cannot be captured in a CUDA graph. On the CPU nothing waits, so
``no_host_sync()`` makes those reads fail loudly instead: it patches the Python entry points
(``Tensor.item / tolist / numpy / __array__ / __bool__ / __int__ / __float__ / __index__``) and watches every
ATen call with a ``TorchDispatchMode`` for the ops that read back or whose shape depends on the values
(``_local_scalar_dense`` is what every scalar read ends in). One CPU-only read is replaced by what CUDA does:
``F.one_hot(y, num_classes)`` checks the class range with ``.item()`` on the CPU but not on CUDA, where it is
a plain scatter (aten/src/ATen/native/Onehot.cpp: "for cuda, rely on device assert thrown by scatter"); inside
the block it runs that scatter (``one_hot(y)`` without num_classes still reads the maximum back, on every
device, and is refused). On CUDA, ``torch.cuda.set_sync_debug_mode``
does the same from inside the driver calls (``tests/test_step_sync.py`` uses both).

``sync_reason`` names the ATen calls that sync (``benchmarks/bench_step.py --launches`` counts them per phase).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ATen ops that read a value back to the host or size their output from the data (so the host must wait).
SYNC_OPS = frozenset({
    "aten._local_scalar_dense",     # .item(), bool(t), int(t), float(t), t.__index__() all end here
    "aten.is_nonzero",               # bool(t) on one element
    "aten.equal",                    # torch.equal returns a Python bool
    "aten.allclose",
    "aten.nonzero", "aten.argwhere",
    "aten.masked_select",
    "aten.bincount",                 # output length = max(data) + 1
    "aten.unique", "aten._unique", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive",
    "aten.unique_dim_consecutive",
    "aten.repeat_interleave",        # without output_size: the output length is the data's sum
    "aten.histogram", "aten._histogramdd_bin_edges",
})
PATCHED_METHODS = ("item", "tolist", "numpy", "__array__", "__bool__", "__int__", "__float__", "__index__")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class HostSyncError(AssertionError):
    """A tensor's value was read by the host (or an op's shape depended on it) inside ``no_host_sync()``."""


def _where() -> str:
    """The innermost frame of the project's own code (ssl_bench/ or algorithms/) that led here."""
    frames = [f for f in traceback.extract_stack()[:-2]
              if str(PROJECT_ROOT) in f.filename and "/tests/" not in f.filename and f.filename != __file__]
    if not frames:
        return "outside the project's code"
    f = frames[-1]
    return f"{Path(f.filename).relative_to(PROJECT_ROOT)}:{f.lineno} ({f.name}: {(f.line or '').strip()})"


def sync_reason(func, args: tuple, kwargs: dict) -> str | None:
    """Why the ATen call `func(*args, **kwargs)` makes the host wait for a GPU, or None if it does not."""
    name = f"aten.{func._schema.name.split('::')[-1]}"
    if name in SYNC_OPS and not (name == "aten.repeat_interleave" and kwargs.get("output_size") is not None):
        return f"{name} reads the device back"
    if name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
            return f"{name} with a boolean mask (its shape is the mask's count)"
    return None


class _SyncOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs)
        if reason is not None:
            raise HostSyncError(f"{reason}, at {_where()}")
        return func(*args, **kwargs)


def _one_hot_as_on_cuda(original):
    def one_hot(tensor: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
        if num_classes < 0:
            return original(tensor, num_classes)
        out = torch.zeros((*tensor.shape, num_classes), dtype=torch.long, device=tensor.device)
        return out.scatter_(-1, tensor.unsqueeze(-1), 1)
    return one_hot


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Raise HostSyncError at the first read of a tensor's value by the host inside the block."""
    originals = {name: getattr(torch.Tensor, name) for name in PATCHED_METHODS}
    one_hot = torch.nn.functional.one_hot

    def refuse(name: str):
        def method(self, *args, **kwargs):
            raise HostSyncError(f"Tensor.{name} reads the device back, at {_where()}")
        return method

    try:
        for name in PATCHED_METHODS:
            setattr(torch.Tensor, name, refuse(name))
        torch.nn.functional.one_hot = _one_hot_as_on_cuda(one_hot)
        with _SyncOps():
            yield
    finally:
        torch.nn.functional.one_hot = one_hot
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
