"""Time one teacher update for every smoothing strategy x granularity, beside references in the same process.

    python benchmarks/bench_smoothing.py                    # CPU, 1 thread, WRN-28-2 and WRN-28-8
    python benchmarks/bench_smoothing.py --device cuda      # synchronises around every timed call
    python benchmarks/bench_smoothing.py --compile          # adds a torch.compile'd neuron-wise apply step

References (every row, references included, also copies the BN buffers with one fused copy):
  (a) the paper's Algorithm 2 as written: a Python loop over parameter tensors,
      ``if random.random() < p: continue`` else ``t.mul_(m).add_(s, alpha=1 - m)``;
  (b) fused EMA: one ``torch._foreach_lerp_`` over all parameters (timm's ModelEmaV3);
  (c) the floor of any neuron-wise draw: one ``torch.rand`` over all weights (into a preallocated buffer)
      plus one fused lerp.
Targets: layer-wise SE/STS <= 1.2x (b); channel-wise <= 4x (b); neuron-wise <= 1.2x (c).
Row (d), "sts layer, plan per call", builds the smoother's plan (tensor lists, unit layout) afresh in every
call: the difference to "sts layer" is what caching the plan per (teacher, student) pair saves.

Rows are timed round-robin (one call of every row per round, median over rounds), so load from other
processes on a shared machine hits all rows alike, and each call starts with cold caches (64 MiB written just
before), as an update does after a training step.  p = 0.5 (paper Sec. 4.1, FixMatch) and m = 0.999.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench.smoothing import GRANULARITIES, _Gate, build_smoother  # noqa: E402

TARGETS = {"layer": ("b", 1.2), "channel": ("b", 4.0), "neuron": ("c", 1.2)}


# ------------------------------------------------------------------------------------------------------------
# Models: the suite's WRN-28-k if it is there, else the same tensor shapes built here
# ------------------------------------------------------------------------------------------------------------

class _Shapes(nn.Module):
    """Only the tensors of a WRN-28-k (FixMatch variant): parameters and BN buffers, no forward."""

    def __init__(self, width: int, num_classes: int = 10) -> None:
        super().__init__()
        self._n = 0

        def conv(cin: int, cout: int, k: int) -> None:
            self.register_parameter(f"conv{self._n}", nn.Parameter(torch.randn(cout, cin, k, k) * 0.05))
            self._n += 1

        def bn(c: int) -> None:
            i = self._n
            self.register_parameter(f"bn{i}_weight", nn.Parameter(torch.ones(c)))
            self.register_parameter(f"bn{i}_bias", nn.Parameter(torch.zeros(c)))
            self.register_buffer(f"bn{i}_mean", torch.zeros(c))
            self.register_buffer(f"bn{i}_var", torch.ones(c))
            self.register_buffer(f"bn{i}_count", torch.tensor(0))
            self._n += 1

        conv(3, 16, 3)                                      # stem: 16 channels
        cin = 16
        for cout in (16 * width, 32 * width, 64 * width):  # 3 groups of 4 basic blocks
            for _ in range(4):
                bn(cin)
                conv(cin, cout, 3)
                bn(cout)
                conv(cout, cout, 3)
                if cin != cout:
                    conv(cin, cout, 1)                      # 1x1 shortcut where the width changes
                cin = cout
        bn(cin)
        self.fc_weight = nn.Parameter(torch.randn(num_classes, cin) * 0.05)
        self.fc_bias = nn.Parameter(torch.zeros(num_classes))


def wrn(width: int) -> nn.Module:
    try:
        from ssl_bench.models import build_model
    except ImportError:
        return _Shapes(width)
    return build_model(f"wrn28_{width}", 10)


# ------------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------

def time_rows(rows: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of every row, timed round-robin after two warm-up rounds, caches flushed."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # Before every timed call, write 64 MiB (twice this CPU's 32 MiB L3): each update starts cold, as it does
    # after a training step, and no row inherits a warm cache from the row before it.
    flush = torch.empty(16 * 2**20, device=device)
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(rounds + 2):
        for name, fn in rows.items():
            flush.fill_(r)
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if r >= 2:                                      # two warm-up rounds
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def bench(width: int, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    student = wrn(width).to(device)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for t in student.parameters():
            t.add_(torch.randn_like(t))
    T, S = [t.detach() for t in teacher.parameters()], [s.detach() for s in student.parameters()]
    TB, SB = list(teacher.buffers()), list(student.buffers())
    n = sum(t.numel() for t in T)
    p, m = args.p, args.m
    py_random = random.Random(0)
    g = torch.Generator(device).manual_seed(0)
    rand_buffer = torch.empty(n, device=device)

    def paper_loop() -> None:                                # (a) Algorithm 2, literally
        for t, s in zip(T, S, strict=True):
            if py_random.random() < p:
                continue
            t.mul_(m).add_(s, alpha=1 - m)
        torch._foreach_copy_(TB, SB)

    def fused_ema() -> None:                                 # (b) timm ModelEmaV3-style
        torch._foreach_lerp_(T, S, 1 - m)
        torch._foreach_copy_(TB, SB)

    def rand_and_lerp() -> None:                             # (c) one rand over all weights + one fused lerp
        torch.rand(n, generator=g, device=device, out=rand_buffer)
        torch._foreach_lerp_(T, S, 1 - m)
        torch._foreach_copy_(TB, SB)

    rows: dict[str, Callable[[], None]] = {
        "(a) paper loop, Alg. 2": paper_loop, "(b) fused EMA": fused_ema,
        "(c) rand + fused lerp": rand_and_lerp}
    smoothers = {"none": build_smoother("none"), "tma": build_smoother("tma", m=m)}
    for strategy in ("se", "sts"):
        for granularity in GRANULARITIES:
            smoothers[f"{strategy} {granularity}"] = build_smoother(
                strategy, p=p, m=m, granularity=granularity, generator=torch.Generator(device).manual_seed(1))
    with torch.no_grad():
        for name, smoother in smoothers.items():
            rows[name] = (lambda s=smoother: s.update(teacher, student))
        sts_layer = smoothers["sts layer"].config()
        rows["(d) sts layer, plan per call"] = uncached_update(sts_layer, teacher, student, device)
        if args.compile:
            rows["sts neuron, compiled apply"] = compiled_neuron_update(T, S, p, m, device)
        rounds = args.rounds or (40 if n < 5e6 else 12)
        times = time_rows(rows, rounds, device)

    refs = {"b": times["(b) fused EMA"], "c": times["(c) rand + fused lerp"]}
    print(f"\nWRN-28-{width}: {n:,} weights in {len(T)} tensors (+{len(TB)} buffers), device {device}, "
          f"{torch.get_num_threads()} thread(s), p={p}, m={m}, median of {rounds} rounds")
    print(f"| {'update':<28} | {'ms':>8} | {'vs (b)':>7} | {'vs (c)':>7} | {'target':<14} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 16}|")
    for name, seconds in times.items():
        granularity = name.split()[1].rstrip(",") if name.startswith(("se ", "sts ")) else None
        vs_c = f"{seconds / refs['c']:6.2f}x" if granularity == "neuron" or name.startswith("(c)") else ""
        target = ""
        if granularity is not None:
            ref, limit = TARGETS[granularity]
            ratio = seconds / refs[ref]
            target = f"<= {limit}x ({ref}) {'ok' if ratio <= limit else 'MISS'}"
        print(f"| {name:<28} | {seconds * 1e3:8.3f} | {seconds / refs['b']:6.2f}x | {vs_c:>7} "
              f"| {target:<14} |")


def uncached_update(config: dict, teacher: nn.Module, student: nn.Module,
                    device: torch.device) -> Callable[[], None]:
    """What the smoother's per-pair cache saves: the same update with its plan built afresh every call."""
    smoother = build_smoother(**config, generator=torch.Generator(device).manual_seed(1))

    def update() -> None:
        smoother.reset()                                    # drop the cached plan (tensor lists, layout)
        smoother.update(teacher, student)

    return update


