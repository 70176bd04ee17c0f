"""Training steps per second of FixMatch: the plain per-image Pillow path against ssl-bench's device path.

    python benchmarks/bench_step.py --device cpu --batch 8                  # CPU, one thread, 8 + 56 images
    python benchmarks/bench_step.py --device cpu --models wrn28_8 --batch 1 --steps 3 --warmup 1
    python benchmarks/bench_step.py --device cuda                           # the paper's batch, 64 + 448

    python benchmarks/bench_step.py --launches                             # ATen calls / CUDA launches per phase

(``benchmarks/gpu_report.py`` measures these and every other GPU figure in one command, on its own device.)

``--launches`` counts, instead of timing, what one FixMatch step at the paper's batch (WRN-28-2, 64 + 448 +
448 images) asks of the device, per phase (augmentation, forward, backward, optimizer, each smoother), with a
``TorchDispatchMode`` on the CPU: every ATen call below autograd, the CUDA kernel launches they project to (the
rules are in ``projected_launches``) and the host syncs among them (``ssl_bench.host_sync``), for the
smoothers TMA, STS at each granularity and 4 teachers (none, tma, se, sts), with the augmentation as a GPU runs
it (static shapes) and as it was (git ``bench_augment.BEFORE_REVISION``, grouped by op), in the same run.

Both paths train the same thing, built by ``ssl_bench.run.build.build_training``: FixMatch's loss
(``build_algorithm("fixmatch")``), Nesterov SGD with the cosine schedule, and the ``tma`` smoother
(m = 0.999), on WRN-28-2 (CIFAR-10) or WRN-28-8 (CIFAR-100), B labelled + 7 B unlabelled images per step,
each unlabelled image in a weak and a strong view: 15 B images through the network per step (960 at the
paper's B = 64). Only the input path and the system options differ:

* **plain**: what the common reference implementations do (kekmodel/FixMatch-pytorch, USB / TorchSSL): every
  image is augmented on the CPU on its own with Pillow - flip + reflect-pad-4 crop (weak), the same plus 2
  RandAugment ops with random magnitudes and a 16x16 Cutout (strong), the per-image reference of
  ``benchmarks/bench_augment.py`` - then converted to a tensor on its own (ToTensor + Normalize), collated,
  copied to the device; eager fp32, contiguous NCHW. The reference code runs this per-image work in
  DataLoader worker processes that can overlap the model's step when spare CPU cores exist; here it runs in
  the training process, in series with the step (the "input" column shows how much of the step it is).
* **fast**: ``next_batch`` + ``training_step``: the data set lives on the device as uint8, indices are drawn
  by ``IndexStream`` and the batch is augmented in one go on the device (``ssl_bench.augment``); then each
  option of ``RunConfig`` on its own - ``channels_last``, ``amp`` (bf16 autocast), ``compile`` (the loss
  sees ``torch.compile(student)``) - and, on CUDA, all three together.

Every path has its own ``Training``; the paths take turns step by step (plain, fast, fast + channels_last, ...)
so that all of them see the same load on a shared machine, and the table gives the median step time after
the warm-up steps (which also absorb torch.compile's compilation). On CUDA the clock is the wall clock,
every timed region is bracketed by ``torch.cuda.synchronize()`` and cuDNN autotuning is on for every path
(``cudnn.benchmark = True``, as the reference implementations set it). On the CPU with one thread the clock
is the process's CPU time (``--clock cpu``, the default there): on a machine shared with other jobs the wall
clock also counts the time the benchmark waits for a core, which varied by 2x between rounds here. The input
share of a step (sampling + augmentation + normalisation, or the whole Pillow pipeline) and the smoother's
share (the teacher's ``smoother.update``) are timed on their own, after the steps, as medians of repeated
calls, and divided by the median step time. A second table times one ``smoother.update`` of every smoothing
configuration (TMA; SE and STS x layer / channel / neuron) and a fused EMA on the same model against the
fast fp32 step.

Data: the official CIFAR-10 / CIFAR-100 files if they are in the data root; otherwise the 5,482 real
CIFAR-10 images of ``cifar10_subset.npz`` (``$SSL_BENCH_DATA``, default ../shared/data), which for CIFAR-100
get 100 arbitrary classes (a stand-in with CIFAR-100's shape: 32x32 images, 100 logits, its weight decay);
without either, random pixels in CIFAR's sizes. The step's cost does not depend on the pixels or labels; the
output names the data it used.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench_augment import BEFORE_REVISION, augment_at, pillow_strong, pillow_weak  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from ssl_bench import augment  # noqa: E402
from ssl_bench.algorithm import Batch  # noqa: E402
from ssl_bench.config import PROFILES, RunConfig  # noqa: E402
from ssl_bench.data import DatasetNotFoundError, load_dataset  # noqa: E402
from ssl_bench.host_sync import sync_reason  # noqa: E402
from ssl_bench.run.build import build_training  # noqa: E402
from ssl_bench.run.cuda_graphs import GraphedSteps  # noqa: E402
from ssl_bench.run.loop import next_batch, training_step  # noqa: E402
from ssl_bench.run.state import Training  # noqa: E402
from ssl_bench.smoothing import GRANULARITIES, build_smoother, relevant_settings  # noqa: E402

SHARED_DATA = Path(os.environ.get("SSL_BENCH_DATA", HERE.parents[1] / "shared" / "data"))
PROTOCOL_STEPS = PROFILES["full"].steps  # 2^20 (Spatial Ensemble paper Sec. 4.1, following FixMatch)
PAPER_BATCH = PROFILES["full"].batch_size  # 64 labelled; the unlabelled ratio (7) is the algorithm's
EVAL_EVERY = PROFILES["full"].eval_every   # steps between evaluations in the protocol
# The CIFAR-10 / CIFAR-100 training and test set sizes: those of a random stand-in when no images are here.
CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000
# The model and the data set family FixMatch trains it on (FixMatch paper, Sec. 4): labels: 4 per class.
MODELS = {"wrn28_2": ("cifar10", 10), "wrn28_8": ("cifar100", 100)}
LABELS_PER_CLASS = 4
PLAIN_LABEL = "Pillow per image, eager fp32 NCHW"
# The fast-path variants: name -> (what the row says, RunConfig options).
FAST_VARIANTS: dict[str, tuple[str, dict[str, bool]]] = {
    "fp32": ("device augment, eager fp32", {}),
    "channels_last": ("+ channels_last", {"channels_last": True}),
    "amp": ("+ bf16 autocast", {"amp": True}),
    "compile": ("+ torch.compile", {"compile": True}),
    "all": ("+ channels_last + bf16 + compile", {"channels_last": True, "amp": True, "compile": True}),
}


# ------------------------------------------------------------------------------------------------------------
# The plain input path: per-image Pillow augmentation, per-image conversion to a tensor, collate, copy


def to_tensor_normalized(image: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One HWC uint8 image -> normalised float CHW, as torchvision's ToTensor + Normalize do it per image."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    return t.sub_(mean).div_(std)


def pillow_batch(run: Training, rng: random.Random) -> Batch:
    """One step's batch the way a per-image DataLoader builds it, from the run's own index streams."""
    c, d = run.config, run.dataset
    labeled = run.streams.labeled.next(c.batch_size).numpy()
    unlabeled = run.streams.unlabeled.next(c.batch_size * c.mu).numpy()
    mean = torch.tensor(d.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(d.std, dtype=torch.float32).view(-1, 1, 1)

    def collate(indices: np.ndarray, augment: Callable[[np.ndarray, random.Random], np.ndarray]
                ) -> torch.Tensor:
        return torch.stack([to_tensor_normalized(augment(d.x_train[i], rng), mean, std) for i in indices])

    x = collate(labeled, pillow_weak)
    u_weak, u_strong = collate(unlabeled, pillow_weak), collate(unlabeled, pillow_strong)
    dev = run.device
    return Batch(x=x.to(dev), y=torch.from_numpy(d.y_train[labeled]).to(dev),
                 u=(u_weak.to(dev), u_strong.to(dev)), progress=run.step / c.steps, num_classes=d.num_classes,
                 generator=run.streams.algorithm)


# ------------------------------------------------------------------------------------------------------------
# Data


STANDIN_IMAGES = (CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES)


def resolve_dataset(family: str, num_classes: int, scratch: Path,
                    standin_images: tuple[int, int] = STANDIN_IMAGES, real: bool = True) -> tuple[str, str]:
    """(the RunConfig dataset argument, a description) for a model's data set family.

    ``standin_images``: (train, test) sizes of the random-pixel stand-in used when no real images are
    found, or always with ``real=False``.
    """
    subset = SHARED_DATA / "cifar10_subset.npz"
    if real:
        try:
            load_dataset(family, download=False)   # a benchmark never downloads (nor writes to a shared root)
            return family, f"{family} (official files)"
        except DatasetNotFoundError:
            pass
        if family == "cifar10" and subset.is_file():
            return str(subset), "cifar10_subset (5,482 real CIFAR-10 images; the full files are not here)"
    if real and subset.is_file():
        with np.load(subset) as z:
            x_train, x_test = z["x_train"], z["x_test"]
        what = f"{family} stand-in: the real CIFAR-10 subset's images with {num_classes} arbitrary classes"
    else:
        rng = np.random.default_rng(0)
        n_train, n_test = standin_images
        x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
        x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
        what = (f"{family} stand-in: {n_train:,} + {n_test:,} random-pixel images, {num_classes} classes"
                + (f" (no real images found in {SHARED_DATA})" if real else ""))
    path = scratch / f"{family}_standin.npz"  # the name marks the family: CIFAR-100's weight decay applies
    np.savez(path, x_train=x_train, y_train=np.arange(len(x_train)) % num_classes, x_test=x_test,
             y_test=np.arange(len(x_test)) % num_classes, num_classes=num_classes)
    return str(path), what


def step_config(model: str, batch: int, mu: int | None, device: torch.device, scratch: Path,
                standin_images: tuple[int, int] = STANDIN_IMAGES, real: bool = True,
                family_of: str | None = None) -> tuple[RunConfig, str]:
    """The benchmark's FixMatch run of ``model`` at ``batch`` labelled images (``mu=None``: the algorithm's
    unlabelled ratio) with the ``tma`` smoother, and a description of its data (see ``resolve_dataset``).

    ``family_of``: take the data set family and classes of this entry of MODELS instead of ``model``'s (a
    small model standing in for a WRN in a quick run)."""
    family, num_classes = MODELS[family_of or model]
    dataset, data_desc = resolve_dataset(family, num_classes, scratch, standin_images, real)
    config = RunConfig(dataset=dataset, labels=LABELS_PER_CLASS * num_classes, model=model, profile="full",
                       batch_size=batch, mu=mu, device=str(device), smooth="tma", results_dir=str(scratch))
    return config, data_desc


# ------------------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Contender:
    """One row of the table: a Training and how one step of it is taken."""

    name: str
    label: str
    run: Training
    make_batch: Callable[[], Batch]
    step_times: list[float] = field(default_factory=list)
    input_s: float = float("nan")
    smoother_s: float = float("nan")
    graphed: GraphedSteps | None = None   # --cuda-graphs: the run's steps (3 eager, then replays)

    def step(self) -> None:
        if self.graphed is not None:
            self.graphed()
        else:
            training_step(self.run, self.make_batch())

    @property
    def step_s(self) -> float:
        return statistics.median(self.step_times)


def plain_contender(base: RunConfig, seed: int = 0) -> Contender:
    """The plain path: ``base``'s run, fed per-image Pillow batches (``pillow_batch``)."""
    run = build_training(base)
    rng = random.Random(seed)
    return Contender("plain", PLAIN_LABEL, run, lambda: pillow_batch(run, rng))


