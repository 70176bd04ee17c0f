"""Time one teacher update for every smoothing strategy x granularity, beside references in the same process.

    python benchmarks/bench_smoothing.py                    # CPU, 1 thread, WRN-28-2 and WRN-28-8
    python benchmarks/bench_smoothing.py --device cuda      # synchronises around every timed call
    python benchmarks/bench_smoothing.py --compile          # adds a torch.compile'd neuron-wise apply step
    python benchmarks/bench_smoothing.py --launches         # ATen calls / projected CUDA launches per update,
                                                            # today's code beside commit c62e06e's (git show)

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
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench.smoothing import GRANULARITIES, build_smoother, kernels  # noqa: E402
from ssl_bench.smoothing.kernels import Gate  # noqa: E402

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
    gate = Gate.for_p(p)
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


# ------------------------------------------------------------------------------------------------------------
# Launch counts: ATen calls per update, and the CUDA kernels they would launch (CUDA's code paths, on the CPU)
# ------------------------------------------------------------------------------------------------------------

# Ops that launch no kernel: views, metadata, allocation.
_NO_KERNEL = {"view", "slice", "as_strided", "alias", "_unsafe_view", "expand", "detach", "empty", "empty_strided",
              "t", "transpose", "unsqueeze", "squeeze", "reshape", "split", "narrow", "select", "lift_fresh"}
# aten/src/ATen/native/cuda/MultiTensorApply.cuh: kChunkSize and, per number of tensor lists (depth 1..5),
# depth_to_max_tensors / depth_to_max_blocks: a kernel is launched whenever either fills up.
_CHUNK = 65536
_MAX_TENSORS = (110, 64, 48, 36, 30)
_MAX_BLOCKS = 320


def _tensor_lists(args: tuple) -> list[list[torch.Tensor]]:
    return [list(a) for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]


def _foreach_fast(lists: list[list[torch.Tensor]]) -> bool:
    """ATen's can_use_fast_route (ForeachUtils.h): one dtype and device, dense, equal sizes and strides."""
    first = lists[0][0]
    for ts in lists:
        for a, b in zip(lists[0], ts, strict=True):
            if (b.dtype != first.dtype or b.device != first.device or not b.is_contiguous()
                    or a.shape != b.shape or a.stride() != b.stride()):
                return False
    return True


