"""The strategy registry: golden numbers of the built-ins, registry-wide properties of every strategy (built-in
and plug-in), plug-in loading and its errors, SmoothingSpec, momentum schedules, SWA and EMAN's buffer rule."""

from __future__ import annotations

import copy
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ssl_bench.config import PROFILES, RunConfig
from ssl_bench.run.rundirs import run_base_name
from ssl_bench.smoothing import (
    STRATEGIES,
    STRATEGY_PARAMETERS,
    Smoother,
    SmoothingError,
    SmoothingSpec,
    available_strategies,
    build_smoother,
    kernels,
    momentum_at,
    strategy_class,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "sparse_ema.py"
sys.path.insert(0, str(ROOT / "tests" / "data"))
from make_smoothing_golden import config_key, golden_configs, golden_run  # noqa: E402

GOLDEN = torch.load(ROOT / "tests" / "data" / "smoothing_golden.pt", weights_only=True)


# ------------------------------------------------------------------------------------------------------------
# The built-ins reproduce the Smoother of commit c62e06e bit for bit
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("full_weights", [False, True], ids=["cpu-path", "accelerator-path"])
@pytest.mark.parametrize("config", golden_configs(), ids=config_key)
def test_builtins_reproduce_the_golden_teachers(config: dict, full_weights: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Same masks, same generator draws, same bytes as the pre-registry Smoother (tests/data/make_...), whose
    layer-wise updates on the CPU touched only the picked tensors (a host read of the mask): the masked lerp
    of every tensor that replaced it gives the same bytes."""
    if full_weights:        # the per-element weights accelerators take (one multi-tensor kernel), run on the CPU
        monkeypatch.setattr(kernels, "_BROADCAST_WEIGHT_DEVICES", ())
    expected = GOLDEN[config_key(config)]
    got = golden_run(config)
    assert list(got) == list(expected)
    for name in expected:
        raw = [t.reshape(-1).view(torch.uint8) for t in (got[name], expected[name])]
        assert torch.equal(*raw), name


# ------------------------------------------------------------------------------------------------------------
# Registry-wide: every strategy, built-in or plug-in, gets these tests
# ------------------------------------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)


def pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    student = Net()
    with torch.no_grad():
        for b in student.buffers():
            b.add_(1)
    return copy.deepcopy(student), student


def zero_teacher_unit_student() -> tuple[nn.Module, nn.Module]:
    """A pair whose teacher parameters are all 0 and student parameters all 1: every teacher entry is then the
    weight the update has given the student so far (the closed-form tests read it directly)."""
    teacher, student = pair()
    with torch.no_grad():
        for t in teacher.parameters():
            t.zero_()
        for s in student.parameters():
            s.fill_(1.0)
    return teacher, student


def step_student(student: nn.Module, step: int) -> None:
    with torch.no_grad():
        for i, t in enumerate(student.parameters()):
            t.add_(0.1 * math.sin(step + i))
        student.bn.running_mean.add_(0.05 * (step + 1))
        student.bn.num_batches_tracked.add_(1)


ALL = [*available_strategies(), str(EXAMPLE)]
TOTAL = 12
RANDOM_SETTINGS = {"p": 0.5, "m": 0.9}


def run(smoother: Smoother, teacher: nn.Module, student: nn.Module, steps: range) -> None:
    for step in steps:
        step_student(student, step)
        smoother.update(teacher, student, step=step, total_steps=TOTAL)


def make(name: str, seed: int = 5) -> Smoother:
    return build_smoother(name, generator=torch.Generator().manual_seed(seed), **RANDOM_SETTINGS)


@pytest.mark.parametrize("name", ALL, ids=lambda n: Path(n).stem)
def test_every_strategy_gives_a_finite_teacher_that_moves(name: str) -> None:
    teacher, student = pair()
    before = copy.deepcopy(teacher.state_dict())
    run(make(name), teacher, student, range(TOTAL))
    state = teacher.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    assert any(not torch.equal(state[k], before[k]) for k in state)


@pytest.mark.parametrize("name", ALL, ids=lambda n: Path(n).stem)
def test_every_strategy_same_seed_same_teacher_and_exact_resume(name: str) -> None:
    teacher, student = pair()
    smoother = make(name)
    run(smoother, teacher, student, range(5))
    saved = json.loads(json.dumps({k: v for k, v in smoother.state_dict().items() if k != "generator_state"}))
    saved["generator_state"] = smoother.state_dict()["generator_state"].clone()
    at_5 = copy.deepcopy((teacher, student))
    run(smoother, teacher, student, range(5, TOTAL))

    resumed = Smoother.from_state_dict(saved)                       # settings and generator from the state
    assert resumed.config() == smoother.config()
    assert resumed.num_updates == 5
    run(resumed, *at_5, range(5, TOTAL))
    for a, b in zip(at_5[0].state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    again_teacher, again_student = pair()                           # same seed from scratch: same teacher
    run(make(name), again_teacher, again_student, range(TOTAL))
    for a, b in zip(again_teacher.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL, ids=lambda n: Path(n).stem)
def test_every_strategy_serves_several_teachers_from_one_student(name: str) -> None:
    """Multi-teacher training: this strategy beside sts and tma gives what each gives alone."""
    names = [name, "sts", "tma"]

    def train(chosen: list[str]) -> list[list[torch.Tensor]]:
        _, student = pair()
        teachers = [pair()[0] for _ in chosen]
        smoothers = [make(n, seed=i) for i, n in zip((names.index(c) for c in chosen), chosen, strict=True)]
        for step in range(TOTAL):
            step_student(student, step)
            for s, t in zip(smoothers, teachers, strict=True):
                s.update(t, student, step=step, total_steps=TOTAL)
        return [list(t.state_dict().values()) for t in teachers]

    together = train(names)
    alone = [train([n])[0] for n in names]
    for a, b in zip(together, alone, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------------------------
# Plug-ins
# ------------------------------------------------------------------------------------------------------------

def test_the_readme_example_is_the_example_file_and_under_40_lines() -> None:
    source = EXAMPLE.read_text()
    assert len(source.splitlines()) < 40
    readme = (ROOT / "README.md").read_text()
    assert source.strip() in readme, "README's plug-in example must be docs/examples/sparse_ema.py verbatim"


def test_example_plugin_closed_form() -> None:
    """sparse_ema with every=3: the teacher moves at steps 2, 5, 8 with weight 1 - m**3, else stays."""
    m, every = 0.9, 3
    teacher, student = zero_teacher_unit_student()
    smoother = build_smoother(str(EXAMPLE), m=m, every=every)
    value = 0.0
    for step in range(9):
        smoother.update(teacher, student, step=step)
        if (step + 1) % every == 0:
            value = value + (1.0 - m**every) * (1.0 - value)
        assert torch.allclose(teacher.fc.weight, torch.full_like(teacher.fc.weight, value), atol=1e-6)


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


HEADER = "from dataclasses import dataclass\nfrom ssl_bench.smoothing import register, setting, shared\n"


def test_plugin_found_in_the_smoothers_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "smoothers", "halfway.py", HEADER + """
@register("halfway")
@dataclass(frozen=True)
class Halfway:
    def update(self, u):
        u.lerp(0.5)
        u.copy_buffers()
""")
    monkeypatch.chdir(tmp_path)
    assert "halfway" in available_strategies()
    teacher, student = pair()
    with torch.no_grad():
        teacher.fc.weight.zero_()
        student.fc.weight.fill_(2.0)
    build_smoother("halfway").update(teacher, student)
    assert torch.equal(teacher.fc.weight, torch.ones_like(teacher.fc.weight))


@pytest.mark.parametrize("body,needle", [
    ("raise RuntimeError('boom')\n", "importing the smoothing strategy file failed: RuntimeError: boom"),
    ("def broken(:\n", "SyntaxError"),
    ("@register('tma')\n@dataclass(frozen=True)\nclass T:\n    def update(self, u): pass\n", "reserved"),
    ("@register('x1')\n@dataclass\nclass T:\n    def update(self, u): pass\n", "frozen=True"),
    ("@register('x2')\n@dataclass(frozen=True)\nclass T:\n    k: int = 3\n    def update(self, u): pass\n",
     "not declared with setting"),
    ("@register('x3')\n@dataclass(frozen=True)\nclass T:\n    m: float = setting(0.5, help='h')\n"
     "    def update(self, u): pass\n", "shared('m')"),
    ("@register('x4')\n@dataclass(frozen=True)\nclass T:\n    pass\n", "no update"),
    ("x = 1\n", "found none"),
])
def test_a_broken_plugin_is_a_loud_error_naming_its_file(tmp_path: Path, body: str, needle: str) -> None:
    path = write(tmp_path, f"bad_{abs(hash(body)) % 10**8}.py", HEADER + body)
    with pytest.raises(SmoothingError) as info:
        build_smoother(str(path))
    assert str(path) in str(info.value) and needle in str(info.value)
    if "boom" in needle:
        assert isinstance(info.value.__cause__, RuntimeError)        # the user's traceback is chained


def test_a_plugin_file_named_like_a_builtin_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "smoothers", "sts.py", "x = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SmoothingError, match="reserved"):
        build_smoother("sts", seed=0)


def test_unknown_strategy_and_setting_errors() -> None:
    with pytest.raises(SmoothingError, match="unknown strategy 'ema'; choose one of 'none'"):
        build_smoother("ema")
    with pytest.raises(SmoothingError, match="unknown setting 'momentum'"):
        build_smoother("tma", momentum=0.9)
    with pytest.raises(SmoothingError, match=r"every=0 is outside \[1, inf\]"):
        build_smoother("swa", every=0)
    with pytest.raises(SmoothingError, match="unknown schedule 'linear'"):
        build_smoother("tma", schedule="linear")
    with pytest.raises(SmoothingError, match="no such file"):
        build_smoother("missing/smoother.py")


def test_strategy_parameters_view_is_the_registry() -> None:
    assert STRATEGY_PARAMETERS == {"none": (), "tma": ("m", "buffers", "schedule"),
                                   "se": ("p", "granularity"),
                                   "sts": ("p", "m", "granularity", "buffers", "schedule"),
                                   "swa": ("start", "every", "buffers")}
    assert set(STRATEGIES) <= set(available_strategies()) and "swa" in STRATEGIES


# ------------------------------------------------------------------------------------------------------------
# SmoothingSpec
# ------------------------------------------------------------------------------------------------------------

GRID = [dict(smooth=s, p=p, m=m, granularity=g, buffers=b)
        for s in STRATEGIES for p in (0.3, 0.5) for m in (0.99, 0.999) for g in ("layer", "neuron")
        for b in ("copy", "average")]


@pytest.mark.parametrize("settings", GRID, ids=lambda d: "-".join(map(str, d.values())))
def test_spec_key_and_suffix_equal_the_legacy_names(settings: dict) -> None:
    """Keys of saved trainings stay valid; directory names stay where the legacy name was unambiguous."""
    config = RunConfig(profile="cpu", dataset="digits", **settings)
    spec = SmoothingSpec.of(config.smooth, config.to_dict())
    assert spec.key == config.teacher_key()
    name = run_base_name(config).split("-")[1]   # run directories are named by the spec, m against the profile's
    assert name == spec.suffix(defaults={"m": PROFILES["cpu"].m})
    # where the legacy name (strategy, granularity, p) was unambiguous, it is unchanged
    if "m" not in STRATEGY_PARAMETERS[config.smooth] or config.m == PROFILES["cpu"].m:
        if config.buffers == "copy" or "buffers" not in STRATEGY_PARAMETERS[config.smooth]:
            legacy = config.smooth + "".join(
                f"_{config.granularity}" if k == "granularity" and config.granularity != "layer" else
                f"_p{config.p}" if k == "p" and config.p != 0.5 else ""
                for k in ("granularity", "p") if k in STRATEGY_PARAMETERS[config.smooth])
            assert name == legacy


def test_spec_suffix_shows_a_non_default_m() -> None:
    """The bug: --smooth tma --m 0.99,0.999 on the cpu profile gave ...-s0-cpu and ...-s0-cpu-2."""
    profile_defaults = {"m": 0.99}
    names = {SmoothingSpec.of("tma", m=m).suffix(profile_defaults) for m in (0.99, 0.999)}
    assert names == {"tma", "tma_m0.999"}
    assert SmoothingSpec.of("sts", p=0.3, granularity="channel", buffers="average").suffix() == \
        "sts_channel_p0.3_average"
    assert SmoothingSpec.of("tma", schedule="cosine").suffix() == "tma_cosine"
    assert SmoothingSpec.of("tma", schedule="cosine").key == "tma-m0.999-copy-cosine"
    assert SmoothingSpec.of("swa").key == "swa-copy"
    assert SmoothingSpec.of("swa", start=0.75, every=4).suffix() == "swa_start0.75_every4"


def test_spec_label_and_record_round_trip() -> None:
    spec = SmoothingSpec.of("sts", {"p": 0.3, "m": 0.99, "granularity": "channel", "lr": 0.1})
    assert spec.label() == "sts (channel, p=0.3, m=0.99)"
    assert spec.label({"m": 0.99}) == "sts (channel, p=0.3)"
    record = json.loads(json.dumps(spec.to_record()))
    assert record == {"strategy": "sts", "settings": {"p": 0.3, "m": 0.99, "granularity": "channel",
                                                      "buffers": "copy", "schedule": "constant"}}
    assert SmoothingSpec.from_record(record) == spec
    assert hash(spec) == hash(SmoothingSpec.from_record(record))
    assert SmoothingSpec.of("tma", p=0.7) == SmoothingSpec.of("tma")            # tma does not read p
    with pytest.raises(SmoothingError, match="does not read"):
        SmoothingSpec.from_record({"strategy": "tma", "settings": {"p": 0.5}})
    with pytest.raises(SmoothingError, match="p=1.5 is outside"):
        SmoothingSpec.of("sts", p=1.5)
    assert spec.build(seed=0).config() == {"strategy": "sts", **spec.as_dict()}


# ------------------------------------------------------------------------------------------------------------
# Momentum schedules, SWA, EMAN
# ------------------------------------------------------------------------------------------------------------

def test_momentum_schedules_closed_forms() -> None:
    m, T = 0.99, 100
    assert momentum_at("constant", m, 37, None) == m
    assert momentum_at("cosine", m, 0, T) == pytest.approx(m)
    assert momentum_at("cosine", m, 50, T) == pytest.approx(1 - 0.01 / 2)          # cos(pi/2) = 0
    assert momentum_at("cosine", m, T, T) == pytest.approx(1.0)
    assert momentum_at("cosine", m, 25, T) == pytest.approx(1 - 0.01 * (math.sqrt(0.5) + 1) / 2)
    assert momentum_at("warmup", m, 0, None) == pytest.approx(0.1)                 # (1 + 0) / (10 + 0)
    assert momentum_at("warmup", m, 8, None) == pytest.approx(0.5)                 # 9 / 18
    assert momentum_at("warmup", m, 10_000, None) == m                             # capped at m
    with pytest.raises(SmoothingError, match="total_steps"):
        momentum_at("cosine", m, 3, None)


@pytest.mark.parametrize("strategy", ["tma", "sts"])
@pytest.mark.parametrize("schedule", ["cosine", "warmup"])
def test_scheduled_tma_follows_its_momentum(strategy: str, schedule: str) -> None:
    """Teacher 0, student 1 everywhere: after updates t = 0..k-1, 1 - prod_t m_t (sts with p = 0 is tma)."""
    m, T = 0.9, 10
    teacher, student = zero_teacher_unit_student()
    smoother = build_smoother(strategy, m=m, schedule=schedule, p=0.0, seed=0)
    kept = 1.0
    for step in range(T):
        smoother.update(teacher, student, step=step, total_steps=T)
        kept *= momentum_at(schedule, m, step, T)
        assert torch.allclose(teacher.conv.weight, torch.full_like(teacher.conv.weight, 1 - kept), atol=1e-6)


def test_swa_is_the_uniform_average_of_the_snapshots() -> None:
    T, start, every = 20, 0.5, 3                       # first = 10: snapshots at steps 10, 13, 16, 19
    teacher, student = pair()
    smoother = build_smoother("swa", start=start, every=every, buffers="average")
    snapshots, buffer_snapshots = [], []
    for step in range(T):
        step_student(student, step)
        smoother.update(teacher, student, step=step, total_steps=T)
        if step < 10:                                  # before the start the teacher is the student
            assert torch.equal(teacher.fc.weight, student.fc.weight)
        if step >= 10 and (step - 10) % every == 0:
            snapshots.append([p.detach().clone() for p in student.parameters()])
            buffer_snapshots.append(student.bn.running_mean.clone())
    assert len(snapshots) == 4
    for i, t in enumerate(teacher.parameters()):
        assert torch.allclose(t, torch.stack([s[i] for s in snapshots]).mean(0), atol=1e-6)
    assert torch.allclose(teacher.bn.running_mean, torch.stack(buffer_snapshots).mean(0), atol=1e-6)
    assert torch.equal(teacher.bn.num_batches_tracked, student.bn.num_batches_tracked)   # counters copied


def test_swa_equals_torch_averaged_model() -> None:
    """Every step from the start: torch.optim.swa_utils.AveragedModel's default (equal-weight) average."""
    T = 8
    teacher, student = pair()
    reference = AveragedModel(student, use_buffers=False)
    smoother = build_smoother("swa", start=0.25)      # first = 2
    for step in range(T):
        step_student(student, step)
        smoother.update(teacher, student, step=step, total_steps=T)
        if step >= 2:
            reference.update_parameters(student)
    for a, b in zip(teacher.parameters(), reference.module.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_swa_without_total_steps_is_a_clear_error() -> None:
    teacher, student = pair()
    with pytest.raises(SmoothingError, match="total_steps"):
        build_smoother("swa").update(teacher, student)


@pytest.mark.parametrize("strategy", ["tma", "sts"])
def test_average_buffers_is_emans_rule(strategy: str) -> None:
    """EMAN (Cai et al., CVPR 2021; bl0/eman's momentum update): every state-dict entry but
    num_batches_tracked becomes m * ema + (1 - m) * main, with the parameters' momentum; the counter is
    copied."""
    m = 0.8
    teacher, student = pair()
    smoother = build_smoother(strategy, m=m, p=0.0, buffers="average", seed=0)
    ema = {k: v.clone() for k, v in teacher.state_dict().items()}
    for step in range(4):
        step_student(student, step)
        smoother.update(teacher, student, step=step)
        for k, v in student.state_dict().items():
            ema[k] = v.clone() if "num_batches_tracked" in k else ema[k] * m + (1 - m) * v
    for k, v in teacher.state_dict().items():
        assert torch.allclose(v.float(), ema[k].float(), atol=1e-6) if v.is_floating_point() else \
            torch.equal(v, ema[k]), k


def test_strategy_class_names() -> None:
    assert strategy_class("sts").name == "sts"
    assert strategy_class(str(EXAMPLE)).name == "sparse_ema"


# ------------------------------------------------------------------------------------------------------------
# Fast paths: no host reads, drawn updates compile in one graph
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL, ids=lambda n: Path(n).stem)
def test_draw_then_drawn_update_equals_update(name: str) -> None:
    """draw() + update(drawn=True) is the same update (same masks, same values) as update() alone."""
    teacher_a, student = pair()
    teacher_b = copy.deepcopy(teacher_a)
    a, b = make(name), make(name)
    for step in range(TOTAL):
        step_student(student, step)
        a.update(teacher_a, student, step=step, total_steps=TOTAL)
        b.draw(teacher_b, student, step=step, total_steps=TOTAL)
        b.update(teacher_b, student, step=step, total_steps=TOTAL, drawn=True)
    for x, y in zip(teacher_a.state_dict().values(), teacher_b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_drawn_update_without_draw_is_refused() -> None:
    teacher, student = pair()
    with pytest.raises(SmoothingError, match="without draw"):
        make("sts").update(teacher, student, step=0, drawn=True)


@pytest.mark.parametrize("full_weights", [False, True], ids=["cpu-path", "accelerator-path"])
@pytest.mark.parametrize("granularity", ["layer", "channel", "neuron"])
def test_updates_read_nothing_back(granularity: str, full_weights: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU's path and on the one accelerators take, an update makes no host read (item, tolist, bool(),
    nonzero, ...)."""
    if full_weights:
        monkeypatch.setattr(kernels, "_BROADCAST_WEIGHT_DEVICES", ())
    teacher, student = pair()
    smoother = build_smoother("sts", p=0.5, m=0.9, granularity=granularity, buffers="average", seed=0)
    reads = []
    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "numpy"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda self, *a, _m=method, _o=original, **k: reads.append(_m) or _o(self, *a, **k))
    for step in range(3):                      # the first update builds the plan and its index: also sync-free
        smoother.update(teacher, student, step=step)
    assert reads == []


@pytest.mark.slow
@pytest.mark.parametrize("name,settings", [("tma", {}), ("swa", {}), ("sts", {"granularity": "channel"}),
                                           ("se", {"granularity": "neuron"})])
def test_drawn_update_compiles_without_graph_breaks(name: str, settings: dict) -> None:
    teacher, student = pair()
    smoother = build_smoother(name, p=0.5, m=0.9, seed=0, **settings)
    smoother.update(teacher, student, step=0, total_steps=TOTAL)
    smoother.draw(teacher, student, step=1, total_steps=TOTAL)
    with torch.no_grad():
        explained = torch._dynamo.explain(
            lambda: smoother.update(teacher, student, step=1, total_steps=TOTAL, drawn=True))()
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def test_launch_budget_on_cudas_code_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/bench_smoothing.py --launches as a test: at most 10 projected CUDA kernels per WRN-28-2
    teacher update at any granularity, and no host reads."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_smoothing", ROOT / "benchmarks" / "bench_smoothing.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(kernels, "_BROADCAST_WEIGHT_DEVICES", ())
    torch.manual_seed(0)
    student = bench.wrn(2)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for name, settings in [("tma", {}), ("swa", {"start": 0.0}), *[
                (s, {"granularity": g}) for s in ("se", "sts") for g in ("layer", "channel", "neuron")]]:
            smoother = build_smoother(name, p=0.5, m=0.99, seed=0, **settings)
            calls, launches, reads, listing = bench.count_update(
                lambda s=smoother: s.update(teacher, student, step=3, total_steps=10))
            assert launches <= 10 and reads == 0, (name, settings, launches, listing)


def test_checkpoints_of_the_pre_registry_smoother_still_load() -> None:
    """Version 1 (commit c62e06e) wrote the five settings as top-level keys; resuming such a training works."""
    teacher_a, student = pair()
    current = build_smoother("sts", p=0.5, m=0.9, granularity="channel", seed=3)
    run(current, teacher_a, student, range(2))
    state = current.state_dict()
    v1 = {"version": 1, "strategy": "sts", "p": 0.5, "m": 0.9, "granularity": "channel", "buffers": "copy",
          "num_updates": state["num_updates"], "generator_state": state["generator_state"],
          "generator_device": "cpu"}
    resumed = Smoother.from_state_dict(v1)
    assert resumed.config() == current.config() and resumed.num_updates == 2
    teacher_b, student_b = copy.deepcopy((teacher_a, student))
    run(current, teacher_a, student, range(2, 5))
    run(resumed, teacher_b, student_b, range(2, 5))                   # the same masks from the v1 state
    for x, y in zip(teacher_a.state_dict().values(), teacher_b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    # the tma of a v1 checkpoint carried p and granularity it never read: ignored, not a mismatch
    tma_v1 = {"version": 1, "strategy": "tma", "p": 0.5, "m": 0.9, "granularity": "layer", "buffers": "copy",
              "num_updates": 7, "generator_state": None, "generator_device": None}
    tma = build_smoother("tma", m=0.9)
    tma.load_state_dict(tma_v1)
    assert tma.num_updates == 7
    with pytest.raises(SmoothingError, match="m: saved 0.9, this smoother 0.99"):
        build_smoother("tma", m=0.99).load_state_dict(tma_v1)