def fast_contender(base: RunConfig, variant: str) -> Contender:
    """A fast-path variant of FAST_VARIANTS: ``base`` with its RunConfig options, fed by ``next_batch``."""
    label, options = FAST_VARIANTS[variant]
    run = build_training(dataclasses.replace(base, **options))
    graphed = GraphedSteps(run) if run.config.cuda_graphs else None
    return Contender(variant, label + (" + CUDA graphs" if graphed else ""), run, lambda: next_batch(run),
                     graphed=graphed)


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work: ``torch.cuda.synchronize`` on CUDA, nothing on the CPU."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def timed(fn: Callable[[], object], sync: Callable[[], None], clock: Callable[[], float]) -> float:
    """Seconds of one call of ``fn``, with the device synchronised before and after."""
    sync()
    t0 = clock()
    fn()
    sync()
    return clock() - t0


def median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None], clock: Callable[[], float],
                stop: Callable[[], bool] | None = None) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one untimed call; fewer (at least one) if
    ``stop()`` turns true after a call (a time budget running out)."""
    fn()  # warm-up (builds the smoother's plan, allocates buffers)
    times = []
    for _ in range(repeats):
        times.append(timed(fn, sync, clock))
        if stop is not None and stop():
            break
    return statistics.median(times)


def fused_ema(teacher: torch.nn.Module, student: torch.nn.Module, m: float) -> Callable[[], None]:
    """The reference update: one ``torch._foreach_lerp_`` over all parameters (timm's ModelEmaV3) and one
    fused copy of the buffers - the same tensors and buffer policy (``copy``) as the smoothers' rows."""
    t_params = [t.detach() for t in teacher.parameters()]
    s_params = [s.detach() for s in student.parameters()]
    t_buffers, s_buffers = list(teacher.buffers()), list(student.buffers())

    @torch.no_grad()
    def update() -> None:
        torch._foreach_lerp_(t_params, s_params, 1.0 - m)
        torch._foreach_copy_(t_buffers, s_buffers)

    return update


def smoother_update_times(teacher: torch.nn.Module, student: torch.nn.Module, p: float, m: float,
                          configs: list[tuple[str, str]], repeats: int, sync: Callable[[], None],
                          clock: Callable[[], float]) -> dict[tuple[str, str], float]:
    """Median seconds of one ``smoother.update(teacher, student)`` per (strategy, granularity) with ``p`` and
    ``m`` and a seeded generator on the student's device; the fused EMA reference as ("fused EMA", "-")."""
    device = next(student.parameters()).device
    times = {("fused EMA", "-"): median_time(fused_ema(teacher, student, m), repeats, sync, clock)}
    for strategy, granularity in configs:
        unit = "layer" if granularity == "-" else granularity
        smoother = build_smoother(strategy, **relevant_settings(strategy, {"p": p, "m": m, "granularity": unit}),
                                  generator=torch.Generator(device).manual_seed(0))
        # an update in the middle of a long training (swa averages from its start fraction on)
        times[strategy, granularity] = median_time(
            lambda s=smoother: s.update(teacher, student, step=1 << 19, total_steps=1 << 20), repeats, sync, clock)
    return times


def supported(variant: str, device: torch.device, compile_backend: str = "inductor") -> str | None:
    """None if the device can run the variant, else why not."""
    options = FAST_VARIANTS[variant][1]
    if options.get("amp") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    if options.get("compile") and compile_backend == "inductor":
        compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
        if device.type == "cpu" and not compiler:
            return "torch.compile on the CPU needs a C++ compiler (g++ / clang++ / $CXX)"
        if device.type == "cuda" and importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs triton"
    return None


def duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.0f} d"
    return f"{seconds / (365 * 86400):.1f} y"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 0.1 else f"{seconds * 1e3:.0f}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_model(model: str, batch: int, args: argparse.Namespace, device: torch.device, scratch: Path,
                variants: list[str]) -> None:
    base, data_desc = step_config(model, batch, args.mu, device, scratch)
    sync = device_sync(device)

    paths = [plain_contender(base)]
    skipped = []
    for v in variants:
        why = supported(v, device)
        if why:
            skipped.append(f"{v}: {why}")
            continue
        paths.append(fast_contender(base, v))
    for p in paths:
        p.run.student.train()
        p.run.teacher.train()

    u = batch * paths[0].run.config.mu
    log(f"{model}: {len(paths)} paths x ({args.warmup} warm-up + {args.steps} timed) steps, taking turns ...")
    for r in range(args.warmup + args.steps):
        for p in paths:
            dt = timed(p.step, sync, args.clock)
            if r >= args.warmup:
                p.step_times.append(dt)
            log(f"  round {r} {p.name:<13} {dt * 1e3:9.1f} ms{'  (warm-up)' if r < args.warmup else ''}")
    for p in paths:
        p.input_s = median_time(p.make_batch, args.repeats, sync, args.clock)
        teacher = p.run.teachers[0]
        p.smoother_s = median_time(lambda t=teacher, p=p: t.smoother.update(t.model, p.run.student),
                                   args.repeats, sync, args.clock)

    plain = paths[0]
    reduced = "" if batch == PAPER_BATCH and args.mu is None else \
        f" - CHANGED from the paper's {PAPER_BATCH} labelled and the algorithm's unlabelled ratio"
    print(f"\n### FixMatch, {model}, {device.type}: batch {batch} labelled + {u} unlabelled x (weak, strong) "
          f"= {batch + 2 * u} images per step{reduced}")
    print(f"data: {data_desc}; torch {torch.__version__}, threads={torch.get_num_threads()}; "
          f"{args.clock_desc}; median of {args.steps} steps after {args.warmup} warm-up, paths taking turns; "
          f"input and smoother: median of {args.repeats} calls on their own")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}; cudnn.benchmark on; cuDNN TF32 "
              f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'} (PyTorch's default for fp32 convs)")
    if skipped:
        print("not measured: " + "; ".join(skipped))
    print()
    print(f"| path  | {'options':<33} | steps/s | ms/step: median (min-max) | fast/plain | 2^20 steps "
          "| input | smoother (tma) |")
    print(f"|-------|{'-' * 35}|--------:|--------------------------:|-----------:|-----------:|------:|"
          "---------------:|")
    for p in paths:
        rate = 1.0 / p.step_s
        spread = f"{ms(p.step_s)} ({ms(min(p.step_times))}-{ms(max(p.step_times))})"
        print(f"| {p.name if p.name == 'plain' else 'fast':<5} | {p.label:<33} | {rate:>7.3f} | {spread:>25} "
              f"| {rate * plain.step_s:>9.2f}x | {duration(PROTOCOL_STEPS * p.step_s):>10} "
              f"| {100 * p.input_s / p.step_s:>4.1f}% | {100 * p.smoother_s / p.step_s:>13.2f}% |")
    print("input = sampling + augmentation + normalisation (+ copy to the device), whole Pillow pipeline for "
          "plain; 2^20 steps = projected time of the full protocol at this batch and clock")

    smoothing_shares(paths[1] if len(paths) > 1 else plain, model, batch, u, args, sync)


