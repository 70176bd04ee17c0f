"""The running state of the post-FixMatch algorithms under data parallelism: two gloo processes (CPU).

Each rank gets its half of a batch; the state an algorithm keeps (FlexMatch's selected labels and status,
FreeMatch's and SoftMatch's averages, AdaMatch's alignment, Dash's rho_hat, SimMatch's bank and window) must
be bit-identical on both ranks and equal, to float round-off, to the state one process computes from the whole
batch (``gather_from_ranks``). The model has no BatchNorm, so the halves' outputs are the whole batch's rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

POST_FIXMATCH = ("flexmatch", "freematch", "softmatch", "adamatch", "dash", "simmatch")
WORLD_SIZE, B, MU, C, D = 2, 8, 2, 3, 12


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(D, 6)
        self.num_features = 6
        self.classifier = nn.Linear(6, C)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def batches(step: int):
    from ssl_bench.algorithm import Batch

    g = torch.Generator().manual_seed(100 + step)
    u = torch.randn(B * MU, D, generator=g) * 3
    return Batch(x=torch.randn(B, D, generator=g) * 3, y=torch.randint(0, C, (B,), generator=g),
                 u=(u, u + 0.1 * torch.randn(B * MU, D, generator=g)), progress=0.5, num_classes=C,
                 x_index=torch.arange(B) % 5, u_index=torch.randperm(B * MU, generator=g) % 11)


def half(batch, rank: int):
    from ssl_bench.algorithm import Batch

    b, u = B // WORLD_SIZE, B * MU // WORLD_SIZE
    return Batch(x=batch.x[rank * b:(rank + 1) * b], y=batch.y[rank * b:(rank + 1) * b],
                 u=tuple(v[rank * u:(rank + 1) * u] for v in batch.u), progress=batch.progress,
                 num_classes=C, x_index=batch.x_index[rank * b:(rank + 1) * b],
                 u_index=batch.u_index[rank * u:(rank + 1) * u])


def states(split: int | None) -> dict[str, dict[str, torch.Tensor]]:
    """Each algorithm's state after two loss calls, on the whole batches (None) or on this rank's halves."""
    from ssl_bench.algorithm import build_algorithm, setup_algorithm

    out = {}
    for name in POST_FIXMATCH:
        torch.manual_seed(0)
        student = TinyMLP()
        # Dash without its warm-up, FlexMatch recording predictions above 1/2 (a tiny net is never 95 % sure).
        algorithm = build_algorithm(name, {"dash": {"warmup": "0"}, "flexmatch": {"threshold": "0.5"}}.get(name))
        module = setup_algorithm(algorithm, student, C, num_labeled=5, num_unlabeled=11)
        for step in range(2):
            batch = batches(step)
            algorithm.loss(student, None, batch if split is None else half(batch, split))
        out[name] = {k: v.clone() for k, v in module.state_dict().items()
                     if not k.startswith("heads.")}   # SimMatch's heads are parameters, not running state
    return out


def _worker(out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    reference = states(None)            # before joining: one process, the whole batches
    dist.init_process_group("gloo")
    try:
        mine = states(rank)
    finally:
        dist.destroy_process_group()
    torch.save({"reference": reference, "mine": mine}, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("post_fixmatch_ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, __file__, str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r),
                                              "WORLD_SIZE": str(WORLD_SIZE), "MASTER_ADDR": "127.0.0.1",
                                              "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
             for r in range(WORLD_SIZE)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{logs[r][-4000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", POST_FIXMATCH)
def test_state_is_identical_on_every_rank_and_equals_one_process_of_the_global_batch(ranks, name):
    zero, one = ranks
    assert zero["mine"][name].keys() == zero["reference"][name].keys()
    for key, value in zero["mine"][name].items():
        assert torch.equal(value, one["mine"][name][key]), f"{name}.{key} differs between the ranks"
        torch.testing.assert_close(value, zero["reference"][name][key], rtol=1e-5, atol=1e-6,
                                   msg=lambda m, k=key: f"{name}.{k}: {m}")


def test_the_state_moved(ranks):
    # The comparison above must compare something: the state left its initial values.
    reference = ranks[0]["reference"]
    assert (reference["flexmatch"]["selected_label"] >= 0).any()
    assert float(reference["dash"]["rho_hat"]) > 0
    assert (reference["simmatch"]["bank_labels"] != 0).any()
    assert not torch.allclose(reference["freematch"]["p_model"], torch.full((C,), 1 / C))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
