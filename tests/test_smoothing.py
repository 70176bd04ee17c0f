"""Tests of ssl_bench.smoothing against closed forms, hand-worked masks and torch's own EMA (swa_utils)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ssl_bench import smoothing
from ssl_bench.smoothing import (
    BUFFER_POLICIES,
    GRANULARITIES,
    PARAMETER_DEFAULTS,
    STRATEGIES,
    STRATEGY_PARAMETERS,
    Smoother,
    build_smoother,
    copy_student_to_teacher,
    draw_replace_mask,
    kernels,
    relevant_settings,
    unit_shape,
)

# ------------------------------------------------------------------------------------------------------------
# Small models and helpers
# ------------------------------------------------------------------------------------------------------------

# The paper's four strategies (these tests update without a training length; swa needs one and has its own
# registry-wide tests in tests/test_smoothing_registry.py).
PAPER_STRATEGIES = ("none", "tma", "se", "sts")


class TwoLayer(nn.Module):
    """fc1 (4x3 weight, 4 bias) -> BN(4) -> fc2 (2x4 weight, 2 bias), plus a 0-d scale: 7 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x)))) * self.scale


def make_pair(seed: int = 0, model: type[nn.Module] = TwoLayer) -> tuple[nn.Module, nn.Module]:
    """(teacher, student) with different random values everywhere, buffers included."""
    torch.manual_seed(seed)
    student, teacher = model(), model()
    with torch.no_grad():
        for module in (student, teacher):
            for t in module.parameters():
                t.normal_()
            for b in module.buffers():
                if b.is_floating_point():
                    b.uniform_(0.5, 1.5)
                else:
                    b.fill_(3 if module is teacher else 7)
    return teacher, student


