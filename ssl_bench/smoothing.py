"""Teacher smoothing: how the teacher follows the student after every optimizer step.

Paper: Huang, Sun, Wang, Yao, Zhang, "Spatial Ensemble: a Novel Model Smoothing Mechanism for Student-Teacher
Framework", NeurIPS 2021, Section 3.  Reference code: github.com/tengteng95/Spatial_Ensemble.

The teacher Theta^T and the student Theta^S are split into n *units* theta_i (a layer, a channel or a neuron,
see :data:`GRANULARITIES`).  One update, with P_i ~ Ber(p) independent per unit (P_i = 1: *preserve* unit i):

* ``"none"``  theta_i^T <- theta_i^S                                         (no smoothing)
* ``"tma"``   theta_i^T <- m theta_i^T + (1 - m) theta_i^S                   (Eq. 4, temporal moving average)
* ``"se"``    theta_i^T <- P_i theta_i^T + (1 - P_i) theta_i^S               (Eq. 1/2, Algorithm 1)
* ``"sts"``   theta_i^T <- P_i theta_i^T + (1 - P_i) [m theta_i^T + (1 - m) theta_i^S]  (Eq. 3, Algorithm 2)

p is the paper's *preserving probability* and m the TMA momentum.  STS contains the others: m = 0 gives SE,
p = 0 gives TMA, p = 0 and m = 0 give "none".  In expectation STS is a TMA with momentum p + (1 - p) m
(:attr:`Smoother.expected_momentum`).

**p = 0 vs p = 1.**  The sentence under Eq. 3 says STS becomes TMA "when p = 1, which results in P_i = 0".
That contradicts Eq. 1 (P_i ~ Ber(p), P_i = 1 preserves) and Algorithm 2 (``if rand() < p: continue``): with
p = 1 every unit is preserved and the teacher never moves.  We follow the equations and the pseudo-code:
**p = 0 is TMA, p = 1 freezes the parameters.**  (Algorithms 1-2 also write ``t = s`` / ``t = m*t + ...``,
which in Python only rebinds a loop variable; the intended in-place update is what is implemented here.)

**Buffers** (BatchNorm running statistics, ``num_batches_tracked``) are not units of Eqs. 1-3 (Theta is the
parameters; the official code, ``models/m2_teacher.py``, gates ``parameters()`` only and its BYOL teacher
normalises with batch statistics).  In ssl-bench the teacher is evaluated in eval mode, so its running
statistics matter and the policy is explicit.  ``"copy"`` (default) copies every buffer from the student after
each update, as the PyTorch FixMatch EMA (kekmodel/FixMatch-pytorch ``models/ema.py``) that FixMatch+STS
builds on does: the statistics are those of the most recent activations, cost one fused copy, and never pass
the random gate (a preserved layer with stale statistics would mis-normalise).  ``"average"`` moves
floating-point buffers like a TMA unit with the strategy's momentum (m for ``tma``/``sts``; 0, i.e. a copy,
for ``none``/``se``), as timm's ``ModelEmaV3`` does.  Integer buffers (``num_batches_tracked``) are always
copied: an average of a counter is meaningless, and integer lerp is not defined.

Which settings each strategy reads is :data:`STRATEGY_PARAMETERS`, their defaults :data:`PARAMETER_DEFAULTS`
(with their sources); :func:`relevant_settings` keeps only the ones a strategy reads, to name runs and rows.

Randomness: every draw comes from one dedicated :class:`torch.Generator` on the parameters' device, passed in
and seeded from the run's seed (the official code uses NumPy's global generator), so every data-parallel rank
draws the same masks and ``state_dict()`` / ``load_state_dict()`` resume the exact mask sequence.
P_i ~ Ber(p) is drawn as integer bits compared with a threshold (``_Gate``): exact for dyadic p such as the
default 0.5, and cheaper than ``torch.rand``.  The teacher should start as an exact copy of the student
(:func:`copy_student_to_teacher`, or ``copy.deepcopy(student)``): the official code lets the very first update
go through the random gate, which leaves most teacher tensors at their random initialisation.

A smoother keeps no state outside itself (no process-wide hooks or caches), so several smoothers may update
their own teachers from one student in the same step (multi-teacher training).  It caches the tensor lists of
its (teacher, student) pair: call :meth:`Smoother.reset` after replacing, adding or removing parameters,
buffers or submodules of either.

Example::

    teacher = copy.deepcopy(student)
    smoother = build_smoother("sts", p=0.5, m=0.999, granularity="layer",
                              generator=torch.Generator(device).manual_seed(run_seed))
    for batch in loader:
        ...; optimizer.step()
        smoother.update(teacher, student)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "BUFFER_POLICIES", "DEFAULT_M", "DEFAULT_P", "GRANULARITIES", "PARAMETER_DEFAULTS", "STRATEGIES",
    "STRATEGY_PARAMETERS", "Smoother", "build_smoother", "copy_student_to_teacher", "draw_replace_mask",
    "relevant_settings", "unit_shape",
]

# The settings each strategy reads (Eq. 1-4; see the module docstring).  ``buffers`` is read by the strategies
# with a temporal momentum only: "average" lerps buffers with weight 1 - m, and without m (none, se: m = 0 in
# Eq. 3) that is a copy, the same as "copy".  A setting a strategy does not read changes nothing in its
# update.
STRATEGY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "none": (),
    "tma": ("m", "buffers"),
    "se": ("p", "granularity"),
    "sts": ("p", "m", "granularity", "buffers"),
}
PARAMETER_DEFAULTS: dict[str, Any] = {
    # Paper Sec. 4.1: "The masking probability p is set to 0.7/0.5/0.5 for BYOL/MoCo/FixMatch".
    "p": 0.5,
    # google-research/fixmatch, fixmatch.py, FixMatch.model(..., ema=0.999) (the `ema` flag of its scripts).
    "m": 0.999,
    # Paper Sec. 4.3: "we use LW [layer-wise] as default".
    "granularity": "layer",
    # google-research/fixmatch, libml/utils.py: the EMA covers model_vars() = TRAINABLE_VARIABLES only, and
    # getter_ema falls back to the live variable, so the EMA model normalises with the student's BN
    # statistics.
    "buffers": "copy",
}
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_PARAMETERS)
GRANULARITIES: tuple[str, ...] = ("layer", "channel", "neuron")
BUFFER_POLICIES: tuple[str, ...] = ("copy", "average")
# Single names for the defaults, kept for importers.
DEFAULT_P: float = PARAMETER_DEFAULTS["p"]
DEFAULT_M: float = PARAMETER_DEFAULTS["m"]
DEFAULT_GRANULARITY: str = PARAMETER_DEFAULTS["granularity"]
DEFAULT_BUFFERS: str = PARAMETER_DEFAULTS["buffers"]

_STATE_VERSION = 1
# Random bits per unit, fewest first: p = 0.5 needs 8 (a quarter of torch.rand's cost), p = 0.7 needs 32.
_BIT_WIDTHS = {8: torch.int8, 16: torch.int16, 32: torch.int32}
# Device types on which layer-wise updates read the per-tensor flags on the host and touch only the picked
# tensors.  Elsewhere (CUDA, ...) that read would be a host sync, so the per-unit weight path is used: same
# masks, same values.
_HOST_PICK_DEVICES: tuple[str, ...] = ("cpu",)


def relevant_settings(strategy: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``strategy`` reads (:data:`STRATEGY_PARAMETERS`, in that order), taken from ``settings``.

    Other keys are dropped; a setting the strategy reads but ``settings`` lacks is its
    :data:`PARAMETER_DEFAULTS` value (what the strategy then uses).  For naming runs and leaderboard rows:
    ``relevant_settings("tma", {"p": 0.7, "m": 0.99})`` is ``{"m": 0.99, "buffers": "copy"}``.
    """
    _check_choice("strategy", strategy, STRATEGIES)
    return {name: settings.get(name, PARAMETER_DEFAULTS[name]) for name in STRATEGY_PARAMETERS[strategy]}


