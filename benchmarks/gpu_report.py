"""The GPU report: one command that measures every GPU figure of ssl-bench in about eight minutes.

    python benchmarks/gpu_report.py                      # CUDA device 0, <= 480 s, JSON in benchmarks/results
    python benchmarks/gpu_report.py --device cuda:1 --budget-s 300 --out my_gpu.json
    python benchmarks/gpu_report.py --device cpu --quick  # the same code path in seconds (what the test runs)

It prints as it goes and writes one JSON file (default ``benchmarks/results/gpu_report-<gpu>-<date>.json``),
rewritten after every section, so a session cut short still leaves what was measured. The sections, in the
order they run (cheap and most asked-for first; torch.compile last, as compiling takes a minute or more):

1. environment: GPU name and memory, driver, CUDA, cuDNN, torch, triton, Python, ssl-bench commit.
2. augment: weak and strong augmentation (``ssl_bench.augment``) in images/s on the device, at the step's
   unlabelled batch and at 8 times it; target: >= 100,000 strong images/s on an H100-class GPU.
3. per model - WRN-28-2 with CIFAR-10's 10 classes, then WRN-28-8 with CIFAR-100's 100 - at the paper's
   batch (64 labelled + 7 x 64 unlabelled, each unlabelled image in a weak and a strong view: 960 images):
   * steps: FixMatch steps/s of the plain path (per-image Pillow on the CPU, in series with the step) and of
     the fast path (``next_batch`` + ``training_step``), then each fast-path option (channels_last, bf16
     autocast, torch.compile) and all three together. Each case runs alone on the device, its warm-up steps
     are excluded and every step is bracketed by ``torch.cuda.synchronize``; with the projected wall time of
     a 2^20-step run and the case's peak GPU memory (``torch.cuda.max_memory_allocated``, reset before the
     case is built). Targets (README): the fastest fast case >= 5x the plain path; the WRN-28-2 protocol in
     <= 2 hours.
   * smoothing: one ``Smoother.update`` for every strategy (none / tma / se / sts) x granularity (layer /
     channel / neuron), in ms and as a share of a fast-path fp32 step; targets: < 2 % of a step at any
     granularity, neuron-wise <= 3x a fused EMA (one ``torch._foreach_lerp_`` over the same tensors, timed in
     the same run).
   * teachers: the cost of N teachers in one training, N = 1 and 4 (tma; tma, sts, se, none), as the loop
     runs it (``build_training`` with N smoothing variants): one ``training_step`` (the student's step + N
     ``Smoother.update`` calls) and one ``evaluate`` (N teachers and the student on the test set, 10,000
     images), and one teacher's evaluation pass alone; with an evaluation every 1024 steps, the projected
     2^20-step wall time of one training with N teachers, against one with one teacher (target, issue 13:
     <= 1.25x for N = 4) and against N trainings.
   * launches: the CUDA kernels the profiler records for one augmentation (``next_batch``) and one whole
     step of the fp32 run, beside ``bench_step.py --launches``' count of ATen calls per phase and its projected
     launches on the same device (how good the projection's rules are).

Every case and section guards its own failure: one that fails (say, torch.compile without a working triton)
is reported with its error line and the rest is still measured. ``--budget-s`` (default 480) bounds the whole
run: a section or case that would not fit in what is left is skipped and named; a case that reaches the end
of the budget in its timed steps keeps the steps it has. A step is never interrupted (the first step of a
compile case compiles for a minute or more), so give the command about a minute more than the budget.

Data: the official CIFAR-10 / CIFAR-100 files if they are in the data root, else the CIFAR-10 subset of
``$SSL_BENCH_DATA``, else random pixels in CIFAR's shapes and sizes (50,000 + 10,000 images): a step costs
the same whatever the pixels. ``--quick`` swaps in the tiny CNN, a batch of 4 + 8, two timed steps, random
pixels (512 + 256 images), and compiles with the ``eager`` backend (dynamo's tracing without code
generation): it checks that the report runs; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench_step import (  # noqa: E402  (the step benchmark's runs, paths and clocks)
    CIFAR_TEST_IMAGES,
    CIFAR_TRAIN_IMAGES,
    EVAL_EVERY,
    FAST_VARIANTS,
    MODELS,
    PAPER_BATCH,
    PLAIN_LABEL,
    PROTOCOL_STEPS,
    count_step,
    device_sync,
    duration,
    fast_contender,
    log,
    median_time,
    plain_contender,
    smoother_update_times,
    step_config,
    supported,
    timed,
)

from ssl_bench import records as rec  # noqa: E402
from ssl_bench.augment import strong_augment, weak_augment  # noqa: E402
from ssl_bench.config import RunConfig  # noqa: E402
from ssl_bench.run.build import build_training  # noqa: E402
from ssl_bench.run.evaluate import accuracy  # noqa: E402
from ssl_bench.run.loop import evaluate, next_batch, training_step  # noqa: E402
from ssl_bench.run.state import Training  # noqa: E402
from ssl_bench.run.writer import git_commit, versions  # noqa: E402
from ssl_bench.smoothing import GRANULARITIES, STRATEGIES  # noqa: E402

SCHEMA = 1
DEFAULT_BUDGET_S = 480.0
RESULTS_DIR = HERE / "results"
CASES = ("plain", *FAST_VARIANTS)              # plain, fp32, channels_last, amp, compile, all
COMPILE_CASES = tuple(v for v in FAST_VARIANTS if FAST_VARIANTS[v][1].get("compile"))
SECTION_KINDS = ("steps", "augment", "smoothing", "teachers", "launches")
STRONG_TARGET_PER_S = 100_000   # issue 15: >= 100,000 strong images/s on an H100-class GPU
SHARE_TARGET = 0.02             # issue 15: a smoothing update costs < 2 % of a step at any granularity
NEURON_VS_EMA_TARGET = 3.0      # issue 15: neuron-wise update <= 3x a fused EMA over the same tensors
FAST_VS_PLAIN_TARGET = 5.0      # README, Measured performance: the fast path >= 5x the plain path on a GPU
PROTOCOL_HOURS_TARGET = {"wrn28_2": 2.0}   # README: the full WRN-28-2 protocol in under 2 GPU-hours
TEACHERS_COST_TARGET = 1.25     # issue 13: 4 teachers in one training cost <= 1.25x a one-teacher training
TEACHER_COUNTS = (1, 4)
# The teachers, the first N of them: one per smoothing strategy (what a training that compares them holds),
# with the run's p, m and granularity; N = 1 is FixMatch's EMA teacher.
TEACHER_STRATEGIES = ("tma", "sts", "se", "none")
MIN_TIMED_STEPS = 3             # a case keeps at least this many timed steps before its time cap stops it


@dataclass(frozen=True)
class Settings:
    """How much of everything is measured: the full report on a GPU, or ``--quick``."""

    quick: bool
    models: dict[str, str]           # role (the paper's model, naming its data family) -> the model built
    batch: int                       # labelled images per step
    mu: int | None                   # unlabelled per labelled (None: the algorithm's reference, 7)
    warmup: int                      # untimed steps per case (they absorb cuDNN autotuning and compilation)
    steps: int                       # timed steps per case, at most ...
    case_s: float                    # ... or until this many seconds of timed steps (after MIN_TIMED_STEPS)
    repeats: int                     # calls per augmentation / smoother / input timing (median)
    eval_repeats: int                # repeats of the evaluation timings (a pass over the test set is long)
    augment_scale: tuple[int, ...]   # augmentation batches, as multiples of the step's unlabelled batch
    standin_images: tuple[int, int]  # (train, test) images of a random stand-in data set
    compile_backend: str             # torch.compile backend of the compile cases
    needs_s: dict[str, float]        # seconds a section or case must have left in the budget to start


FULL_NEEDS_S = {"case": 12.0, "compile_case": 75.0, "augment": 5.0, "smoothing": 10.0,
                "teachers": 15.0, "launches": 5.0}


def settings_from(args: argparse.Namespace) -> Settings:
    """The full report's settings, or --quick's; explicit flags win over both."""
    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    if args.quick:
        return Settings(quick=True, models=dict.fromkeys(args.models, "tiny"), batch=given(args.batch, 4),
                        mu=given(args.mu, 2), warmup=given(args.warmup, 1), steps=given(args.steps, 2),
                        case_s=given(args.case_s, 1.0), repeats=3, eval_repeats=1, augment_scale=(1, 8),
                        standin_images=(512, 256),
                        compile_backend=given(args.compile_backend, "eager"),
                        needs_s=dict.fromkeys(FULL_NEEDS_S, 0.0))
    return Settings(quick=False, models={role: role for role in args.models},
                    batch=given(args.batch, PAPER_BATCH),
                    mu=args.mu, warmup=given(args.warmup, 5), steps=given(args.steps, 30),
                    case_s=given(args.case_s, 10.0), repeats=30, eval_repeats=3, augment_scale=(1, 8),
                    standin_images=(CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES),
                    compile_backend=given(args.compile_backend, "inductor"), needs_s=dict(FULL_NEEDS_S))


# ------------------------------------------------------------------------------------------------------------
# Budget, guards and the report


class OutOfBudget(Exception):
    """The global time budget ran out in the middle of a case or section."""


class Budget:
    """The wall-clock budget of the whole report."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def out(self) -> bool:
        return self.left() <= 0

    def check(self, where: str) -> None:
        if self.out():
            raise OutOfBudget(f"the {self.seconds:.0f} s budget ran out {where}")