def compiled_neuron_update(T: list[torch.Tensor], S: list[torch.Tensor], p: float, m: float,
                           device: torch.device) -> Callable[[], None]:
    """Neuron-wise STS: the library's draw (same bits per unit), then torch.where(mask, lerp, t) compiled."""
    n = sum(t.numel() for t in T)
    gate = _Gate.for_p(p)
    g = torch.Generator(device).manual_seed(2)
    words = torch.empty(gate.words(n), dtype=torch.int64, device=device)
    mask = torch.empty(n, dtype=torch.bool, device=device)
    views = list(torch.split(mask, [t.numel() for t in T]))
    views = [v.view(t.shape) for v, t in zip(views, T, strict=True)]

    def apply(ts: list[torch.Tensor], ss: list[torch.Tensor], ms: list[torch.Tensor]) -> None:
        for t, s, replaced in zip(ts, ss, ms, strict=True):
            t.copy_(torch.where(replaced, torch.lerp(t, s, 1 - m), t))

    compiled = torch.compile(apply, dynamic=False)

    def update() -> None:
        torch.ge(gate.draw(n, g, words), gate.threshold, out=mask)
        compiled(T, S, views)

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--widths", default="2,8", help="WRN-28-k widths to time (default 2,8)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="timed rounds (default 40 for WRN-28-2, 12 for -8)")
    parser.add_argument("--p", type=float, default=0.5, help="preserving probability (paper Sec. 4.1: 0.5)")
    parser.add_argument("--m", type=float, default=0.999, help="TMA momentum (default 0.999)")
    parser.add_argument("--compile", action="store_true",
                        help="also time a torch.compile'd neuron-wise apply")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    print(f"torch {torch.__version__}")
    for width in (int(w) for w in args.widths.split(",")):
        bench(width, args, device)


if __name__ == "__main__":
    main()