def smoothing_shares(ref: Contender, model: str, batch: int, u: int, args: argparse.Namespace,
                     sync: Callable[[], None]) -> None:
    """One smoother.update per smoothing configuration on the reference path's teacher / student."""
    run, step_s = ref.run, ref.step_s
    configs = [("tma", "-")] + [(s, g) for s in ("se", "sts") for g in GRANULARITIES]
    n_params = sum(t.numel() for t in run.student.parameters())
    print(f"\nSmoothing update vs one '{ref.label}' step ({model}, {n_params / 1e6:.2f} M parameters, batch "
          f"{batch} + {u}, {step_s * 1e3:.1f} ms/step); p = {run.config.p}, m = {run.config.m}, buffers "
          f"copied; median of {args.repeats}")
    print()
    print("| smoother  | granularity | update, ms | share of step |")
    print("|-----------|-------------|-----------:|--------------:|")
    times = smoother_update_times(run.teacher, run.student, run.config.p, run.config.m, configs, args.repeats,
                                  sync, args.clock)
    for (strategy, granularity), t in times.items():
        print(f"| {strategy:<9} | {granularity:<11} | {t * 1e3:>10.3f} | {100 * t / step_s:>12.3f}% |")


# ------------------------------------------------------------------------------------------------------------
# ATen calls and projected CUDA launches per phase

