"""One student, many teachers: the cost of N smoothing variants in one training against separate trainings.

    python benchmarks/bench_teachers.py                      # cpu profile on digits, 200 steps, 3 repeats
    python benchmarks/bench_teachers.py --steps 400 --repeats 5 --threads 2
    python benchmarks/bench_teachers.py --quick              # smoke profile, a few steps: checks it runs

Every workload is FixMatch on the embedded ``digits`` data (20 labels, no download) at the ``cpu`` profile's
settings (its model, batch and evaluation cadence; ``--quick``: the ``smoke`` profile's), built by
``ssl_bench.run.build.build_training`` and driven by the loop's own ``next_batch`` / ``training_step`` / ``evaluate``
(no run directories are written). One *training* is K steps and an evaluation every ``eval_every`` steps and
after the last one, as the loop evaluates:

  (a)  1 training with 1 teacher (sts): the single-variant run every ratio is measured against;
  (b)  4 trainings with 1 teacher each (none, tma, se, sts): the separate runs of a 4-strategy comparison;
  (c)  1 training with those 4 teachers;
  (d)  1 training with the 12 teachers of a Table-4-style ablation: SE x layer/channel/neuron (p = 0.5) and
       STS x layer/channel/neuron x p in {0.3, 0.5, 0.7}; 12 separate trainings are not run: 12 x (a) stands
       in for them (every separate training does the same student work as (a)).

Targets: (c)/(a) <= 1.25x; (c)/(b) is the saving (about 1/4 if the teachers cost little). The teachers'
extra cost is their smoother updates (every step) and their evaluations (every ``eval_every`` steps); the
per-teacher evaluation cost is the difference (c) - (a) or (d) - (a) in evaluation time divided by the number
of extra teachers. A smoother update is far below the noise of a whole step (the step difference per extra
teacher came out between -0.8 and +0.5 ms against a ~100 ms step), so after the timed intervals every
teacher's ``smoother.update`` is also timed on its own (``--update-calls`` calls each, median), as
``training_step`` calls it.

Measurement: all trainings of a repeat are built first (not timed), then warmed up (``--warmup`` steps and one
evaluation each, not timed; the evaluation also fills the Figure-3 snapshots so every timed evaluation does
the full work), then timed evaluation interval by evaluation interval in round-robin (one interval of every
training in turn, the order rotated each interval), so load from other processes on a shared machine hits all
workloads alike. With one thread the clock is the process's CPU time (``--clock cpu``, the default there): the
wall clock would also count the time spent waiting for a core on a shared machine. Times are medians over
``--repeats``; each ratio is the median over repeats of that repeat's ratio (paired within a repeat).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench.config import RunConfig  # noqa: E402
from ssl_bench.run import state  # noqa: E402
from ssl_bench.run.build import build_training, plan_teachers, teacher_grid  # noqa: E402
from ssl_bench.run.loop import evaluate, next_batch, training_step  # noqa: E402

STRATEGIES = ["none", "tma", "se", "sts"]        # the four strategies of the paper's comparison (Table 6)
GRANULARITIES = ["layer", "channel", "neuron"]   # Table 4's fragments
TABLE4_P = [0.3, 0.5, 0.7]                       # STS preserving probabilities of the ablation
SINGLE = "sts"                                   # the single-variant reference (a): the paper's method
TARGET_C_OVER_A = 1.25                           # issue 13: 4 variants cost at most 1.25x one single-variant run


@dataclass
class TimedTraining:
    """One training of a workload and its timed work in the current repeat."""

    workload: str
    configs: list[RunConfig]
    run: state.Training | None = None
    steps_s: float = 0.0
    evals_s: float = 0.0
    evaluations: int = 0
    update_s: dict[str, float] = field(default_factory=dict)   # median smoother update by teacher key


def workloads(base: RunConfig) -> dict[str, list[list[RunConfig]]]:
    """Each workload's trainings, each training as its list of teacher configs (``teacher_grid``)."""
    table4 = (teacher_grid(base, {"smooth": ["se"], "granularity": GRANULARITIES})
              + teacher_grid(base, {"smooth": ["sts"], "granularity": GRANULARITIES, "p": TABLE4_P}))
    if len(table4) != 12:
        raise RuntimeError(f"the Table-4 ablation should have 12 teachers, teacher_grid made {len(table4)}")
    return {"a": [teacher_grid(base, {"smooth": [SINGLE]})],
            "b": [teacher_grid(base, {"smooth": [s]}) for s in STRATEGIES],
            "c": [teacher_grid(base, {"smooth": STRATEGIES})],
            "d": [table4]}