def fill(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in module.parameters():
            t.fill_(value)


def params(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def nudge(student: nn.Module, step: int) -> None:
    """A deterministic 'optimizer step' so that consecutive updates see different students."""
    with torch.no_grad():
        for i, t in enumerate(student.parameters()):
            t.add_(0.01 * (step + 1) * (i + 1))


def expected_replace_mask(n: int, p: float, seed: int) -> torch.Tensor:
    """Re-derive the mask of one update from the raw generator, as documented in smoothing.kernels.Gate.

    b = the fewest of 8, 16, 32 bits with p * 2**b an integer (else 32); ceil(n b / 64) full-range int64 draws
    give n signed b-bit values x; u = x + 2**(b-1) is uniform on [0, 2**b) and unit i is replaced iff
    u >= round(p * 2**b).
    """
    b = next((b for b in (8, 16, 32) if (p * 2**b).is_integer()), 32)
    g = torch.Generator().manual_seed(seed)
    words = torch.empty(-(-n * b // 64), dtype=torch.int64).random_(-(2**63), None, generator=g)
    x = words.view({8: torch.int8, 16: torch.int16, 32: torch.int32}[b])[:n].to(torch.int64)
    return x + 2 ** (b - 1) >= round(p * 2**b)


@pytest.mark.parametrize("p", [0.5, 0.5 + 2**-12, 0.7, 0.999])     # 8, 16, 32, 32 random bits per unit
def test_draw_replace_mask_matches_documented_draw(p: float) -> None:
    mask = draw_replace_mask(1001, p, torch.Generator().manual_seed(3))
    assert torch.equal(mask, expected_replace_mask(1001, p, seed=3))
    assert 0 < int(mask.sum()) < 1001 or p > 0.99


def units(module: nn.Module, granularity: str) -> list[int]:
    return [math.prod(unit_shape(t.shape, granularity)) for t in module.parameters()]


# ------------------------------------------------------------------------------------------------------------
# Names and degenerate cases of Eq. 3
# ------------------------------------------------------------------------------------------------------------


def test_public_names() -> None:
    assert STRATEGIES == ("none", "tma", "se", "sts", "swa")
    assert GRANULARITIES == ("layer", "channel", "neuron")
    assert BUFFER_POLICIES == ("copy", "average", "recompute")


def test_unit_shape_per_granularity() -> None:
    assert unit_shape((16, 3, 3, 3), "layer") == (1, 1, 1, 1)
    assert unit_shape((16, 3, 3, 3), "channel") == (16, 1, 1, 1)
    assert unit_shape((16,), "channel") == (16,)              # a 1-D tensor: its entries are the channels
    assert unit_shape((), "channel") == ()                    # a 0-d tensor is one unit
    assert unit_shape((16, 3), "neuron") == (16, 3)


# ------------------------------------------------------------------------------------------------------------
# The settings each strategy reads
# ------------------------------------------------------------------------------------------------------------

BASE_SETTINGS = {"p": 0.5, "m": 0.9, "granularity": "layer", "buffers": "copy"}
OTHER_VALUES = {"p": 0.2, "m": 0.5, "granularity": "neuron", "buffers": "average", "schedule": "warmup"}


def teacher_after(strategy: str, settings: dict) -> list[torch.Tensor]:
    """Teacher state (parameters and buffers) after four updates from a student that moves in between."""
    teacher, student = make_pair()
    smoother = build_smoother(strategy, **settings, seed=1)
    for step in range(4):
        nudge(student, step)
        smoother.update(teacher, student)
    return list(teacher.state_dict().values())


@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
def test_strategy_parameters_are_what_the_update_reads(strategy: str) -> None:
    """A setting outside STRATEGY_PARAMETERS[strategy] changes nothing, bit for bit; one inside changes the
    teacher; and relevant_settings tells the two runs apart exactly when their teachers differ."""
    reference = teacher_after(strategy, BASE_SETTINGS)
    for name, other in OTHER_VALUES.items():
        changed_settings = BASE_SETTINGS | {name: other}
        after = teacher_after(strategy, changed_settings)
        changed = not all(torch.equal(a, b) for a, b in zip(after, reference, strict=True))
        assert changed == (name in STRATEGY_PARAMETERS[strategy]), (strategy, name)
        named_apart = (relevant_settings(strategy, changed_settings)
                       != relevant_settings(strategy, BASE_SETTINGS))
        assert named_apart == changed, (strategy, name)


def test_parameter_defaults_are_the_smoothers_defaults() -> None:
    shared = {name for strategy in PAPER_STRATEGIES for name in STRATEGY_PARAMETERS[strategy]}
    assert set(PARAMETER_DEFAULTS) == shared   # swa's start and every are its own settings
    assert tuple(STRATEGY_PARAMETERS) == STRATEGIES
    for strategy in PAPER_STRATEGIES:
        smoother = build_smoother(strategy, seed=0)
        assert smoother.settings == {k: PARAMETER_DEFAULTS[k] for k in STRATEGY_PARAMETERS[strategy]}
    assert PARAMETER_DEFAULTS["granularity"] in GRANULARITIES
    assert PARAMETER_DEFAULTS["buffers"] in BUFFER_POLICIES


def test_relevant_settings_keeps_what_the_strategy_reads() -> None:
    settings = {"p": 0.7, "m": 0.99, "granularity": "channel", "buffers": "average", "lr": 0.03, "seed": 4}
    assert relevant_settings("none", settings) == {}
    assert relevant_settings("tma", settings) == {"m": 0.99, "buffers": "average", "schedule": "constant"}
    assert relevant_settings("se", settings) == {"p": 0.7, "granularity": "channel"}
    assert list(relevant_settings("sts", settings).items()) == [
        ("p", 0.7), ("m", 0.99), ("granularity", "channel"), ("buffers", "average"), ("schedule", "constant")]
    # a setting the strategy reads but the mapping lacks is the value the smoother then uses: its default
    assert relevant_settings("tma", {"m": 0.9}) == {"m": 0.9, "buffers": PARAMETER_DEFAULTS["buffers"],
                                                    "schedule": "constant"}
    with pytest.raises(ValueError, match="unknown strategy 'ema'; choose one of 'none'"):
        relevant_settings("ema", settings)


def test_none_copies_student() -> None:
    teacher, student = make_pair()
    build_smoother("none").update(teacher, student)
    for a, b in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("buffers", BUFFER_POLICIES)
def test_tma_matches_torch_swa_utils_ema(buffers: str) -> None:
    decay = 0.9
    teacher, student = make_pair()
    copy_student_to_teacher(teacher, student)
    reference = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    reference.update_parameters(student)               # AveragedModel's first call copies, like our start
    smoother = build_smoother("tma", m=decay, buffers=buffers)
    for step in range(6):
        nudge(student, step)
        reference.update_parameters(student)
        smoother.update(teacher, student)
    for a, b in zip(teacher.parameters(), reference.module.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), (a - b).abs().max()
    # and the closed form after one step: m theta^T + (1 - m) theta^S (Eq. 4)
    before = params(teacher)
    smoother.update(teacher, student)
    for new, old, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        assert torch.allclose(new, decay * old + (1 - decay) * s, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_sts_with_p0_is_tma(granularity: str) -> None:
    teacher_a, student = make_pair()
    teacher_b = copy.deepcopy(teacher_a)
    sts = build_smoother("sts", p=0.0, m=0.99, granularity=granularity, seed=1)
    tma = build_smoother("tma", m=0.99)
    for step in range(3):
        nudge(student, step)
        sts.update(teacher_a, student)
        tma.update(teacher_b, student)
    assert_same(params(teacher_a), params(teacher_b))


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_sts_with_m0_is_se(granularity: str) -> None:
    teacher_a, student = make_pair()
    teacher_b = copy.deepcopy(teacher_a)
    sts = build_smoother("sts", p=0.4, m=0.0, granularity=granularity, seed=3)
    se = build_smoother("se", p=0.4, m=0.999, granularity=granularity, seed=3)    # se ignores m
    for step in range(4):
        nudge(student, step)
        sts.update(teacher_a, student)
        se.update(teacher_b, student)
    assert_same(params(teacher_a), params(teacher_b))


@pytest.mark.parametrize("strategy", ["se", "sts"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_p1_leaves_parameters_unchanged(strategy: str, granularity: str) -> None:
    teacher, student = make_pair()
    before = params(teacher)
    smoother = build_smoother(strategy, p=1.0, m=0.5, granularity=granularity, seed=0)
    for _ in range(3):
        smoother.update(teacher, student)
    assert_same(params(teacher), before)
    assert not smoother.is_random


def test_expected_momentum_closed_form() -> None:
    assert build_smoother("sts", p=0.3, m=0.9, seed=0).expected_momentum == pytest.approx(0.3 + 0.7 * 0.9)
    assert build_smoother("tma", p=0.3, m=0.9).expected_momentum == pytest.approx(0.9)
    assert build_smoother("se", p=0.3, seed=0).expected_momentum == pytest.approx(0.3)
    assert build_smoother("none").expected_momentum == 0.0


# ------------------------------------------------------------------------------------------------------------
# Hand-worked masks
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_hand_worked_two_layer_sts(granularity: str) -> None:
    """Teacher 0, student 4, m = 1/2: a replaced unit becomes exactly 2 then 3; a preserved one stays."""
    teacher, student = make_pair()
    fill(teacher, 0.0)
    fill(student, 4.0)
    p, seed = 0.5, 1234
    counts = units(teacher, granularity)
    n = sum(counts)
    assert n == {"layer": 7, "channel": 4 + 4 + 4 + 4 + 2 + 2 + 1,
                 "neuron": 12 + 4 + 4 + 4 + 8 + 2 + 1}[granularity]
    g = torch.Generator().manual_seed(seed)
    masks = [draw_replace_mask(n, p, g) for _ in range(2)]
    for mask, expected_mask in zip(masks, (expected_replace_mask(n, p, seed), None), strict=True):
        if expected_mask is not None:
            assert torch.equal(mask, expected_mask)
    assert masks[0].any() and not masks[0].all()                    # the seed gives a real mixture

    smoother = build_smoother("sts", p=p, m=0.5, granularity=granularity, seed=seed)
    expected = [torch.zeros_like(t) for t in teacher.parameters()]
    for mask in masks:
        smoother.update(teacher, student)
        offset = 0
        for i, t in enumerate(teacher.parameters()):
            shape = unit_shape(t.shape, granularity)
            unit_mask = mask[offset:offset + math.prod(shape)].view(shape).expand(t.shape)
            offset += math.prod(shape)
            expected[i] = torch.where(unit_mask, 0.5 * expected[i] + 0.5 * 4.0, expected[i])
        assert_same(params(teacher), expected)
    values = torch.cat([t.detach().flatten() for t in teacher.parameters()])
    assert set(values.tolist()) <= {0.0, 2.0, 3.0}


def test_hand_worked_layer_mask_picks_whole_tensors() -> None:
    """Layer-wise SE: unit i is the i-th parameter tensor (fc1.weight, fc1.bias, bn.weight, bn.bias, ...)."""
    teacher, student = make_pair()
    fill(teacher, 0.0)
    fill(student, 1.0)
    mask = expected_replace_mask(7, 0.5, seed=7)
    build_smoother("se", p=0.5, seed=7).update(teacher, student)
    for replaced, t in zip(mask.tolist(), teacher.parameters(), strict=True):
        assert torch.equal(t, torch.full_like(t, float(replaced)))


def test_channel_units_are_output_rows() -> None:
    teacher, student = make_pair()
    fill(teacher, 0.0)
    fill(student, 1.0)
    build_smoother("se", p=0.5, granularity="channel", seed=11).update(teacher, student)
    w = teacher.fc1.weight.detach()
    assert torch.equal(w, w[:, :1].expand_as(w))                     # every row all-0 or all-1


@pytest.mark.parametrize("granularity", ["layer", "channel", "neuron"])
def test_broadcast_unit_weights_equal_full_shape_weights(granularity: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU's per-unit weights broadcast over each tensor and the per-element weights accelerators take
    (one multi-tensor kernel) give the same teacher, bit for bit (raw bytes: a sign of zero counts)."""
    teacher_a, student = make_pair()
    teacher_b = copy.deepcopy(teacher_a)
    a = build_smoother("sts", p=0.5, m=0.9, granularity=granularity, seed=5)
    b = build_smoother("sts", p=0.5, m=0.9, granularity=granularity, seed=5)
    for step in range(5):
        nudge(student, step)
        a.update(teacher_a, student)
        monkeypatch.setattr(kernels, "_BROADCAST_WEIGHT_DEVICES", ())
        b.update(teacher_b, student)
        monkeypatch.undo()
    for x, y in zip(params(teacher_a), params(teacher_b), strict=True):
        assert torch.equal(x.reshape(-1).view(torch.int32), y.reshape(-1).view(torch.int32))
    assert not all(torch.equal(x, y) for x, y in zip(params(teacher_a), params(student), strict=True))


def test_a_layer_wise_update_reads_nothing_back_and_keeps_the_preserved_tensors_bit_for_bit() -> None:
    """No host read of the mask on the CPU either (the lerp runs on every tensor with weights in {0, w}), and
    a preserved tensor keeps its exact bytes, a replaced one gets the lerp's."""
    from ssl_bench.host_sync import no_host_sync

    teacher, student = make_pair()
    before = params(teacher)
    smoother = build_smoother("sts", p=0.5, m=0.9, seed=7)
    smoother.update(teacher, student)                    # builds the plan (allocations from Python sizes)
    mask = expected_replace_mask(7, 0.5, seed=7)
    for replaced, t0, t, s in zip(mask.tolist(), before, teacher.parameters(), student.parameters(), strict=True):
        expected = torch.lerp(t0, s.detach(), 0.1) if replaced else t0
        assert torch.equal(t.detach().view(torch.int32), expected.view(torch.int32))
    with no_host_sync():
        for step in range(1, 4):
            nudge(student, step)
            smoother.update(teacher, student)


def test_mixed_dtypes_units_grouped_by_dtype() -> None:
    """Parameters of several dtypes: units are numbered per dtype group (float32 first here), each exact."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.zeros(3, dtype=torch.float64))
            self.b = nn.Parameter(torch.zeros(2, 2))
            self.c = nn.Parameter(torch.zeros(4, dtype=torch.float64))

    teacher, student = Mixed(), Mixed()
    fill(student, 1.0)
    build_smoother("se", p=0.5, granularity="neuron", seed=2).update(teacher, student)
    mask = expected_replace_mask(3 + 4 + 4, 0.5, seed=2)     # float64 group (a, c) first: it appears first
    assert torch.equal(teacher.a, mask[:3].double())
    assert torch.equal(teacher.c, mask[3:7].double())
    assert torch.equal(teacher.b, mask[7:].float().view(2, 2))


# ------------------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------------------


class Many(nn.Module):
    """64 small tensors of 1 to 5 rows (layer-wise statistics need many tensors per update)."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors = nn.ParameterList([nn.Parameter(torch.zeros(i % 5 + 1, 3)) for i in range(64)])


def set_all(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        tensors = list(module.parameters())
        torch._foreach_zero_(tensors)
        torch._foreach_add_(tensors, value)


@pytest.mark.parametrize("p", [0.3, 0.75])                        # 32 and 8 random bits per unit
@pytest.mark.parametrize("granularity,steps", [("layer", 250), ("channel", 80), ("neuron", 30)])
def test_replaced_fraction_is_one_minus_p(granularity: str, steps: int, p: float) -> None:
    teacher, student = Many(), Many()
    set_all(student, 1.0)
    smoother = build_smoother("se", p=p, granularity=granularity, seed=42)
    counts = units(teacher, granularity)
    replaced = 0
    for _ in range(steps):
        set_all(teacher, 0.0)
        smoother.update(teacher, student)
        rows = [t.detach().reshape(n, -1) for t, n in zip(teacher.parameters(), counts, strict=True)]
        lowest = torch.cat([r.amin(dim=1) for r in rows])             # one row per unit: units lead (dim 0)
        highest = torch.cat([r.amax(dim=1) for r in rows])
        assert torch.equal(lowest, highest)                            # all replaced or all preserved
        replaced += int(lowest.sum())
    trials = steps * sum(counts)
    sigma = math.sqrt(p * (1 - p) / trials)
    assert abs(replaced / trials - (1 - p)) < 5 * sigma, (replaced / trials, 1 - p, sigma)


@pytest.mark.parametrize("granularity,draws", [("layer", 300), ("channel", 100), ("neuron", 30)])
def test_expected_sts_update_is_tma_with_momentum_p_plus_1mp_m(granularity: str, draws: int) -> None:
    """E[theta^T'] = (p + (1-p) m) theta^T + (1-p)(1-m) theta^S, averaged over independent masks."""
    p, m, t0, s0 = 0.6, 0.8, 1.0, 3.0
    teacher, student = Many(), Many()
    set_all(student, s0)
    smoother = build_smoother("sts", p=p, m=m, granularity=granularity, seed=9)
    sizes = torch.tensor([float(t.numel() // n) for t, n in
                          zip(teacher.parameters(), units(teacher, granularity), strict=True)
                          for _ in range(n)])                   # elements per unit, in unit order
    total = 0.0
    for _ in range(draws):
        set_all(teacher, t0)
        smoother.update(teacher, student)
        total += float(torch.cat([t.detach().flatten() for t in teacher.parameters()]).sum())
    mean = total / (draws * float(sizes.sum()))
    m_eff = smoother.expected_momentum
    expected = m_eff * t0 + (1 - m_eff) * s0
    # each unit's value is t0 or m t0 + (1-m) s0: variance p(1-p)((1-m)(s0-t0))^2, weighted by unit size
    sd = (1 - m) * (s0 - t0) * math.sqrt(p * (1 - p) * float((sizes**2).sum()) / draws) / float(sizes.sum())
    assert abs(mean - expected) < 5 * sd, (mean, expected, sd)


# ------------------------------------------------------------------------------------------------------------
# Reproducibility and checkpoints
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("buffers", BUFFER_POLICIES)
def test_same_seed_same_teacher_bit_for_bit(strategy: str, granularity: str, buffers: str) -> None:
    runs = []
    for _ in range(2):
        teacher, student = make_pair()
        smoother = build_smoother(strategy, p=0.5, m=0.9, granularity=granularity, buffers=buffers,
                                  generator=torch.Generator().manual_seed(123))
        for step in range(3):
            nudge(student, step)
            smoother.update(teacher, student)
        runs.append(teacher.state_dict())
    for a, b in zip(runs[0].values(), runs[1].values(), strict=True):
        assert torch.equal(a, b) and torch.isfinite(a.float()).all()


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("via_seed", [False, True])
def test_resume_from_state_dict_continues_identically(granularity: str, via_seed: bool) -> None:
    def run(smoother: Smoother, teacher: nn.Module, student: nn.Module, steps: range) -> None:
        for step in steps:
            nudge(student, step)
            smoother.update(teacher, student)

    teacher, student = make_pair()
    make = (lambda s: build_smoother("sts", p=0.5, m=0.9, granularity=granularity, seed=s)) if via_seed else (
        lambda s: build_smoother("sts", p=0.5, m=0.9, granularity=granularity,
                                 generator=torch.Generator().manual_seed(s)))
    smoother = make(77)
    run(smoother, teacher, student, range(3))
    saved = copy.deepcopy(smoother.state_dict())
    teacher_at_3, student_at_3 = copy.deepcopy(teacher), copy.deepcopy(student)
    run(smoother, teacher, student, range(3, 8))                   # the uninterrupted run

    resumed = make(999)                                            # a different seed: the state must win
    resumed.load_state_dict(saved)
    assert resumed.num_updates == 3
    run(resumed, teacher_at_3, student_at_3, range(3, 8))
    assert_same(params(teacher_at_3), params(teacher))



def test_from_state_dict_rebuilds_the_same_smoother() -> None:
    teacher_a, student = make_pair()
    smoother = build_smoother("sts", p=0.5, m=0.9, granularity="channel", seed=4)
    smoother.update(teacher_a, student)
    teacher_b = copy.deepcopy(teacher_a)
    rebuilt = Smoother.from_state_dict(smoother.state_dict())
    assert rebuilt.config() == smoother.config()
    for step in range(4):
        nudge(student, step)
        smoother.update(teacher_a, student)
        rebuilt.update(teacher_b, student)
    assert_same(params(teacher_a), params(teacher_b))


def test_state_dict_before_first_update_round_trips() -> None:
    """A state_dict taken before any update carries the seeded generator: the copy draws the same masks."""
    teacher_a, student = make_pair()
    teacher_b = copy.deepcopy(teacher_a)
    a = build_smoother("se", p=0.5, granularity="neuron", seed=31)
    b = build_smoother("se", p=0.5, granularity="neuron", seed=0)
    b.load_state_dict(a.state_dict())
    a.update(teacher_a, student)
    b.update(teacher_b, student)
    assert_same(params(teacher_a), params(teacher_b))


# ------------------------------------------------------------------------------------------------------------
# Buffers
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["tma", "se", "sts"])
def test_buffers_copy_policy(strategy: str) -> None:
    teacher, student = make_pair()
    smoother = build_smoother(strategy, p=1.0, m=0.75, buffers="copy", seed=0)     # p=1: parameters stay
    smoother.update(teacher, student)
    assert torch.equal(teacher.bn.running_mean, student.bn.running_mean)
    assert torch.equal(teacher.bn.running_var, student.bn.running_var)
    assert teacher.bn.num_batches_tracked.dtype == torch.int64
    assert teacher.bn.num_batches_tracked.item() == 7


@pytest.mark.parametrize("strategy", ["tma", "sts"])
def test_buffers_average_policy_and_integer_buffers_copied(strategy: str) -> None:
    m = 0.75
    teacher, student = make_pair()
    mean_t, var_t = teacher.bn.running_mean.clone(), teacher.bn.running_var.clone()
    assert teacher.bn.num_batches_tracked.item() == 3
    build_smoother(strategy, p=0.5, m=m, buffers="average", seed=0).update(teacher, student)
    assert torch.equal(teacher.bn.running_mean, mean_t.lerp(student.bn.running_mean, 1 - m))
    assert torch.equal(teacher.bn.running_var, var_t.lerp(student.bn.running_var, 1 - m))
    # 0.75 * 3 + 0.25 * 7 = 4: an averaged counter would read 4; the counter is copied
    assert teacher.bn.num_batches_tracked.dtype == torch.int64
    assert teacher.bn.num_batches_tracked.item() == 7


def test_buffers_average_with_se_is_a_copy() -> None:
    """SE has no temporal momentum (m = 0 in Eq. 3), so averaging buffers with it copies them."""
    teacher, student = make_pair()
    build_smoother("se", p=0.5, m=0.9, buffers="average", seed=0).update(teacher, student)
    assert torch.equal(teacher.bn.running_mean, student.bn.running_mean)


def test_copy_student_to_teacher_is_exact() -> None:
    teacher, student = make_pair()
    copy_student_to_teacher(teacher, student)
    for a, b in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------------------
# The per-(teacher, student) cache
# ------------------------------------------------------------------------------------------------------------


def test_replaced_parameter_is_picked_up_after_reset() -> None:
    teacher, student = make_pair()
    smoother = build_smoother("none")
    smoother.update(teacher, student)
    teacher.fc1.weight = nn.Parameter(torch.zeros(4, 3))               # replaced after the first update
    teacher.fc2 = nn.Linear(4, 2)                                       # a replaced submodule
    smoother.reset()
    smoother.update(teacher, student)
    assert torch.equal(teacher.fc1.weight, student.fc1.weight)
    assert torch.equal(teacher.fc2.weight, student.fc2.weight)


def test_added_parameter_is_a_clear_error() -> None:
    teacher, student = make_pair()
    smoother = build_smoother("tma")
    smoother.update(teacher, student)
    teacher.extra = nn.Parameter(torch.zeros(1))
    smoother.reset()
    with pytest.raises(ValueError, match="'extra'"):
        smoother.update(teacher, student)


def test_new_pair_gets_its_own_plan() -> None:
    teacher_a, student_a = make_pair(0)
    teacher_b, student_b = make_pair(1)
    smoother = build_smoother("none")
    smoother.update(teacher_a, student_a)
    smoother.update(teacher_b, student_b)
    assert torch.equal(teacher_b.fc1.weight, student_b.fc1.weight)


def test_dtype_change_in_place_is_picked_up() -> None:
    """``.double()`` keeps the Parameter objects but replaces their data: the cached weights must follow."""
    teacher, student = make_pair()
    smoother = build_smoother("sts", p=0.5, m=0.5, granularity="channel", seed=0)
    smoother.update(teacher, student)
    teacher.double()
    student.double()
    reference = Smoother.from_state_dict(smoother.state_dict())    # same masks to come, no cached plan
    expected = copy.deepcopy(teacher)
    reference.update(expected, student)
    smoother.update(teacher, student)
    assert teacher.fc1.weight.dtype == torch.float64
    assert_same(params(teacher), params(expected))


def test_plan_is_rebuilt_for_a_new_pair_a_dtype_change_or_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []
    build = kernels.build_plan
    monkeypatch.setattr(kernels, "build_plan", lambda *a: builds.append(a) or build(*a))
    teacher, student = make_pair()
    smoother = build_smoother("se", p=0.5, seed=0)
    for _ in range(3):
        smoother.update(teacher, student)
    assert len(builds) == 1
    other_teacher = copy.deepcopy(teacher)
    smoother.update(other_teacher, student)
    assert len(builds) == 2
    smoother.reset()
    smoother.update(other_teacher, student)
    assert len(builds) == 3
    other_teacher.double()
    student.double()
    smoother.update(other_teacher, student)
    smoother.update(other_teacher, student)
    assert len(builds) == 4


def test_no_process_wide_hooks() -> None:
    """Nothing of this module sits in torch's global module hooks (the smoother's cache is its own)."""
    from torch.nn.modules import module as torch_module

    teacher, student = make_pair()
    build_smoother("sts", p=0.5, seed=0).update(teacher, student)
    copy_student_to_teacher(teacher, student)
    hook_dicts = [value for name, value in vars(torch_module).items()
                  if name.startswith("_global_") and name.endswith("_hooks")]
    assert hook_dicts
    hooks = [hook for hooks in hook_dicts for hook in hooks.values()]
    assert not [hook for hook in hooks if getattr(hook, "__module__", "").startswith(smoothing.__name__)]


# ------------------------------------------------------------------------------------------------------------
# Several teachers from one student
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first,second", [
    (dict(strategy="sts", granularity="channel", seed=1), dict(strategy="se", granularity="neuron", seed=2)),
    (dict(strategy="sts", seed=1), dict(strategy="sts", seed=1)),           # same settings, own generators
    (dict(strategy="tma", buffers="average"), dict(strategy="se", seed=3)),
])
def test_two_smoothers_from_one_student_equal_each_alone(first: dict, second: dict) -> None:
    """Multi-teacher training: two smoothers updating their own teachers from one student in the same step
    give exactly what each gives alone (no state shared between Smoother instances)."""

    def train(configs: list[dict]) -> list[list[torch.Tensor]]:
        _, student = make_pair()
        teachers = [make_pair(seed=10)[0] for _ in configs]
        smoothers = [build_smoother(**(dict(p=0.5, m=0.9) | c)) for c in configs]
        for step in range(4):
            nudge(student, step)
            for smoother, teacher in zip(smoothers, teachers, strict=True):
                smoother.update(teacher, student)
        return [list(t.state_dict().values()) for t in teachers]

    together = train([first, second])
    alone = train([first]) + train([second])
    for a, b in zip(together, alone, strict=True):
        assert_same(a, b)
    differ = not all(torch.equal(x, y) for x, y in zip(together[0], together[1], strict=True))
    assert differ or first == second                                # the test compares different teachers


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p", "m"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), "0.5", True])
def test_bad_p_or_m_names_the_value(name: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        build_smoother("sts", seed=0, **{name: value})
    message = str(info.value)
    assert f"{name}={value!r}" in message or f"{name}={float(value)!r}" in message
    assert "[0, 1]" in message


@pytest.mark.parametrize("kwargs,needle", [
    ({"strategy": "ema"}, "'ema'"),
    ({"strategy": "sts", "granularity": "kernel"}, "'kernel'"),
    ({"strategy": "sts", "buffers": "ignore"}, "'ignore'"),
])
def test_unknown_names_list_the_choices(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        build_smoother(seed=0, **kwargs)
    assert needle in str(info.value) and "choose one of" in str(info.value)


def test_generator_errors() -> None:
    with pytest.raises(ValueError, match="seed=5"):
        build_smoother("sts", generator=torch.Generator(), seed=5)
    with pytest.raises(ValueError, match="seed="):
        build_smoother("se", p=0.5)                                    # random masks need a seed
    with pytest.raises(ValueError, match="not a torch.Generator"):
        build_smoother("sts", generator=123)
    with pytest.raises(ValueError, match="seed='1'"):
        build_smoother("sts", seed="1")
    build_smoother("tma")                                              # deterministic: no seed needed
    build_smoother("se", p=1.0)


def test_mismatched_names_are_named() -> None:
    teacher, student = make_pair()
    student.fc3 = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'fc3.weight'"):
        build_smoother("tma").update(teacher, student)


def test_mismatched_shapes_are_named() -> None:
    teacher, student = make_pair()
    student.fc2 = nn.Linear(4, 5)
    with pytest.raises(ValueError) as info:
        build_smoother("tma").update(teacher, student)
    message = str(info.value)
    assert "'fc2.weight'" in message and "(2, 4)" in message and "(5, 4)" in message


def test_mismatched_buffers_are_named() -> None:
    teacher, student = make_pair()
    student.bn = nn.BatchNorm1d(4, track_running_stats=False)
    with pytest.raises(ValueError, match="buffer 'bn.running_mean'"):
        build_smoother("tma").update(teacher, student)


def test_teacher_must_not_be_the_student() -> None:
    _, student = make_pair()
    with pytest.raises(ValueError, match="same module object"):
        build_smoother("tma").update(student, student)


def test_load_state_dict_rejects_other_hyper_parameters() -> None:
    saved = build_smoother("sts", p=0.7, m=0.9, granularity="channel", seed=0).state_dict()
    with pytest.raises(ValueError) as info:
        build_smoother("sts", p=0.5, m=0.9, granularity="layer", seed=0).load_state_dict(saved)
    message = str(info.value)
    assert "p: saved 0.7, this smoother 0.5" in message and "granularity: saved 'channel'" in message
    with pytest.raises(ValueError, match="strategy: saved 'sts'"):
        build_smoother("tma", m=0.9).load_state_dict(saved)
    with pytest.raises(ValueError, match="missing keys"):
        build_smoother("tma").load_state_dict({"strategy": "tma"})


# ------------------------------------------------------------------------------------------------------------
# Accelerators (skipped without CUDA)
# ------------------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_cuda_update_matches_masks_drawn_on_the_device(granularity: str) -> None:
    teacher, student = (module.cuda() for module in make_pair())
    fill(teacher, 0.0)
    fill(student, 1.0)
    build_smoother("se", p=0.5, granularity=granularity,
                   generator=torch.Generator("cuda").manual_seed(8)).update(teacher, student)
    n = sum(units(teacher, granularity))
    mask = draw_replace_mask(n, 0.5, torch.Generator("cuda").manual_seed(8))
    counts = units(teacher, granularity)
    values = torch.cat([t.detach().reshape(n_units, -1)[:, 0]            # one value per unit, units lead
                        for t, n_units in zip(teacher.parameters(), counts, strict=True)])
    assert torch.equal(values.bool(), mask)


@cuda
def test_cpu_generator_with_cuda_parameters_is_a_clear_error() -> None:
    teacher, student = (module.cuda() for module in make_pair())
    with pytest.raises(ValueError, match="generator is on cpu"):
        build_smoother("sts", generator=torch.Generator()).update(teacher, student)
