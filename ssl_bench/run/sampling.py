"""Batches of indices drawn without a DataLoader: shuffled passes over an index set, as many as needed.

Each stream walks through random permutations of its index set, so every image is seen once per
pass; a labelled set smaller than the batch (40 labels, batch 64) simply spans several passes in
one batch, as FixMatch does by repeating the labelled set. The permutations come from the stream's
own seeded CPU generator (cheap, and identical on every device), saved in checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ssl_bench.errors import UserError


class IndexStream:
    """Endless shuffled passes over ``indices``; ``next(n)`` returns the next ``n`` of them."""

    def __init__(self, indices: np.ndarray | torch.Tensor, seed: int) -> None:
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        if self.indices.numel() == 0:
            raise UserError("cannot sample batches from an empty index set")
        self.generator = torch.Generator().manual_seed(int(seed))
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def next(self, n: int) -> torch.Tensor:
        parts, need = [], n
        while need > 0:
            if self._pos == len(self._order):
                self._order = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
                self._pos = 0
            take = min(need, len(self._order) - self._pos)
            parts.append(self._order[self._pos:self._pos + take])
            self._pos += take
            need -= take
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._order = state["order"].clone()
        self._pos = int(state["pos"])


def rank_seed(seed: int, stream: str, rank: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, stream, data-parallel rank)."""
    # A fixed mixing of the three (not Python's hash(), which is salted per process).
    code = {"labeled": 1, "unlabeled": 2, "augment": 3, "smoother": 4, "algorithm": 5}[stream]
    return int(np.random.SeedSequence([int(seed), code, int(rank)]).generate_state(1)[0])


def to_device(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without a host-device sync (pinned + non_blocking on CUDA)."""
    if device is None:
        return t
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