def error_line(exc: BaseException) -> str:
    """One line: the exception, its first message line and the innermost frame."""
    lines = str(exc).strip().splitlines()
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {lines[0] if lines else ''}{where}"


@dataclass
class Report:
    """The JSON document, built up as the sections run and rewritten after each."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def status(self, name: str, status: str, **details: Any) -> None:
        self.data["sections"][name] = {"status": status, **details}
        if status != "ok":
            log(f"[{name}] {status}: {details.get('error') or details.get('reason')}")

    def write(self) -> None:
        sections = self.data["sections"]
        self.data["skipped"] = [k for k, v in sections.items() if v["status"] == "skipped"]
        self.data["failed"] = [k for k, v in sections.items() if v["status"] == "failed"]
        rec.atomic_write_json(self.path, self.data)


def guarded(report: Report, name: str, needs_s: float, budget: Budget, fn: Callable[[], object]) -> None:
    """Training one section or case: skipped if the budget cannot hold ``needs_s`` more, its failure recorded, not
    raised, so the rest of the report is still measured."""
    left = budget.left()
    if left < max(needs_s, 1e-9):
        report.status(name, "skipped", reason=f"budget: {max(left, 0):.0f} s left of {budget.seconds:.0f} s, "
                                              f"this needs ~{needs_s:.0f} s")
        return
    t0 = time.perf_counter()
    try:
        fn()
    except OutOfBudget as exc:
        report.status(name, "skipped", reason=str(exc), seconds=round(time.perf_counter() - t0, 1))
    except Exception as exc:  # noqa: BLE001  (any failure of one measurement is reported, the rest still runs)
        report.status(name, "failed", error=error_line(exc), seconds=round(time.perf_counter() - t0, 1))
    else:
        report.status(name, "ok", seconds=round(time.perf_counter() - t0, 1))
    report.write()


# ------------------------------------------------------------------------------------------------------------
# Environment


def nvidia_driver(device: torch.device) -> str | None:
    """The NVIDIA driver version (nvidia-smi), else the CUDA driver API version torch sees, else None."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)]
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        version = torch._C._cuda_getDriverVersion()   # e.g. 12040: the newest CUDA the driver supports
        return f"supports CUDA {version // 1000}.{version % 1000 // 10} (nvidia-smi not available)"
    except (AttributeError, RuntimeError):
        return None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"device": str(device), **versions(), "triton": package_version("triton"),
                           "commit": git_commit(), "cpu": platform.processor() or platform.machine(),
                           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "cuda": torch.version.cuda, "gpu": None, "driver": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", driver=nvidia_driver(device),
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark, cudnn_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def default_out(device: torch.device, quick: bool) -> Path:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return RESULTS_DIR / f"gpu_report-{slug}-{date}{'-quick' if quick else ''}.json"