def clock_of(name: str) -> Callable[[], float]:
    return time.process_time if name == "cpu" else time.perf_counter


def measure_repeat(trainings: list[TimedTraining], steps: int, warmup: int, clock: Callable[[], float],
                   update_calls: int) -> int:
    """Build, warm up and time every training (see the module docstring), interval by interval in turn;
    returns the number of test images an evaluation classifies."""
    for t in trainings:
        t.run = build_training(t.configs)
        t.steps_s = t.evals_s = 0.0
        t.evaluations = 0
        t.run.student.train()
        for teacher in t.run.teachers:
            teacher.model.train()
        for _ in range(warmup):
            training_step(t.run, next_batch(t.run))
        evaluate(t.run)
    eval_every = trainings[0].run.config.eval_every
    boundaries = sorted({*range(eval_every, steps, eval_every), steps})   # the loop's evaluation steps
    done = 0
    for index, boundary in enumerate(boundaries):
        shift = index % len(trainings)
        for t in trainings[shift:] + trainings[:shift]:
            start = clock()
            for _ in range(boundary - done):
                training_step(t.run, next_batch(t.run))
            middle = clock()
            evaluate(t.run)
            end = clock()
            t.steps_s += middle - start
            t.evals_s += end - middle
            t.evaluations += 1
        done = boundary
    for t in trainings:   # each teacher's update on its own, as training_step calls it (after the timed steps)
        for teacher in t.run.teachers:
            times = []
            for _ in range(update_calls):
                start = clock()
                teacher.smoother.update(teacher.model, t.run.student)
                times.append(clock() - start)
            t.update_s[teacher.key] = statistics.median(times)
    test_images = len(trainings[0].run.x_test)
    for t in trainings:
        t.run = None
    gc.collect()
    return test_images


@dataclass
class Repeat:
    """One repeat's totals per workload and per training of (b)."""

    steps_s: dict[str, float]
    evals_s: dict[str, float]
    per_b: dict[str, float]       # the total of each of (b)'s trainings, by strategy
    evaluations: int
    teachers: dict[str, int]      # teachers per training of each workload ((b): per training)
    test_images: int
    updates: dict[str, dict[str, float]]   # median smoother update by teacher key, per workload (c) and (d)

    def total(self, workload: str) -> float:
        return self.steps_s[workload] + self.evals_s[workload]