# ATen calls that launch nothing on CUDA: views and metadata, allocations without initialisation.
NO_LAUNCH = frozenset({
    "view", "_unsafe_view", "_reshape_alias", "reshape", "as_strided", "slice", "select", "expand", "permute",
    "transpose", "t", "unsqueeze", "squeeze", "alias", "detach", "split", "split_with_sizes", "unbind", "chunk",
    "narrow", "diagonal", "unfold", "view_as_real", "empty", "empty_like", "empty_strided", "new_empty",
    "new_empty_strided", "lift_fresh", "resize_", "set_", "sym_size", "sym_stride", "sym_numel", "is_same_size",
    "_has_compatible_shallow_copy_type", "result_type", "contiguous",
})
# aten/src/ATen/native/cuda/MultiTensorApply.cuh: tensors per launch by the number of tensor lists (depth),
# 320 blocks of 65,536 elements at most per launch.
FOREACH_TENSORS_PER_LAUNCH = (110, 64, 48, 36, 30)
FOREACH_CHUNK, FOREACH_BLOCKS = 65_536, 320


def projected_launches(name: str, args: tuple, kwargs: dict) -> int:
    """CUDA kernel launches of one ATen call, projected from its name and arguments (CUDA's code paths).

    Rules: views, metadata and uninitialised allocations 0; a foreach op on one dtype and dense tensors (the
    fast path) ceil(tensors / per-launch limit) or ceil(chunks / 320) launches, whichever is more, and one
    launch per tensor otherwise (CUDA's slow path: mixed dtypes, non-dense); convolution_backward one per
    gradient asked for (dgrad, wgrad, bias); a batch norm forward or backward 2 (cuDNN's kernel and the
    running-statistics update / the reduction); a sort 4 (CUB radix sort passes on these sizes); nonzero 3
    (count, scan, gather) plus a copy back; every other call 1 (an elementwise op, a reduction, a cuBLAS or
    cuDNN GEMM, a copy, a fill, a random draw). An estimate per call (a cuDNN algorithm may take two kernels, a
    large reduction two passes); gpu_report.py counts the real kernels with the profiler on a GPU."""
    base = name.split(".")[0]
    if base in NO_LAUNCH:
        return 0
    if base.startswith("_foreach_"):
        lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
        if not lists:
            return 0
        n = len(lists[0])
        tensors = [t for lst in lists for t in lst]
        depth = len(lists) + (0 if base.endswith("_") else 1)    # out-of-place ops write one more list
        fast = len({t.dtype for t in tensors}) == 1 and all(t.is_contiguous() for t in tensors)
        if not fast:
            return n
        chunks = sum(-(-t.numel() // FOREACH_CHUNK) for t in lists[0])
        per_launch = FOREACH_TENSORS_PER_LAUNCH[min(depth, len(FOREACH_TENSORS_PER_LAUNCH)) - 1]
        return max(-(-n // per_launch), -(-chunks // FOREACH_BLOCKS))
    if base == "convolution_backward":
        return sum(bool(m) for m in args[-1])
    if "batch_norm" in base:
        return 2
    if base in ("sort", "argsort"):
        return 4
    if base in ("nonzero", "argwhere"):
        return 4
    return 1


@dataclass
class PhaseCount:
    aten_calls: int = 0
    launches: int = 0
    syncs: int = 0


class PhaseCounter(TorchDispatchMode):
    """Counts every ATen call below autograd into the current phase (``self.phase``), with its projected CUDA
    launches and whether it makes the host wait (``ssl_bench.host_sync.sync_reason``; ``.tolist()`` and
    ``.numpy()`` read memory without an ATen call and are counted by ``counting``'s patches)."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "other"
        self.counts: dict[str, PhaseCount] = {}

    def add(self, launches: int = 0, syncs: int = 0, calls: int = 0) -> None:
        c = self.counts.setdefault(self.phase, PhaseCount())
        c.aten_calls += calls
        c.launches += launches
        c.syncs += syncs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        self.add(projected_launches(name, args, kwargs), int(sync_reason(func, args, kwargs) is not None), 1)
        return func(*args, **kwargs)


@contextlib.contextmanager
def phase(counter: PhaseCounter, name: str) -> Iterator[None]:
    previous, counter.phase = counter.phase, name
    try:
        yield
    finally:
        counter.phase = previous


def _in_phase(counter: PhaseCounter, name: str, fn: Callable) -> Callable:
    def wrapped(*args: object, **kwargs: object) -> object:
        with phase(counter, name):
            return fn(*args, **kwargs)
    return wrapped


@contextlib.contextmanager
def counting(run: Training, counter: PhaseCounter) -> Iterator[None]:
    """Attribute one ``next_batch`` + ``training_step`` of ``run`` to phases, without touching the loop: the
    algorithm's ``loss`` is the forward, ``Tensor.backward`` the backward, the optimizer's ``zero_grad`` /
    ``step`` and the scheduler's ``step`` the optimizer, each teacher's ``smoother.update`` its own phase."""
    alg_cls, tensor_backward = type(run.algorithm), torch.Tensor.backward
    loss = alg_cls.loss
    saved = [(run.optimizer, "zero_grad"), (run.optimizer, "step"), (run.scheduler, "step")]
    saved += [(t.smoother, "update") for t in run.teachers]
    originals = [(obj, attr, obj.__dict__.get(attr)) for obj, attr in saved]
    tolist, numpy = torch.Tensor.tolist, torch.Tensor.numpy

    def read(fn: Callable) -> Callable:
        def method(self: torch.Tensor, *a: object, **k: object) -> object:
            counter.add(launches=1, syncs=1)    # a copy back, and the host waits for it
            return fn(self, *a, **k)
        return method

    try:
        alg_cls.loss = _in_phase(counter, "forward", loss)
        torch.Tensor.backward = _in_phase(counter, "backward", tensor_backward)
        for obj, attr in saved[:3]:
            setattr(obj, attr, _in_phase(counter, "optimizer", getattr(obj, attr)))
        for t in run.teachers:
            t.smoother.update = _in_phase(counter, f"smoother {t.key}", t.smoother.update)
        torch.Tensor.tolist, torch.Tensor.numpy = read(tolist), read(numpy)
        with counter:
            yield
    finally:
        torch.Tensor.tolist, torch.Tensor.numpy = tolist, numpy
        alg_cls.loss = loss
        torch.Tensor.backward = tensor_backward
        for obj, attr, original in originals:
            if original is None:
                obj.__dict__.pop(attr, None)
            else:
                setattr(obj, attr, original)


@contextlib.contextmanager
def augmentation_of(module: object) -> Iterator[None]:
    """The loop's augmentation and normalisation taken from ``module`` (an older ssl_bench.augment) meanwhile."""
    loop_modules = {sys.modules[next_batch.__module__], sys.modules[Training.__module__]}
    names = ("weak_augment", "strong_augment", "normalize")
    saved = [(m, n, getattr(m, n)) for m in loop_modules for n in names if hasattr(m, n)]
    try:
        for m, n, _ in saved:
            setattr(m, n, getattr(module, n))
        yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)


LAUNCH_TEACHERS = [("tma", "layer"), ("sts", "layer"), ("sts", "channel"), ("sts", "neuron"), ("none", "layer"),
                   ("se", "layer")]
LAUNCH_ROWS = [("TMA", ["tma"]), ("STS layer", ["sts"]), ("STS channel", ["sts_channel"]),
               ("STS neuron", ["sts_neuron"]), ("4 teachers (none, tma, se, sts)", ["none", "tma", "se", "sts"])]


def count_step(run: Training) -> dict[str, PhaseCount]:
    """Phase counts of one next_batch + training_step of ``run`` (after its first step)."""
    counter = PhaseCounter()
    with counting(run, counter):
        with phase(counter, "augmentation"):
            batch = next_batch(run)
        training_step(run, batch)
    return counter.counts


def launch_table(model: str, batch: int, mu: int | None, scratch: Path, before: str) -> None:
    """Print the per-phase table: one FixMatch training with the six teachers of LAUNCH_TEACHERS (the student's
    phases are shared; each smoother is its own phase), counted after a first, uncounted step."""
    base, data_desc = step_config(model, batch, mu, torch.device("cpu"), scratch)
    run = build_training([dataclasses.replace(base, smooth=s, granularity=g) for s, g in LAUNCH_TEACHERS])
    keys = {t.key: t for t in run.teachers}
    short = {"tma": next(k for k in keys if k.startswith("tma")), "none": next(k for k in keys if k == "none"),
             "se": next(k for k in keys if k.startswith("se-layer")),
             "sts": next(k for k in keys if k.startswith("sts-layer")),
             "sts_channel": next(k for k in keys if k.startswith("sts-channel")),
             "sts_neuron": next(k for k in keys if k.startswith("sts-neuron"))}
    run.student.train()
    for t in run.teachers:
        t.model.train()
    grouped = augment.GROUP_BY_OP_ON_CPU
    augment.GROUP_BY_OP_ON_CPU = False   # the augmentation as a GPU runs it
    for group in run.optimizer.param_groups:   # SGD's default on CUDA (foreach=None picks it there, not on a CPU)
        group["foreach"] = True
    try:
        training_step(run, next_batch(run))   # the first step checks the losses and builds the smoothers' plans
        after = count_step(run)
        old = augment_at(before)
        if isinstance(old, str):
            log(f"before: {old}")
            old_aug = None
        else:
            counter = PhaseCounter()
            with counting(run, counter), phase(counter, "augmentation"), augmentation_of(old):
                next_batch(run)
            old_aug = counter.counts["augmentation"]
    finally:
        augment.GROUP_BY_OP_ON_CPU = grouped
    u = batch * run.config.mu
    print(f"\n### ATen calls and projected CUDA launches of one FixMatch step: {model}, {batch} + {u} + {u} images "
          f"(fast path, eager fp32)")
    print(f"data: {data_desc}; torch {torch.__version__}; counted on the CPU with a TorchDispatchMode (every "
          "ATen call below autograd), CUDA launches projected per call (bench_step.projected_launches), syncs = "
          "calls that make the host wait for a GPU; the augmentation and SGD as a GPU runs them (static shapes, "
          "foreach)"
          + (f", 'before' = git {before}'s augmentation (grouped by op) on the same batch" if old_aug else ""))
    print()
    print("| phase | ATen calls | projected launches | host syncs |")
    print("|---|---:|---:|---:|")
    student = ["augmentation", "forward", "backward", "optimizer", "other"]
    if old_aug:
        print(f"| augmentation, before ({before}) | {old_aug.aten_calls} | {old_aug.launches} | {old_aug.syncs} |")
    for name in student:
        c = after.get(name, PhaseCount())
        print(f"| {name} | {c.aten_calls} | {c.launches} | {c.syncs} |")
    for key in short.values():
        c = after[f"smoother {key}"]
        print(f"| smoother {key} | {c.aten_calls} | {c.launches} | {c.syncs} |")
    print()
    print("| step with | ATen calls | projected launches | host syncs | augmentation share of launches |"
          + (f" launches, {before}'s augmentation | syncs, {before}'s augmentation |" if old_aug else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if old_aug else ""))
    for label, teachers in LAUNCH_ROWS:
        parts = [after.get(n, PhaseCount()) for n in student] + [after[f"smoother {short[t]}"] for t in teachers]
        calls, launches = sum(p.aten_calls for p in parts), sum(p.launches for p in parts)
        syncs = sum(p.syncs for p in parts)
        line = (f"| {label} | {calls} | {launches} | {syncs} | "
                f"{100 * after['augmentation'].launches / launches:.0f} % |")
        if old_aug:
            delta = old_aug.launches - after["augmentation"].launches
            line += f" {launches + delta} | {syncs + old_aug.syncs - after['augmentation'].syncs} |"
        print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--models", default=None,
                        help="comma-separated: wrn28_2 (CIFAR-10), wrn28_8 (CIFAR-100) (default: both; "
                             "wrn28_2 with --launches)")
    parser.add_argument("--batch", default=None,
                        help=f"labelled images per step, one value or one per model (default: {PAPER_BATCH} "
                             "on CUDA, 8 on the CPU); the unlabelled batch is mu times it")
    parser.add_argument("--mu", type=int, default=None,
                        help="unlabelled images per labelled image (default: the algorithm's reference, 7)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per path (default: 50 CUDA, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per path first (default: 10 CUDA, 2 CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="calls per input / smoother timing (default: 50 CUDA, 11 CPU)")
    parser.add_argument("--fast", default=None,
                        help=f"fast-path variants, from {','.join(FAST_VARIANTS)} (default: all on CUDA, all "
                             "but 'all' on the CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--launches", action="store_true",
                        help="count ATen calls / projected CUDA launches / syncs per phase instead of timing (CPU; "
                             f"default batch {PAPER_BATCH}, model wrn28_2)")
    parser.add_argument("--before", default=BEFORE_REVISION,
                        help="--launches: git revision of the augmentation to compare with (default %(default)s)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="wall: time.perf_counter (default on CUDA); cpu: the process's CPU time, "
                             "time.process_time (default on the CPU with one thread: it leaves out the time "
                             "the job waits for a core that other jobs hold on a shared machine)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    models = args.models or ("wrn28_2" if args.launches else "wrn28_2,wrn28_8")
    args.models = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    batches = [int(b) for b in (args.batch or str(PAPER_BATCH if cuda or args.launches else 8)).split(",")]
    if len(batches) == 1:
        batches *= len(args.models)
    if len(batches) != len(args.models) or min(batches) < 1:
        parser.error("--batch: one positive value, or one per model")
    args.batches = batches
    args.steps = args.steps or (50 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    args.repeats = args.repeats or (50 if cuda else 11)
    args.clock_name = args.clock or ("wall" if cuda or args.threads != 1 else "cpu")
    if args.clock_name == "cpu" and cuda:
        parser.error("--clock cpu: the CPU time of the host process leaves out the GPU's work; use wall")
    args.clock = time.perf_counter if args.clock_name == "wall" else time.process_time
    args.clock_desc = ("wall clock" + (", torch.cuda.synchronize() around each timed region" if cuda else "")
                       if args.clock_name == "wall"
                       else "process CPU time (one thread; waits for the core excluded)")
    default_fast = list(FAST_VARIANTS) if cuda else [v for v in FAST_VARIANTS if v != "all"]
    args.fast = default_fast if args.fast is None else [v.strip() for v in args.fast.split(",") if v.strip()]
    bad = [v for v in args.fast if v not in FAST_VARIANTS]
    if bad:
        parser.error(f"--fast: unknown {bad}; choose from {list(FAST_VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        log(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"python {' '.join(sys.argv)}")
    if args.launches:
        with tempfile.TemporaryDirectory() as tmp:
            for model, batch in zip(args.models, args.batches, strict=True):
                launch_table(model, batch, args.mu, Path(tmp), args.before)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for model, batch in zip(args.models, args.batches, strict=True):
            bench_model(model, batch, args, device, Path(tmp), args.fast)


if __name__ == "__main__":
    main()