def _multi_tensor_launches(lists: list[list[torch.Tensor]]) -> int:
    depth = min(len(lists), len(_MAX_TENSORS))
    launches = tensors = blocks = 0
    for t in lists[0]:
        if t.numel() == 0:
            continue
        tensors += 1
        for _ in range(-(-t.numel() // _CHUNK)):
            blocks += 1
            if blocks == _MAX_BLOCKS or tensors == _MAX_TENSORS[depth - 1]:
                launches += 1
                blocks = 0
                tensors = 1 if tensors == _MAX_TENSORS[depth - 1] else tensors
        if tensors == _MAX_TENSORS[depth - 1]:
            tensors = 0
    return launches + (1 if blocks else 0)


def projected_launches(func: Any, args: tuple) -> int:
    """CUDA kernels one ATen call would launch: 0 for views, the multi-tensor-apply count for a foreach call
    on the fast route, one per tensor for a foreach call off it, else 1."""
    name = func._schema.name.split("::")[-1]
    if name in _NO_KERNEL:
        return 0
    if name.startswith("_foreach_"):
        lists = _tensor_lists(args)
        return _multi_tensor_launches(lists) if _foreach_fast(lists) else len(lists[0])
    return 1


class CountCalls(TorchDispatchMode):
    """Every ATen call made inside the context, with its projected CUDA launches."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.calls.append((func._schema.name.split("::")[-1], projected_launches(func, args)))
        return func(*args, **(kwargs or {}))


_SYNCS = ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "numpy")


def count_update(update: Callable[[], None]) -> tuple[int, int, int, str]:
    """(ATen calls, projected CUDA launches, host reads, the calls) of one call of ``update`` (after a warm-up
    call that builds the plan)."""
    update()
    reads = []
    originals = {name: getattr(torch.Tensor, name) for name in _SYNCS}

    def spy(name: str) -> Callable:
        def wrapped(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            reads.append(name)
            return originals[name](self, *a, **k)
        return wrapped

    try:
        for name in _SYNCS:
            setattr(torch.Tensor, name, spy(name))
        with CountCalls() as mode:
            update()
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
    names: dict[str, int] = {}
    for name, _ in mode.calls:
        names[name] = names.get(name, 0) + 1
    listing = ", ".join(f"{n}x{c}" if c > 1 else n for n, c in names.items())
    return len(mode.calls), sum(n for _, n in mode.calls), len(reads), listing


def _module_at(commit: str) -> Any:
    """ssl_bench/smoothing.py as it was at ``commit`` (a single module then), imported from ``git show``."""
    source = subprocess.run(["git", "show", f"{commit}:ssl_bench/smoothing.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    module = types.ModuleType(f"smoothing_at_{commit}")
    sys.modules[module.__name__] = module               # dataclasses look their module up by name
    exec(compile(source, f"{commit}:ssl_bench/smoothing.py", "exec"), module.__dict__)  # our own history
    return module


def launches(args: argparse.Namespace) -> None:
    """The launch table: every strategy x granularity, CUDA's code path (no host pick), two teacher dtypes."""
    torch.manual_seed(0)
    student = wrn(2)
    teacher = copy.deepcopy(student)
    before = _module_at(args.before) if args.before else None
    if before is not None:
        before._HOST_PICK_DEVICES = ()
    saved = kernels._BROADCAST_WEIGHT_DEVICES
    rows = [("tma", {}), ("none", {})] + [(s, {"granularity": g}) for s in ("se", "sts") for g in GRANULARITIES]
    print(f"\nOne update of a WRN-28-2 teacher ({sum(1 for _ in student.parameters())} parameter tensors, "
          f"{sum(1 for _ in student.buffers())} buffers), CUDA's code path (full-shape weights); launches "
          f"projected with ATen's foreach fast-route rule and multi_tensor_apply's chunking; the CPU's path "
          f"(per-unit weights broadcast) beside it")
    header = "| update | ATen calls | CUDA launches | host reads | CPU path: calls / reads |"
    if before is not None:
        header += f" before ({args.before}): calls / launches / reads |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    with torch.no_grad():
        for strategy, extra in rows:
            settings = dict(p=args.p, m=args.m, **extra)
            on_cpu = build_smoother(strategy, generator=torch.Generator().manual_seed(1), **settings)
            cpu_calls, _, cpu_reads, _ = count_update(lambda s=on_cpu: s.update(teacher, student))
            kernels._BROADCAST_WEIGHT_DEVICES = ()          # what an accelerator runs: full-shape weights
            try:
                now = build_smoother(strategy, generator=torch.Generator().manual_seed(1), **settings)
                calls, kernels_, reads, listing = count_update(lambda s=now: s.update(teacher, student))
            finally:
                kernels._BROADCAST_WEIGHT_DEVICES = saved
            name = strategy + (f" {extra['granularity']}" if extra else "")
            line = f"| {name} | {calls} | {kernels_} | {reads} | {cpu_calls} / {cpu_reads} |"
            if before is not None:
                old = before.build_smoother(strategy, generator=torch.Generator().manual_seed(1), **settings)
                b = count_update(lambda s=old: s.update(teacher, student))
                line += f" {b[0]} / {b[1]} / {b[2]} |"
            print(line)
            if args.verbose:
                print(f"|   calls: {listing} | | | |")


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
    parser.add_argument("--launches", action="store_true",
                        help="count ATen calls and projected CUDA launches per update instead of timing")
    parser.add_argument("--before", default="c62e06e",
                        help="with --launches: also count the smoother of this commit (default c62e06e; '' for none)")
    parser.add_argument("--verbose", action="store_true", help="with --launches: list the calls")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    print(f"torch {torch.__version__}")
    if args.launches:
        launches(args)
        return
    for width in (int(w) for w in args.widths.split(",")):
        bench(width, args, device)


if __name__ == "__main__":
    main()