# ------------------------------------------------------------------------------------------------------------
# One model: its runs, built from the public loop API


@dataclass
class ModelBench:
    """One model of the report (a role: the paper's model, with its data set family) and its configuration."""

    role: str
    base: RunConfig
    data: str
    device: torch.device
    sync: Callable[[], None]
    settings: Settings
    shared: Training | None = None
    shared_step_times: list[float] = field(default_factory=list)

    def shared_run(self, budget: Budget) -> Training:
        """A fast fp32 run for the smoothing and teachers sections, past its warm-up, with its step times."""
        if self.shared is None:
            run = fast_contender(dataclasses.replace(self.base, cuda_graphs=False), "fp32").run
            s = self.settings
            for _ in range(s.warmup):
                training_step(run, next_batch(run))
                budget.check(f"in the warm-up of {self.role}'s fp32 run")
            times = []
            for _ in range(max(s.steps // 3, MIN_TIMED_STEPS)):
                times.append(timed(lambda: training_step(run, next_batch(run)), self.sync, time.perf_counter))
                budget.check(f"in the reference steps of {self.role}'s fp32 run")
            self.shared, self.shared_step_times = run, times
        return self.shared

    def release(self) -> None:
        self.shared = None
        free_device(self.device)


def free_device(device: torch.device) -> None:
    """Drop what earlier cases left on the GPU, so that each case's peak memory is its own."""
    if device.type == "cuda":   # a gc pass costs ~0.2 s: not worth it on the CPU, which reports no peak
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def model_header(bench: ModelBench, run: Training) -> dict[str, Any]:
    c = run.config
    unlabeled = c.batch_size * c.mu
    return {"model": c.model, "role": bench.role, "classes": run.dataset.num_classes, "batch": c.batch_size,
            "unlabeled": unlabeled, "images_per_step": c.batch_size + 2 * unlabeled, "data": bench.data,
            "parameters": sum(p.numel() for p in run.student.parameters())}


def measure_case(bench: ModelBench, case: str, budget: Budget) -> dict[str, Any]:
    """Build one case's run, warm it up, time its steps and its input; free it again."""
    s, sync, clock = bench.settings, bench.sync, time.perf_counter
    free_device(bench.device)
    if case in COMPILE_CASES:
        torch._dynamo.reset()   # compile from scratch: the warm-up then holds this case's whole compilation
    contender = (plain_contender(dataclasses.replace(bench.base, cuda_graphs=False)) if case == "plain" else
                 fast_contender(bench.base, case))
    if case in COMPILE_CASES and s.compile_backend != "inductor":
        contender.run.train_model = torch.compile(contender.run.student, backend=s.compile_backend)
    warmup = []
    for _ in range(s.warmup):
        warmup.append(timed(contender.step, sync, clock))
        budget.check(f"during the warm-up of {bench.role} {case}")
    times: list[float] = []
    stopped_by = "steps"
    for _ in range(s.steps):
        times.append(timed(contender.step, sync, clock))
        if len(times) >= min(MIN_TIMED_STEPS, s.steps):
            if budget.out():
                stopped_by = "budget"
                break
            if sum(times) >= s.case_s:
                stopped_by = "case time cap"
                break
    # The input path alone, fewer calls: a plain batch takes a large part of a second of Pillow work.
    input_s = median_time(contender.make_batch, max(MIN_TIMED_STEPS, s.repeats // 6), sync, clock, budget.out)
    peak = torch.cuda.max_memory_allocated(bench.device) if bench.device.type == "cuda" else None
    step_s = statistics.median(times)
    projected = PROTOCOL_STEPS * step_s
    result = {"status": "ok", "label": contender.label, "steps_per_s": 1.0 / step_s, "step_ms": step_s * 1e3,
              "step_ms_min": min(times) * 1e3, "step_ms_max": max(times) * 1e3, "timed_steps": len(times),
              "stopped_by": stopped_by, "warmup_steps": len(warmup),
              "first_step_s": warmup[0] if warmup else None, "input_ms": input_s * 1e3,
              "input_share": input_s / step_s, "projected_2p20_s": projected,
              "projected_2p20": duration(projected),
              "peak_memory_gib": None if peak is None else peak / 2**30}
    if case in COMPILE_CASES:
        result["compile_backend"] = s.compile_backend
    header = model_header(bench, contender.run)
    del contender
    free_device(bench.device)
    return {"header": header, **result}


def steps_section(report: Report, bench: ModelBench, cases: list[str], budget: Budget) -> None:
    """The cases of one model, each guarded on its own; prints a line per case."""
    entry = report.data["steps"].setdefault(bench.role, {"cases": {}})
    s = bench.settings
    for case in cases:
        name = f"steps:{bench.role}:{case}"
        why = supported(case, bench.device, s.compile_backend) if case != "plain" else None
        if bench.base.cuda_graphs and case in COMPILE_CASES:
            why = "--cuda-graphs captures the eager step; torch.compile makes its own graphs (refused together)"
        if why:
            entry["cases"][case] = {"status": "skipped", "reason": why}
            report.status(name, "skipped", reason=why)
            report.write()
            continue
        needs = s.needs_s["compile_case" if case in COMPILE_CASES else "case"]
        if case in COMPILE_CASES:   # a compile case needs at least as long as the last one's compilation took
            firsts = [c["first_step_s"] or 0.0 for c in entry["cases"].values() if c.get("compile_backend")]
            needs = max([needs, *[first + s.needs_s["case"] for first in firsts]])

        def one(case: str = case) -> None:
            result = measure_case(bench, case, budget)
            entry.update(result.pop("header"))
            entry["cases"][case] = result
            plain = entry["cases"].get("plain", {})
            if plain.get("status") == "ok":
                for c in entry["cases"].values():
                    if c.get("status") == "ok":
                        c["vs_plain"] = c["steps_per_s"] * plain["step_ms"] / 1e3
            print(case_line(bench.role, case, result), flush=True)

        guarded(report, name, needs, budget, one)
        section = report.data["sections"][name]
        if section["status"] != "ok":
            entry["cases"][case] = {k: v for k, v in section.items() if k != "seconds"}
            report.write()


def case_line(role: str, case: str, r: dict[str, Any]) -> str:
    peak = f"  peak {r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else ""
    return (f"{role:<8} {case:<13} {r['label']:<33} {r['steps_per_s']:8.2f} steps/s {r['step_ms']:9.1f} "
            f"ms/step (x{r['timed_steps']}, {r['stopped_by']})  2^20 steps: {r['projected_2p20']:>7}{peak}")


# ------------------------------------------------------------------------------------------------------------
# Augmentation, smoothing, teachers


def augment_section(report: Report, bench: ModelBench) -> None:
    s, device, clock = bench.settings, bench.device, time.perf_counter
    run = build_training(bench.base)     # the training images on the device, and the step's unlabelled batch
    images, unlabeled = run.x_train, run.config.batch_size * run.config.mu
    flip, policy = run.dataset.hflip, run.config.strong_augment   # as next_batch calls them
    del run
    rows = []
    for scale in s.augment_scale:
        n = unlabeled * scale
        x = images[torch.arange(n, device=device) % len(images)]    # repeat the images if the set is smaller
        g = torch.Generator(device).manual_seed(0)
        weak_s = median_time(lambda x=x, g=g: weak_augment(x, g, flip=flip), s.repeats, bench.sync, clock)
        strong_s = median_time(lambda x=x, g=g: strong_augment(x, g, flip=flip, policy=policy), s.repeats,
                               bench.sync, clock)
        rows.append({"batch": n, "weak_ms": weak_s * 1e3, "strong_ms": strong_s * 1e3,
                     "weak_images_per_s": n / weak_s, "strong_images_per_s": n / strong_s})
        print(f"augment  batch {n:>6}: weak {n / weak_s:>12,.0f} images/s, strong {n / strong_s:>12,.0f} "
              "images/s", flush=True)
    at_step = rows[0]["strong_images_per_s"]
    verdict = "met" if at_step >= STRONG_TARGET_PER_S else "missed"
    if device.type != "cuda":
        verdict += " (the target is for an H100-class GPU; this is not one)"
    print(f"augment  strong at the step's batch: {at_step:,.0f} images/s; target >= {STRONG_TARGET_PER_S:,}: "
          f"{verdict}", flush=True)
    report.data["augment"] = {"rows": rows, "strong_policy": policy, "flip": flip, "data": bench.data,
                              "target_strong_per_s": STRONG_TARGET_PER_S,
                              "strong_per_s_at_step_batch": at_step, "verdict": verdict}


def launches_section(report: Report, bench: ModelBench, budget: Budget) -> None:
    """Kernels of one step of the fp32 run, as the device runs it: the CUDA kernels (and memcpy / memset) the
    profiler records for the augmentation (``next_batch``) and for the whole step, beside bench_step's count
    of ATen calls and its projection of launches per phase on the same device (which checks the projection's
    rules). On the CPU only the count and the projection (no kernels)."""
    run = bench.shared_run(budget)
    phases = {name: dataclasses.asdict(c) for name, c in count_step(run).items()}
    projected = {"augmentation": phases["augmentation"]["launches"],
                 "step": sum(c["launches"] for c in phases.values())}
    kernels: dict[str, int | None] = {"augmentation": None, "step": None}
    if bench.device.type == "cuda":
        for name, fn in (("augmentation", lambda: next_batch(run)),
                         ("step", lambda: training_step(run, next_batch(run)))):
            bench.sync()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                bench.sync()
            kernels[name] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    for name in ("augmentation", "step"):
        print(f"launches {bench.role} {name}: {projected[name]} projected"
              + (f", {kernels[name]} kernels on the device" if kernels[name] is not None else ""), flush=True)
    report.data["launches"][bench.role] = {"teachers": [t.key for t in run.teachers], "phases": phases,
                                           "projected": projected, "device_kernels": kernels}


def smoothing_section(report: Report, bench: ModelBench, budget: Budget) -> None:
    run = bench.shared_run(budget)
    c = run.config
    step_s = statistics.median(bench.shared_step_times)
    teacher = copy.deepcopy(run.student)
    configs = [(strategy, granularity) for strategy in STRATEGIES for granularity in GRANULARITIES]
    times = smoother_update_times(teacher, run.student, c.p, c.m, configs, bench.settings.repeats, bench.sync,
                                  time.perf_counter)
    ema_s = times.pop(("fused EMA", "-"))
    rows = [{"strategy": st, "granularity": g, "ms": t * 1e3, "share_of_step": t / step_s,
             "vs_fused_ema": t / ema_s} for (st, g), t in times.items()]
    worst = max(rows, key=lambda r: r["share_of_step"])
    neuron = max((r for r in rows if r["granularity"] == "neuron" and r["strategy"] in ("se", "sts")),
                 key=lambda r: r["vs_fused_ema"])
    share = "met" if worst["share_of_step"] < SHARE_TARGET else "missed"
    neuron_verdict = "met" if neuron["vs_fused_ema"] <= NEURON_VS_EMA_TARGET else "missed"
    report.data["smoothing"][bench.role] = {
        "step_ms": step_s * 1e3, "step": "fast path, eager fp32", "fused_ema_ms": ema_s * 1e3, "p": c.p,
        "m": c.m, "buffers": "copy", "rows": rows, "worst_share": worst["share_of_step"],
        "worst_share_of": f"{worst['strategy']} {worst['granularity']}", "share_target": SHARE_TARGET,
        "share_verdict": share, "neuron_vs_fused_ema": neuron["vs_fused_ema"],
        "neuron_vs_fused_ema_of": f"{neuron['strategy']} neuron", "neuron_target": NEURON_VS_EMA_TARGET,
        "neuron_verdict": neuron_verdict}
    for r in rows:
        print(f"smooth   {bench.role:<8} {r['strategy']:<4} {r['granularity']:<7} {r['ms']:8.3f} ms "
              f"{100 * r['share_of_step']:7.3f} % of a {step_s * 1e3:.1f} ms step  "
              f"{r['vs_fused_ema']:5.2f}x fused EMA")
    print(f"smooth   {bench.role:<8} fused EMA {ema_s * 1e3:.3f} ms; worst share "
          f"{100 * worst['share_of_step']:.3f} % ({worst['strategy']} {worst['granularity']}), target < "
          f"{100 * SHARE_TARGET:.0f} %: {share}; {neuron['strategy']} neuron "
          f"{neuron['vs_fused_ema']:.2f}x fused EMA, target <= {NEURON_VS_EMA_TARGET:.0f}x: {neuron_verdict}",
          flush=True)


def teachers_section(report: Report, bench: ModelBench, budget: Budget) -> None:
    """One training with N teachers, as the loop runs it (``build_training`` with N smoothing variants): a
    ``training_step`` (the student's step + N ``Smoother.update`` calls) and an ``evaluate`` (N teachers'
    and the student's accuracy on the test set, with the Figure-3 snapshots); and the building block of
    the latter, one teacher's evaluation pass over the test set. The figures are kept as they come; the
    budget is checked between them."""
    s, sync, clock = bench.settings, bench.sync, time.perf_counter
    out: dict[str, Any] = {"teachers": list(TEACHER_STRATEGIES), "eval_every": EVAL_EVERY, "n": {}}
    report.data["teachers"][bench.role] = out
    shared = bench.shared_run(budget)

    def one_teacher_evaluation() -> None:
        accuracy(shared.teachers[0].model, shared.x_test, shared.y_test, shared.config.eval_batch_size,
                 shared.prepare)

    out_of_time = budget.out   # repeated timings keep what they have when the budget runs out
    one_eval_s = median_time(one_teacher_evaluation, s.eval_repeats, sync, clock, out_of_time)
    out["one_teacher_evaluation_ms"] = one_eval_s * 1e3
    for n in TEACHER_COUNTS:
        budget.check(f"before the teachers of {bench.role}, N = {n}")
        if n == 1:
            run = shared      # the base configuration's one teacher: tma
        else:
            run = build_training([dataclasses.replace(bench.base, smooth=strategy)
                             for strategy in TEACHER_STRATEGIES[:n]])
            for _ in range(s.warmup):
                training_step(run, next_batch(run))
        if [t.config.smooth for t in run.teachers] != list(TEACHER_STRATEGIES[:n]):
            raise RuntimeError(f"build_training made teachers {[t.key for t in run.teachers]} of "
                               f"{list(TEACHER_STRATEGIES[:n])}")
        repeats = max(s.repeats // 3, MIN_TIMED_STEPS)
        step_s = median_time(lambda run=run: training_step(run, next_batch(run)), repeats, sync, clock,
                             out_of_time)
        budget.check(f"before the evaluations of {bench.role}, N = {n}")
        eval_s = median_time(lambda run=run: evaluate(run), s.eval_repeats, sync, clock, out_of_time)
        projected = PROTOCOL_STEPS * (step_s + eval_s / EVAL_EVERY)
        out["test_images"] = len(run.x_test)
        out["n"][str(n)] = {"step_ms": step_s * 1e3, "evaluate_ms": eval_s * 1e3,
                            "step_plus_evaluate_ms": (step_s + eval_s) * 1e3,
                            "step_plus_teacher_evaluations_ms": (step_s + n * one_eval_s) * 1e3,
                            "projected_2p20_s": projected, "projected_2p20": duration(projected)}
        r = out["n"][str(n)]
        print(f"teachers {bench.role:<8} N={n}: step + {n} smoother updates {r['step_ms']:8.1f} ms; "
              f"evaluation of {n} teacher(s) + the student on {len(run.x_test):,} images "
              f"{r['evaluate_ms']:8.1f} ms; 2^20 steps, evaluating every {EVAL_EVERY}: {r['projected_2p20']}",
              flush=True)
        del run
    n_max = TEACHER_COUNTS[-1]
    one, many = out["n"]["1"], out["n"][str(n_max)]
    out["separate_trainings_2p20_s"] = n_max * one["projected_2p20_s"]
    out["one_training_vs_separate"] = many["projected_2p20_s"] / out["separate_trainings_2p20_s"]
    out["vs_one_teacher"] = many["projected_2p20_s"] / one["projected_2p20_s"]
    out["vs_one_teacher_target"] = TEACHERS_COST_TARGET
    out["vs_one_teacher_verdict"] = "met" if out["vs_one_teacher"] <= TEACHERS_COST_TARGET else "missed"
    sums = ", ".join(f"N={n} {r['step_plus_teacher_evaluations_ms']:.1f} ms" for n, r in out["n"].items())
    print(f"teachers {bench.role:<8} one teacher's evaluation pass {one_eval_s * 1e3:.1f} ms; 1 step + N "
          f"updates + N teacher evaluations: {sums}", flush=True)
    print(f"teachers {bench.role:<8} {n_max} teachers in one training: {many['projected_2p20']}; {n_max} "
          f"trainings of one: {duration(out['separate_trainings_2p20_s'])} "
          f"({out['one_training_vs_separate']:.2f}x); {out['vs_one_teacher']:.2f}x one teacher's training, "
          f"target <= {TEACHERS_COST_TARGET}x: {out['vs_one_teacher_verdict']}", flush=True)


# ------------------------------------------------------------------------------------------------------------
# Summary


def step_verdicts(entry: dict[str, Any], role: str) -> dict[str, Any] | None:
    """The fastest fast-path case of a model against the README's targets (None if nothing was measured)."""
    fast = {k: v for k, v in entry["cases"].items() if k != "plain" and v.get("status") == "ok"}
    if not fast:
        return None
    best = max(fast, key=lambda k: fast[k]["steps_per_s"])
    out: dict[str, Any] = {"fastest": best, "steps_per_s": fast[best]["steps_per_s"],
                           "protocol_hours": fast[best]["projected_2p20_s"] / 3600}
    if "vs_plain" in fast[best]:
        out.update(vs_plain=fast[best]["vs_plain"], vs_plain_target=FAST_VS_PLAIN_TARGET,
                   vs_plain_verdict="met" if fast[best]["vs_plain"] >= FAST_VS_PLAIN_TARGET else "missed")
    if role in PROTOCOL_HOURS_TARGET:
        hours = PROTOCOL_HOURS_TARGET[role]
        out.update(protocol_hours_target=hours,
                   protocol_hours_verdict="met" if out["protocol_hours"] <= hours else "missed")
    return out


def summary(report: Report) -> str:
    """The final table and verdicts, as Markdown."""
    d = report.data
    env = d["environment"]
    gpu = env.get("gpu") or f"CPU ({env.get('cpu')})"
    quick = " (--quick: the numbers mean nothing)" if d["quick"] else ""
    lines = [f"\n## GPU report: {gpu}; driver {env.get('driver')}, CUDA {env.get('cuda')}, "
             f"torch {env.get('torch')}{quick}", "",
             "| model | case | options | steps/s | ms/step | vs plain | 2^20 steps | peak GiB |",
             "|---|---|---|--:|--:|--:|--:|--:|"]
    for role, entry in d["steps"].items():
        for case, r in entry["cases"].items():
            if r.get("status") != "ok":
                why = r.get("error") or r.get("reason")
                lines.append(f"| {role} | {case} | {r.get('status')}: {why} | | | | | |")
                continue
            peak = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
            vs = f"{r['vs_plain']:.2f}x" if "vs_plain" in r else "-"
            lines.append(f"| {role} | {case} | {r['label']} | {r['steps_per_s']:.2f} | {r['step_ms']:.1f} "
                         f"| {vs} | {r['projected_2p20']} | {peak} |")
    lines.append("")
    for role, entry in d["steps"].items():
        v = entry.get("verdicts")
        if v is None:
            continue
        line = f"steps {role}: fastest {v['fastest']}, {v['steps_per_s']:.2f} steps/s"
        if "vs_plain" in v:
            line += (f"; {v['vs_plain']:.2f}x plain, target >= {FAST_VS_PLAIN_TARGET:.0f}x: "
                     f"{v['vs_plain_verdict']}")
        if "protocol_hours_target" in v:
            line += (f"; 2^20 steps in {v['protocol_hours']:.1f} h, target <= "
                     f"{v['protocol_hours_target']:.0f} h: {v['protocol_hours_verdict']}")
        lines.append(line)
    if d.get("augment"):
        a = d["augment"]
        rows = "; ".join(f"batch {r['batch']}: weak {r['weak_images_per_s']:,.0f}, strong "
                         f"{r['strong_images_per_s']:,.0f}" for r in a["rows"])
        lines.append(f"augment, images/s: {rows}; target >= {STRONG_TARGET_PER_S:,} strong/s at the step's "
                     f"batch: {a['verdict']}")
    for role, sm in d["smoothing"].items():
        lines.append(f"smoothing {role}: worst {100 * sm['worst_share']:.3f} % of a step "
                     f"({sm['worst_share_of']}), target < {100 * SHARE_TARGET:.0f} %: {sm['share_verdict']}; "
                     f"{sm['neuron_vs_fused_ema_of']} {sm['neuron_vs_fused_ema']:.2f}x a fused EMA, "
                     f"target <= {NEURON_VS_EMA_TARGET:.0f}x: {sm['neuron_verdict']}")
    for role, t in d["teachers"].items():
        if "vs_one_teacher" not in t:   # cut short by the budget: its figures are in the JSON
            continue
        n = str(TEACHER_COUNTS[-1])
        lines.append(f"teachers {role}: 2^20 steps with 1 teacher {t['n']['1']['projected_2p20']}, with {n} "
                     f"{t['n'][n]['projected_2p20']}: {t['vs_one_teacher']:.2f}x, target <= "
                     f"{TEACHERS_COST_TARGET}x: {t['vs_one_teacher_verdict']} "
                     f"({t['one_training_vs_separate']:.2f}x the time of {n} trainings)")
    if d["skipped"]:
        lines.append("skipped: " + "; ".join(f"{k} ({d['sections'][k].get('reason')})" for k in d["skipped"]))
    if d["failed"]:
        lines.append("FAILED: " + "; ".join(f"{k} ({d['sections'][k].get('error')})" for k in d["failed"]))
    lines.append(f"report: {report.path} ({d['wall_s']:.0f} s)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="the same code path in seconds: tiny CNN and batch, few steps; no real numbers")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default benchmarks/results/gpu_report-<gpu>-<date>.json)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"wall-clock budget of the whole report, s (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--models", default=",".join(MODELS), help=f"from {','.join(MODELS)} (default: both)")
    parser.add_argument("--sections", default=",".join(SECTION_KINDS),
                        help=f"from {','.join(SECTION_KINDS)} (default: all)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"from {','.join(CASES)} (default: all)")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"labelled images per step (default: the paper's {PAPER_BATCH}; 4 with --quick)")
    parser.add_argument("--mu", type=int, default=None,
                        help="unlabelled images per labelled (default: the algorithm's, 7; 2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case, at most (default 30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per case first (default 5)")
    parser.add_argument("--case-s", type=float, default=None,
                        help="end a case's timed steps after this many seconds, >= 3 steps (default 10)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="time the fast step cases with --cuda-graphs (3 eager steps, then each step replays one "
                             "captured CUDA graph; compile cases skipped); CUDA only. Never run on a GPU yet")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of compile cases (default inductor; eager with --quick)")
    args = parser.parse_args(argv)

    def choices(flag: str, value: str, allowed: tuple[str, ...]) -> list[str]:
        picked = [v.strip() for v in value.split(",") if v.strip()]
        if not picked or any(v not in allowed for v in picked):
            parser.error(f"{flag} {value!r}: expected a comma list from {','.join(allowed)}")
        return picked

    args.models = choices("--models", args.models, tuple(MODELS))
    args.sections = choices("--sections", args.sections, SECTION_KINDS)
    args.cases = choices("--cases", args.cases, CASES)
    for flag in ("batch", "mu", "steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} {value}: expected a positive integer")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup {args.warmup}: expected an integer >= 0")
    if args.budget_s < 0:
        parser.error(f"--budget-s {args.budget_s}: expected seconds >= 0")
    if args.case_s is not None and args.case_s <= 0:
        parser.error(f"--case-s {args.case_s}: expected seconds > 0")
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", args.device)
    if not match:
        parser.error(f"--device {args.device!r}: expected cuda, cuda:N or cpu")
    if args.cuda_graphs and not args.device.startswith("cuda"):
        parser.error(f"--cuda-graphs: CUDA graphs need a CUDA device, not --device {args.device}")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device is available here; --device cpu --quick "
                         "checks that the report runs")
        if match[1] is not None and int(match[1]) >= torch.cuda.device_count():
            parser.error(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print and write the report; returns the JSON document."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True   # cuDNN autotuning, as the reference implementations set it
    s = settings_from(args)
    sync = device_sync(device)
    report = Report(args.out or default_out(device, s.quick))
    report.data = {"schema": SCHEMA, "kind": "ssl-bench gpu report", "command": rec.command_line(),
                   "started": rec.now_iso(), "finished": None, "wall_s": None, "quick": s.quick,
                   "budget_s": args.budget_s, "settings": dataclasses.asdict(s),
                   "protocol_steps": PROTOCOL_STEPS, "plain_path": PLAIN_LABEL + ", in series with the step",
                   "environment": {}, "augment": None,
                   "steps": {}, "smoothing": {}, "teachers": {}, "launches": {}, "sections": {}, "skipped": [],
                   "failed": []}
    t0 = time.perf_counter()

    def env() -> None:
        e = report.data["environment"] = environment(device)
        print(f"GPU report on {e['gpu'] or 'the CPU'}: driver {e['driver']}, CUDA {e['cuda']}, "
              f"torch {e['torch']}, triton {e['triton']}, python {e['python']}, ssl-bench {e['ssl_bench']} "
              f"({e['commit']}); budget {args.budget_s:.0f} s", flush=True)

    guarded(report, "environment", 0.0, budget, env)
    with tempfile.TemporaryDirectory() as tmp:
        benches = []
        for role in args.models:
            base, data = step_config(s.models[role], s.batch, s.mu, device, Path(tmp), s.standin_images,
                                     real=not s.quick, family_of=role)
            base = dataclasses.replace(base, cuda_graphs=args.cuda_graphs)   # the fast cases' steps: replays
            benches.append(ModelBench(role, base, data, device, sync, s))
        want = set(args.sections)
        if "augment" in want:
            guarded(report, "augment", s.needs_s["augment"], budget,
                    lambda: augment_section(report, benches[0]))
        for bench in benches:
            if "steps" in want:   # every case is guarded on its own
                steps_section(report, bench, [c for c in args.cases if c not in COMPILE_CASES], budget)
            if "smoothing" in want:
                guarded(report, f"smoothing:{bench.role}", s.needs_s["smoothing"], budget,
                        lambda b=bench: smoothing_section(report, b, budget))
            if "teachers" in want:
                guarded(report, f"teachers:{bench.role}", s.needs_s["teachers"], budget,
                        lambda b=bench: teachers_section(report, b, budget))
            if "launches" in want:
                guarded(report, f"launches:{bench.role}", s.needs_s["launches"], budget,
                        lambda b=bench: launches_section(report, b, budget))
            bench.release()
        for bench in benches:   # last: compiling takes a minute or more per case
            if "steps" in want:
                steps_section(report, bench, [c for c in args.cases if c in COMPILE_CASES], budget)
    for role, entry in report.data["steps"].items():
        entry["verdicts"] = step_verdicts(entry, role)
    report.data.update(finished=rec.now_iso(), wall_s=round(time.perf_counter() - t0, 1))
    report.write()
    print(summary(report), flush=True)
    return report.data


if __name__ == "__main__":
    main()