def run_repeat(base: RunConfig, steps: int, warmup: int, clock: Callable[[], float], update_calls: int) -> Repeat:
    trainings = [TimedTraining(name, configs) for name, group in workloads(base).items() for configs in group]
    teachers = {t.workload: len(t.configs) for t in trainings}
    test_images = measure_repeat(trainings, steps, warmup, clock, update_calls)
    steps_s = {name: sum(t.steps_s for t in trainings if t.workload == name) for name in teachers}
    evals_s = {name: sum(t.evals_s for t in trainings if t.workload == name) for name in teachers}
    per_b = {t.configs[0].smooth: t.steps_s + t.evals_s for t in trainings if t.workload == "b"}
    updates = {t.workload: t.update_s for t in trainings if t.workload in ("c", "d")}
    return Repeat(steps_s, evals_s, per_b, trainings[0].evaluations, teachers, test_images, updates)


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(repeats: list[Repeat], steps: int, eval_every: int) -> dict[str, float]:
    """Print the table and the ratios; returns the ratios (for callers and tests)."""
    def med(f: Callable[[Repeat], float]) -> float:
        return median([f(r) for r in repeats])

    n_eval = repeats[0].evaluations
    n_c, n_d = repeats[0].teachers["c"], repeats[0].teachers["d"]
    ratios = {
        "c/a": med(lambda r: r.total("c") / r.total("a")),
        "c/b": med(lambda r: r.total("c") / r.total("b")),
        "d/a": med(lambda r: r.total("d") / r.total("a")),
        "d/12a": med(lambda r: r.total("d") / (n_d * r.total("a"))),
        "b_sts/a": med(lambda r: r.per_b[SINGLE] / r.total("a")),
    }
    rows = [("(a) 1 training, 1 teacher: " + SINGLE, 1, 1, lambda r: r.steps_s["a"], lambda r: r.evals_s["a"])]
    for s in STRATEGIES:
        rows.append((f"    (b) training: {s}", 1, 1, None, lambda r, s=s: r.per_b[s]))
    rows.append(("(b) 4 trainings, 1 teacher each", 4, 4, lambda r: r.steps_s["b"], lambda r: r.evals_s["b"]))
    rows.append(("(c) 1 training, 4 teachers", 1, n_c, lambda r: r.steps_s["c"], lambda r: r.evals_s["c"]))
    rows.append((f"(d) 1 training, {n_d} teachers (Table 4)", 1, n_d,
                 lambda r: r.steps_s["d"], lambda r: r.evals_s["d"]))
    a_total = med(lambda r: r.total("a"))
    print(f"\n| {'workload':<38} | {'trainings':>9} | {'teachers':>8} | {'steps s':>8} | {'evals s':>8} "
          f"| {'total s':>8} | {'ms/step':>8} | {'vs (a)':>7} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    for name, trainings, teachers, steps_of, evals_of in rows:
        if steps_of is None:   # one of (b)'s trainings: only its total
            total = med(evals_of)
            cells = f"{'':>8} | {'':>8} | {total:8.2f} | {total / steps * 1e3:8.1f}"
            vs_a = med(lambda r, f=evals_of: f(r) / r.total("a"))
        else:
            step_s, eval_s = med(steps_of), med(evals_of)
            total = med(lambda r, f=steps_of, g=evals_of: f(r) + g(r))
            cells = f"{step_s:8.2f} | {eval_s:8.2f} | {total:8.2f} | {total / steps * 1e3:8.1f}"
            vs_a = med(lambda r, f=steps_of, g=evals_of: (f(r) + g(r)) / r.total("a"))
        print(f"| {name:<38} | {trainings:>9} | {teachers:>8} | {cells} | {vs_a:6.2f}x |")
    print(f"\n{steps} steps + {n_eval} evaluations per training (every {eval_every} steps and after the last; "
          f"{repeats[0].test_images} test images each); "
          f"median of {len(repeats)} repeat(s); 'vs (a)' and the ratios below: median over repeats of each "
          "repeat's ratio.")
    verdict = "ok" if ratios["c/a"] <= TARGET_C_OVER_A else "MISS"
    print(f"(c)/(a): {ratios['c/a']:.3f}x  (4 teachers in one training vs 1 single-variant training; "
          f"target <= {TARGET_C_OVER_A}x: {verdict})")
    print(f"(c)/(b): {ratios['c/b']:.3f}x  (4 teachers in one training vs 4 separate trainings: they cost "
          f"{1 / ratios['c/b']:.2f}x as much)")
    print(f"(d)/(a): {ratios['d/a']:.3f}x  ({n_d} teachers in one training vs 1 single-variant training)")
    print(f"(d)/({n_d}a): {ratios['d/12a']:.3f}x  ({n_d} teachers in one training vs {n_d} x (a), standing in "
          f"for {n_d} separate trainings)")
    print(f"(b:{SINGLE})/(a): {ratios['b_sts/a']:.3f}x  (the same training twice in a repeat: the noise floor)")

    # Per teacher: the extra evaluation time of (c) and (d) over (a), divided by their extra teachers.
    a_step = med(lambda r: r.steps_s["a"] / steps)
    interval = a_step * eval_every
    for label, name, n in (("(c)-(a)", "c", n_c), ("(d)-(a)", "d", n_d)):
        eval_ms = med(lambda r, w=name, k=n: (r.evals_s[w] - r.evals_s["a"]) / n_eval / (k - 1)) * 1e3
        step_ms = med(lambda r, w=name, k=n: (r.steps_s[w] - r.steps_s["a"]) / steps / (k - 1)) * 1e3
        ratios[f"eval_ms_per_teacher_{name}"] = eval_ms
        print(f"per teacher from {label}: evaluation {eval_ms:.1f} ms per evaluation = "
              f"{eval_ms / 1e3 / interval:.1%} of an evaluation interval ({eval_every} steps of (a) at "
              f"{a_step * 1e3:.1f} ms = {interval:.2f} s); whole-step difference {step_ms:+.2f} ms per step "
              f"(noise floor: (b:{SINGLE}) - (a) = {(ratios['b_sts/a'] - 1) * a_step * 1e3:+.2f} ms per step)")
    # The smoother updates, timed on their own (medians over the repeats of each teacher's median).
    updates = {w: {key: med(lambda r, w=w, k=key: r.updates[w][k]) * 1e3 for key in repeats[0].updates[w]}
               for w in ("c", "d")}
    costliest = max(updates["d"], key=updates["d"].get)
    ratios["update_ms_per_teacher_d"] = statistics.median(updates["d"].values())
    print("smoother update on its own, ms per teacher per step: (c) "
          + ", ".join(f"{k} {v:.3f}" for k, v in updates["c"].items())
          + f"; (d)'s {n_d}: median {ratios['update_ms_per_teacher_d']:.3f}, max {updates['d'][costliest]:.3f} "
          f"({costliest}) = {updates['d'][costliest] / 1e3 / a_step:.2%} of a step of (a)")
    one_eval = med(lambda r: r.evals_s["a"] / n_eval) * 1e3
    print(f"one evaluation of (a) (its teacher + the student): {one_eval:.1f} ms; (a) in all: {a_total:.2f} s")
    return ratios


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per training (default 200; quick 6)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats, median reported (default 3; quick 1)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per training before timing (default 3; quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="process CPU time or wall clock (default: cpu with one thread, else wall)")
    parser.add_argument("--update-calls", type=int, default=None,
                        help="calls per teacher when timing smoother updates on their own (default 50; quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke profile, 6 steps, 1 repeat: checks that the benchmark runs, measures nothing")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (6 if args.quick else 200)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    update_calls = args.update_calls if args.update_calls is not None else (3 if args.quick else 50)
    for flag, value, low in (("--steps", steps, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                             ("--update-calls", update_calls, 1),
                             ("--threads", args.threads, 1)):
        if value < low:
            parser.error(f"{flag} {value} is out of range; expected an integer >= {low}")
    clock_name = args.clock or ("cpu" if args.threads == 1 else "wall")
    torch.set_num_threads(args.threads)

    profile = "smoke" if args.quick else "cpu"
    # steps = the timed steps + the warm-up: the cosine schedule and the algorithms' ramp-ups stay in range.
    base = RunConfig(algorithm="fixmatch", dataset="digits", labels=20, profile=profile, device="cpu",
                     seed=args.seed, steps=steps + warmup)
    settings = plan_teachers([base])[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), clock: {clock_name}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    print(f"FixMatch on digits, 20 labels, profile {profile}: model {settings.model}, batch {settings.batch_size} "
          f"+ {settings.mu} x {settings.batch_size} unlabelled, evaluation every {settings.eval_every} steps; "
          f"{steps} timed steps after {warmup} warm-up step(s)")
    clock = clock_of(clock_name)
    results = []
    for i in range(repeats):
        started = time.perf_counter()
        results.append(run_repeat(base, steps, warmup, clock, update_calls))
        print(f"repeat {i + 1}/{repeats}: " + ", ".join(f"({w}) {results[-1].total(w):.2f} s" for w in "abcd")
              + f"  [{time.perf_counter() - started:.0f} s wall]", flush=True)
    ratios = report(results, steps, settings.eval_every)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return ratios


if __name__ == "__main__":
    main()