# ------------------------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------------------------

def unit_shape(shape: torch.Size | tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """Shape of the per-unit mask of a tensor of ``shape``; it broadcasts against the tensor.

    ``layer``: one unit per tensor (all ones).  ``channel``: one unit per entry of the first dimension (output
    channels of conv / linear weights; a 1-D tensor's entries; a 0-d tensor is one unit).  ``neuron``: one
    unit per scalar.  The number of units is the product of the returned shape.
    """
    _check_choice("granularity", granularity, GRANULARITIES)
    shape = tuple(shape)
    if granularity == "layer":
        return (1,) * len(shape)
    if granularity == "channel":
        return (shape[0],) + (1,) * (len(shape) - 1) if shape else ()
    return shape


@dataclass(frozen=True)
class _Gate:
    """The Bernoulli(p) gate as integer arithmetic on random bits.

    With b the fewest of 8, 16, 32 bits for which p * 2**b is an integer (32 if none is), K = round(p * 2**b).
    A unit's b random bits, read as a signed integer x (uniform on [-2**(b-1), 2**(b-1))), give
    u = x + 2**(b-1), uniform on [0, 2**b); the unit is *preserved* iff u < K.  So P(preserve) = K / 2**b:
    exactly p whenever p * 2**32 is an integer (0.5, 0.75, 0.3125, ...), else p rounded to 2**-32 (torch.rand
    itself is on a 2**-24 grid).  Fewer bits means fewer generator calls: drawing randomness dominates
    neuron-wise updates on CPU.
    """

    bits: int
    k: int

    @staticmethod
    def for_p(p: float) -> _Gate:
        bits = next((b for b in _BIT_WIDTHS if (p * 2.0**b).is_integer()), 32)
        return _Gate(bits, round(p * 2.0**bits))

    @property
    def never_preserves(self) -> bool:
        return self.k == 0

    @property
    def always_preserves(self) -> bool:
        return self.k == 2**self.bits

    @property
    def threshold(self) -> int:
        """Replaced iff u >= K, i.e. x >= K - 2**(b-1)."""
        return self.k - 2 ** (self.bits - 1)

    def draw(self, num_units: int, generator: torch.Generator, out64: Tensor | None = None) -> Tensor:
        """``num_units`` signed b-bit integers from ceil(n b / 64) full-range int64 draws of ``generator``."""
        if out64 is None:
            out64 = torch.empty(self.words(num_units), dtype=torch.int64, device=generator.device)
        out64.random_(-(2**63), None, generator=generator)      # all 64 bits uniform
        return out64.view(_BIT_WIDTHS[self.bits])[:num_units]

    def words(self, num_units: int) -> int:
        return -(-num_units * self.bits // 64)


def draw_replace_mask(num_units: int, p: float, generator: torch.Generator) -> Tensor:
    """The Bernoulli draw of :meth:`Smoother.update`: a bool tensor, True where unit i is *replaced*.

    Each unit is preserved (P_i = 1) with probability p (exactly when p * 2**32 is an integer, else p rounded
    to 2**-32; see ``_Gate``); p = 0 replaces and p = 1 preserves every unit without drawing.  It advances
    ``generator`` exactly as one update of a smoother does, so a test can predict an update's masks from a
    generator with the same state.
    """
    gate = _Gate.for_p(_check_unit_interval("p", p))
    if gate.never_preserves or gate.always_preserves:
        return torch.full((num_units,), gate.never_preserves, dtype=torch.bool, device=generator.device)
    return gate.draw(num_units, generator) >= gate.threshold


def copy_student_to_teacher(teacher: nn.Module, student: nn.Module) -> None:
    """Make ``teacher`` an exact copy of ``student`` (parameters and buffers, in place, no autograd).

    Use it (or ``teacher = copy.deepcopy(student)``) before the first :meth:`Smoother.update`.  Raises
    ValueError if the two modules differ in parameter / buffer names, shapes, dtypes or devices.
    """
    plan = _Plan.build(teacher, student, "layer")
    with torch.no_grad():
        torch._foreach_copy_(plan.t_params + plan.t_buffers, plan.s_params + plan.s_buffers)


# ------------------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------------------

def _check_unit_interval(name: str, value: Any) -> float:
    meaning = {"p": "the preserving probability of Eq. 1-3", "m": "the TMA momentum of Eq. 3-4"}[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} is not a number; {name} is {meaning} and must be a float in "
                         f"[0, 1]")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        hint = " (p = 0 is TMA, p = 1 never updates)" if name == "p" else " (e.g. m=0.999)"
        raise ValueError(f"{name}={value!r} is outside [0, 1]; {name} is {meaning}, pass a value in "
                         f"[0, 1]{hint}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(repr(c) for c in choices)}")
    return value


def _fmt_shape(t: Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def _match(kind: str, teacher: dict[str, Tensor], student: dict[str, Tensor]) -> None:
    """Raise ValueError naming the first name / shape / dtype / device that differs between the modules."""
    only_t = [n for n in teacher if n not in student]
    only_s = [n for n in student if n not in teacher]
    if only_t or only_s:
        parts = []
        if only_t:
            parts.append(f"teacher has {kind} {only_t[0]!r} ({len(only_t)} in all) that the student lacks")
        if only_s:
            parts.append(f"student has {kind} {only_s[0]!r} ({len(only_s)} in all) that the teacher lacks")
        raise ValueError("teacher and student do not have the same architecture: " + "; ".join(parts)
                         + ". Build the teacher with copy.deepcopy(student).")
    for name, t in teacher.items():
        s = student[name]
        for what, a, b in (("shape", _fmt_shape(t), _fmt_shape(s)), ("dtype", t.dtype, s.dtype),
                           ("device", t.device, s.device)):
            if a != b:
                raise ValueError(f"{kind} {name!r} has {what} {a} in the teacher but {b} in the student; "
                                 f"teacher and student must match exactly (build the teacher with "
                                 f"copy.deepcopy(student))")


# ------------------------------------------------------------------------------------------------------------
# The per-(teacher, student) plan: tensor lists, unit layout, scratch buffers
# ------------------------------------------------------------------------------------------------------------

@dataclass
class _Group:
    """Parameters of one dtype: their units are the slice [start, stop) of the flat unit index."""

    t: list[Tensor]
    s: list[Tensor]
    dtype: torch.dtype
    unit_shapes: list[tuple[int, ...]]      # per tensor, see unit_shape()
    start: int
    stop: int
    weights: Tensor | None = None           # flat per-unit lerp weights (the group's dtype), made when needed
    weight_views: list[Tensor] = field(default_factory=list)

    def lerp_weights(self) -> tuple[Tensor, list[Tensor]]:
        """The flat weight buffer and its per-tensor views (shaped to broadcast over each tensor)."""
        if self.weights is None:
            self.weights = torch.empty(self.stop - self.start, dtype=self.dtype, device=self.t[0].device)
            offset = 0
            for shape in self.unit_shapes:
                n = math.prod(shape)
                self.weight_views.append(self.weights[offset:offset + n].view(shape))
                offset += n
        return self.weights, self.weight_views


@dataclass
class _Plan:
    """One smoother's cache for one (teacher, student) pair: tensor lists, unit layout and scratch buffers."""

    teacher: nn.Module
    student: nn.Module
    t_params: list[Tensor]
    s_params: list[Tensor]
    t_buffers: list[Tensor]                 # all buffers, floating first
    s_buffers: list[Tensor]
    num_float_buffers: int
    granularity: str
    device: torch.device | None
    groups: list[_Group]
    num_units: int
    bits64: Tensor | None = None            # scratch: the random words of one draw
    mask: Tensor | None = None              # scratch: one bool per unit, True = replaced

    @staticmethod
    def build(teacher: nn.Module, student: nn.Module, granularity: str) -> _Plan:
        if teacher is student:
            raise ValueError("teacher and student are the same module object; the teacher must be a separate "
                             "copy (teacher = copy.deepcopy(student))")
        tp, sp = dict(teacher.named_parameters()), dict(student.named_parameters())
        tb, sb = dict(teacher.named_buffers()), dict(student.named_buffers())
        _match("parameter", tp, sp)
        _match("buffer", tb, sb)
        devices = {t.device for t in tp.values()}
        if len(devices) > 1:
            raise ValueError(f"the teacher's parameters are spread over devices {sorted(map(str, devices))}; "
                             f"the smoother needs them on one device (one generator draws all masks)")
        # Units are numbered in parameter order, parameters grouped by dtype (one group in the usual case).
        by_dtype: dict[torch.dtype, list[str]] = {}
        for name, t in tp.items():
            by_dtype.setdefault(t.dtype, []).append(name)
        groups, start = [], 0
        for names in by_dtype.values():
            shapes = [unit_shape(tp[n].shape, granularity) for n in names]
            stop = start + sum(math.prod(s) for s in shapes)
            groups.append(_Group([tp[n] for n in names], [sp[n] for n in names], tp[names[0]].dtype, shapes,
                                 start, stop))
            start = stop
        floating = [n for n, b in tb.items() if b.is_floating_point() or b.is_complex()]
        others = [n for n in tb if n not in set(floating)]
        return _Plan(
            teacher=teacher, student=student,
            t_params=[t for g in groups for t in g.t], s_params=[s for g in groups for s in g.s],
            t_buffers=[tb[n] for n in floating + others], s_buffers=[sb[n] for n in floating + others],
            num_float_buffers=len(floating), granularity=granularity,
            device=next(iter(devices)) if devices else None, groups=groups, num_units=start)

    def valid_for(self, teacher: nn.Module, student: nn.Module) -> bool:
        """True if built for these very modules, and their parameters kept their device and dtype."""
        # `.to(device)` / `.half()` keep the Parameter objects but replace their data (and replace the
        # buffers): the lists, the groups' dtypes and the scratch buffers' device must follow.  Every tensor
        # of a group moves with its first one, so an O(number of dtypes) test suffices.
        return (self.teacher is teacher and self.student is student
                and all(g.t[0].device == g.s[0].device == self.device
                        and g.t[0].dtype == g.s[0].dtype == g.dtype for g in self.groups))

    def replace_mask(self, gate: _Gate, generator: torch.Generator) -> Tensor:
        """One draw for all units into the scratch buffers: True where unit i is replaced."""
        if self.bits64 is None or self.bits64.numel() != gate.words(self.num_units):
            self.bits64 = torch.empty(gate.words(self.num_units), dtype=torch.int64, device=self.device)
            self.mask = torch.empty(self.num_units, dtype=torch.bool, device=self.device)
        # a bool output: comparing straight into a float buffer takes a slow, unvectorised path on CPU
        return torch.ge(gate.draw(self.num_units, generator, self.bits64), gate.threshold, out=self.mask)

# ------------------------------------------------------------------------------------------------------------
# The smoother
# ------------------------------------------------------------------------------------------------------------

class Smoother:
    """Updates a teacher from its student, in place, with one of :data:`STRATEGIES` (see the module doc).

    Build it with :func:`build_smoother`.  ``p`` and ``m`` are the paper's preserving probability and TMA
    momentum, ``granularity`` the unit of the draw and ``buffers`` the buffer policy; a strategy ignores the
    settings it does not read (:data:`STRATEGY_PARAMETERS`), so a caller may pass its configured values for
    every strategy.  Random draws come from ``generator`` (a :class:`torch.Generator` on the parameters'
    device), or with ``seed`` from a new CPU generator seeded with it.  Give every smoother its own generator:
    smoothers sharing one would interleave their draws, and each one's masks would depend on the others.
    """

    def __init__(self, strategy: str, *, p: float = DEFAULT_P, m: float = DEFAULT_M,
                 granularity: str = DEFAULT_GRANULARITY, buffers: str = DEFAULT_BUFFERS,
                 generator: torch.Generator | None = None, seed: int | None = None) -> None:
        self.strategy = _check_choice("strategy", strategy, STRATEGIES)
        self.p = _check_unit_interval("p", p)
        self.m = _check_unit_interval("m", m)
        self.granularity = _check_choice("granularity", granularity, GRANULARITIES)
        self.buffers = _check_choice("buffer policy", buffers, BUFFER_POLICIES)
        if generator is not None and seed is not None:
            raise ValueError(f"pass either generator= or seed= (got both, seed={seed!r}); the generator "
                             f"would be re-seeded silently otherwise")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator={generator!r} is not a torch.Generator; pass "
                             f"torch.Generator(device).manual_seed(run_seed)")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise ValueError(f"seed={seed!r} is not an int; pass the run's integer seed")
            generator = torch.Generator().manual_seed(int(seed))
        # Every strategy is Eq. 3 with the settings it does not read fixed: p = 0 (every unit replaced), m =
        # 0.
        reads = STRATEGY_PARAMETERS[self.strategy]
        self._p_eff = self.p if "p" in reads else 0.0
        self._m_eff = self.m if "m" in reads else 0.0
        self._gate = _Gate.for_p(self._p_eff)
        if self.is_random and generator is None:
            raise ValueError(f"strategy {self.strategy!r} with p={self.p} draws random masks; pass "
                             f"generator=torch.Generator(device).manual_seed(<run seed>) (or seed=<run seed> "
                             f"on CPU) so that runs are reproducible and every data-parallel rank draws the "
                             f"same masks")
        self._generator = generator
        self.num_updates = 0
        self._plan: _Plan | None = None

    # -- description -----------------------------------------------------------------------------------------

    @property
    def is_random(self) -> bool:
        """True if updates draw masks (``se`` / ``sts`` with 0 < p < 1, up to 2**-32)."""
        return not (self._gate.never_preserves or self._gate.always_preserves)

    @property
    def expected_momentum(self) -> float:
        """p + (1 - p) m: the momentum of the TMA that one update equals in expectation over the masks."""
        return self._p_eff + (1.0 - self._p_eff) * self._m_eff

    @property
    def generator(self) -> torch.Generator | None:
        return self._generator

    def config(self) -> dict[str, Any]:
        """The hyper-parameters, for run records: strategy, p, m, granularity, buffers."""
        return {"strategy": self.strategy, "p": self.p, "m": self.m, "granularity": self.granularity,
                "buffers": self.buffers}

    def __repr__(self) -> str:
        return "Smoother(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    # -- the update ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, teacher: nn.Module, student: nn.Module) -> None:
        """One smoothing step, in place on ``teacher`` (call it after every optimizer step).

        Parameters follow Eq. 3 with the strategy's (p, m): each unit is preserved with probability p, else
        ``theta^T <- m theta^T + (1 - m) theta^S`` (a ``lerp`` with weight 1 - m; weight 1, an exact copy, for
        SE).  Buffers follow the buffer policy (module docstring).

        The smoother caches the tensor lists of its last (teacher, student) pair, held by identity; a new
        pair, or parameters moved to another device or dtype (``.to()``, ``.half()``), rebuild them.  After
        module surgery between updates (registering, replacing or removing a parameter, buffer or submodule of
        either module, ``load_state_dict(assign=True)``), call :meth:`reset`.  Checking both module trees for
        such changes on every update was measured at 0.05 ms (warm caches) to 0.2 ms (cold, as after a
        training step) per WRN-28-2 pair on one CPU thread: up to a quarter of a fused EMA update
        (benchmarks/bench_smoothing.py).
        """
        plan = self._plan_for(teacher, student)
        w = 1.0 - self._m_eff                   # lerp weight of a replaced unit
        if self._gate.always_preserves or w == 0.0:     # p = 1, or m = 1: parameters stay
            pass
        elif self._gate.never_preserves:        # p = 0: every unit replaced -> TMA (Eq. 4), or a copy
            _lerp_or_copy(plan.t_params, plan.s_params, w)
        elif plan.num_units:
            self._gated_update(plan, w)
        self._update_buffers(plan)
        self.num_updates += 1

    def _gated_update(self, plan: _Plan, w: float) -> None:
        replaced = plan.replace_mask(self._gate, self._generator)     # P_i = 0
        if plan.granularity == "layer" and plan.device.type in _HOST_PICK_DEVICES:
            # One flag per tensor; update only the picked tensors with one fused call.
            flags = replaced.tolist()
            _lerp_or_copy(list(compress(plan.t_params, flags)), list(compress(plan.s_params, flags)), w)
            return
        # Per-unit weights W in {0, w}, broadcast over each unit by its view: theta^T <- lerp(theta^T,
        # theta^S, W).
        # lerp with weight 0 returns theta^T and with weight 1 returns theta^S exactly (for finite values).
        for g in plan.groups:
            weights, views = g.lerp_weights()
            weights.copy_(replaced[g.start:g.stop])
            if w != 1.0:
                weights.mul_(w)
            torch._foreach_lerp_(g.t, g.s, views)

    def _update_buffers(self, plan: _Plan) -> None:
        if not plan.t_buffers:
            return
        if self.buffers == "average" and self._m_eff != 0.0:
            nf = plan.num_float_buffers
            if nf and self._m_eff != 1.0:
                torch._foreach_lerp_(plan.t_buffers[:nf], plan.s_buffers[:nf], 1.0 - self._m_eff)
            if len(plan.t_buffers) > nf:        # integer buffers (num_batches_tracked): always copied
                torch._foreach_copy_(plan.t_buffers[nf:], plan.s_buffers[nf:])
        else:
            torch._foreach_copy_(plan.t_buffers, plan.s_buffers)

    def reset(self) -> None:
        """Forget the cached tensor lists: the next update reads both modules afresh (see :meth:`update`)."""
        self._plan = None

    def _plan_for(self, teacher: nn.Module, student: nn.Module) -> _Plan:
        plan = self._plan
        if plan is None or not plan.valid_for(teacher, student):
            # Strategies that read no granularity never draw: layer units are the cheapest plan for them.
            granularity = self.granularity if "granularity" in STRATEGY_PARAMETERS[self.strategy] else "layer"
            plan = _Plan.build(teacher, student, granularity)
            if self.is_random and plan.num_units:
                self._check_generator_device(plan.device)       # fail before the first draw, naming both
            self._plan = plan
        return plan

    def _check_generator_device(self, device: torch.device) -> None:
        g = self._generator
        if g.device.type != device.type or (device.index is not None
                                            and g.device.index not in (None, device.index)):
            raise ValueError(f"the smoother's generator is on {g.device} but the parameters are on {device}; "
                             f"create it there: torch.Generator({str(device)!r}).manual_seed(run_seed)")

    # -- checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, update count and generator state (``torch.Generator.get_state()``, or None)."""
        g = self._generator
        return {"version": _STATE_VERSION, **self.config(), "num_updates": self.num_updates,
                "generator_state": None if g is None else g.get_state(),
                "generator_device": None if g is None else str(g.device)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the update count and the generator state, after checking the hyper-parameters match.

        Raises ValueError naming every hyper-parameter that differs (only the strategy and the settings it
        reads, :data:`STRATEGY_PARAMETERS`, are compared).
        """
        required = ("strategy", "p", "m", "granularity", "buffers", "num_updates", "generator_state")
        missing = [k for k in required if k not in state_dict]
        if missing:
            raise ValueError(f"not a Smoother state_dict: missing keys {missing}; pass what "
                             f"Smoother.state_dict() returned")
        fields = ("strategy",) + STRATEGY_PARAMETERS[self.strategy]
        diffs = [f"{k}: saved {state_dict[k]!r}, this smoother {getattr(self, k)!r}"
                 for k in fields if state_dict[k] != getattr(self, k)]
        if diffs:
            raise ValueError("smoother state_dict does not match this smoother (" + "; ".join(diffs) + "); "
                             "build the smoother with the saved settings, e.g. "
                             "Smoother.from_state_dict(state_dict)")
        state = state_dict["generator_state"]
        # Nothing to restore without a saved state or a generator: such a smoother never draws (see
        # is_random).
        if state is not None and self._generator is not None:
            try:
                self._generator.set_state(state.detach().to("cpu", torch.uint8))
            except RuntimeError as e:
                raise ValueError(f"cannot restore the smoother's generator state on "
                                 f"{self._generator.device}: {e}. Resume on the same kind of device the "
                                 f"checkpoint was written on") from e
        self.num_updates = int(state_dict["num_updates"])

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *,
                        generator: torch.Generator | None = None) -> Smoother:
        """A smoother with the saved hyper-parameters and generator state.

        Without ``generator``, the saved state goes into a new generator on the device it was saved from.
        """
        if generator is None and state_dict.get("generator_state") is not None:
            generator = torch.Generator(state_dict.get("generator_device") or "cpu")
        smoother = cls(state_dict["strategy"], p=state_dict["p"], m=state_dict["m"],
                       granularity=state_dict["granularity"], buffers=state_dict["buffers"],
                       generator=generator)
        smoother.load_state_dict(state_dict)
        return smoother


def _lerp_or_copy(teacher: list[Tensor], student: list[Tensor], weight: float) -> None:
    """theta^T <- lerp(theta^T, theta^S, weight) over the lists, one fused call; weight 1 is an exact copy."""
    if not teacher:
        return
    if weight == 1.0:
        torch._foreach_copy_(teacher, student)
    else:
        torch._foreach_lerp_(teacher, student, weight)


def build_smoother(strategy: str, *, p: float = DEFAULT_P, m: float = DEFAULT_M,
                   granularity: str = DEFAULT_GRANULARITY, buffers: str = DEFAULT_BUFFERS,
                   generator: torch.Generator | None = None, seed: int | None = None) -> Smoother:
    """Build a :class:`Smoother` by name.

    Args:
        strategy: one of :data:`STRATEGIES`: ``"none"``, ``"tma"`` (Eq. 4), ``"se"`` (Eq. 1/2), ``"sts"``
            (Eq. 3).
        p: preserving probability in [0, 1] (P_i ~ Ber(p); p = 0 is TMA, p = 1 freezes the parameters).
        m: TMA momentum in [0, 1].
        granularity: unit of the Bernoulli draw, one of :data:`GRANULARITIES`.
        buffers: buffer policy, one of :data:`BUFFER_POLICIES` (integer buffers are always copied).
        generator: a :class:`torch.Generator` on the parameters' device, seeded from the run's seed.
        seed: instead of ``generator``, for parameters on the CPU: the seed of a new CPU generator.

    Raises ValueError on any invalid value, naming it and the valid choices.  ``se`` and ``sts`` (with
    0 < p < 1) need ``generator`` or ``seed``.
    """
    return Smoother(strategy, p=p, m=m, granularity=granularity, buffers=buffers, generator=generator,
                    seed=seed)
