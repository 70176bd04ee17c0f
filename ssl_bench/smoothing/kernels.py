"""The tensor work behind every smoothing strategy: units, the Bernoulli gate, the per-pair plan, fused updates.

Nothing here knows a strategy by name; strategies (``builtins.py``, plug-ins) call the methods of
:class:`Update`, which apply one fused operation to every parameter or buffer of a (teacher, student) pair.

Fast paths (issue 22): tensors are grouped by dtype once per pair (:class:`_Plan`), and each fused call runs
once per group, with full-shape weights, so every ``torch._foreach_*`` call stays on CUDA's multi-tensor
fast path (one list of one dtype, operands of equal shapes) and an update is a handful of kernels at any
granularity.  No update reads a value back to the host, on any device (the CPU included, so that one code
path is tested here and runs on a GPU): a gate's draw has a fixed shape, and its mask becomes lerp weights in
{0, w} (broadcast per unit on the CPU, expanded per element with a precomputed ``index_select`` elsewhere),
never picked tensors through ``nonzero`` / ``.tolist()``.  ATen's lerp is base + coeff * (end - start) with
coeff = 0 for weights 0 and 1, so the masked lerp gives the values of updating only the replaced units, with
two exceptions that trained weights do not meet: a -0.0 comes out +0.0, and an inf or nan in either model
spreads to the other's unit (inf - inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

GRANULARITIES: tuple[str, ...] = ("layer", "channel", "neuron")
# Random bits per unit, fewest first: p = 0.5 needs 8 (a quarter of torch.rand's cost), p = 0.7 needs 32.
_BIT_WIDTHS = {8: torch.int8, 16: torch.int16, 32: torch.int32}
# Device types whose foreach ops loop over tensors anyway (no multi-tensor kernel): per-unit weights broadcast
# over each tensor there, instead of expanded per element (see _Group.element_weights).
_BROADCAST_WEIGHT_DEVICES: tuple[str, ...] = ("cpu",)


def unit_shape(shape: torch.Size | tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """Shape of the per-unit mask of a tensor of ``shape``; it broadcasts against the tensor.

    ``layer``: one unit per tensor (all ones).  ``channel``: one unit per entry of the first dimension (output
    channels of conv / linear weights; a 1-D tensor's entries; a 0-d tensor is one unit).  ``neuron``: one
    unit per scalar.  The number of units is the product of the returned shape.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of "
                         f"{', '.join(repr(g) for g in GRANULARITIES)}")
    shape = tuple(shape)
    if granularity == "layer":
        return (1,) * len(shape)
    if granularity == "channel":
        return (shape[0],) + (1,) * (len(shape) - 1) if shape else ()
    return shape


@dataclass(frozen=True)
class Gate:
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
    def for_p(p: float) -> Gate:
        bits = next((b for b in _BIT_WIDTHS if (p * 2.0**b).is_integer()), 32)
        return Gate(bits, round(p * 2.0**bits))

    @property
    def never_preserves(self) -> bool:
        return self.k == 0

    @property
    def always_preserves(self) -> bool:
        return self.k == 2**self.bits

    @property
    def is_random(self) -> bool:
        return not (self.never_preserves or self.always_preserves)

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
    """The Bernoulli draw of one gated update: a bool tensor, True where unit i is *replaced*.

    Each unit is preserved (P_i = 1) with probability p (exactly when p * 2**32 is an integer, else p rounded
    to 2**-32; see :class:`Gate`); p = 0 replaces and p = 1 preserves every unit without drawing.  It advances
    ``generator`` exactly as one update of a smoother does, so a test can predict an update's masks from a
    generator with the same state.
    """
    gate = Gate.for_p(p)
    if not gate.is_random:
        return torch.full((num_units,), gate.never_preserves, dtype=torch.bool, device=generator.device)
    return gate.draw(num_units, generator) >= gate.threshold


# ------------------------------------------------------------------------------------------------------------
# Matching teacher and student
# ------------------------------------------------------------------------------------------------------------

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
# The per-(teacher, student) plan: tensor lists per dtype, unit layout, scratch buffers
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
    unit_weights: Tensor | None = None      # scratch: one lerp weight per unit (the group's dtype)
    unit_index: Tensor | None = None        # the unit of every element, flat (None where units are elements)
    weights: Tensor | None = None           # scratch: one lerp weight per element, flat
    weight_views: list[Tensor] = field(default_factory=list)      # full-shape views of ``weights``
    broadcast_views: list[Tensor] = field(default_factory=list)   # unit_weights shaped to broadcast

    def element_weights(self, full: bool) -> tuple[Tensor, list[Tensor]]:
        """The per-unit weight buffer and per-tensor weight views for ``_foreach_lerp_``.

        ``full``: full-shape views of per-element weights (filled by :meth:`expand_weights`), which keep
        ``_foreach_lerp_`` on CUDA's multi-tensor fast route (broadcast-shaped weights fall back to one kernel
        per tensor).  Else views of the unit weights shaped to broadcast over each tensor: the CPU's foreach is
        a loop over tensors either way, and broadcasting saves the index's memory traffic.  Same values.
        Where every unit is one element (neuron-wise) the two coincide.
        """
        if self.unit_weights is None:
            self.unit_weights = torch.empty(self.stop - self.start, dtype=self.dtype, device=self.t[0].device)
            offset = 0
            for shape in self.unit_shapes:
                n = math.prod(shape)
                self.broadcast_views.append(self.unit_weights[offset:offset + n].view(shape))
                offset += n
        if not full:
            return self.unit_weights, self.broadcast_views
        if not self.weight_views:
            device = self.t[0].device
            numel = sum(t.numel() for t in self.t)
            if numel == self.stop - self.start:
                self.weights = self.unit_weights
            else:
                # Sizes from Python ints (output_size given): no host read, even on the first update.
                # int32 halves the index's memory traffic; index_select accepts it.
                per_unit = [t.numel() // math.prod(s) for s, t in zip(self.unit_shapes, self.t, strict=True)
                            for _ in range(math.prod(s))]
                self.unit_index = torch.repeat_interleave(
                    torch.arange(len(per_unit), device=device, dtype=torch.int32),
                    torch.tensor(per_unit, device=device), output_size=numel)
                self.weights = torch.empty(numel, dtype=self.dtype, device=device)
            offset = 0
            for t in self.t:
                self.weight_views.append(self.weights[offset:offset + t.numel()].view(t.shape))
                offset += t.numel()
        return self.unit_weights, self.weight_views

    def expand_weights(self) -> None:
        """unit weights -> per-element weights (one ``index_select``; nothing where units are elements)."""
        if self.unit_index is not None:
            torch.index_select(self.unit_weights, 0, self.unit_index, out=self.weights)


@dataclass
class _BufferGroup:
    """Buffers of one dtype (floating groups first, then integer ones)."""

    t: list[Tensor]
    s: list[Tensor]
    floating: bool


@dataclass
class _Plan:
    """One smoother's cache for one (teacher, student) pair: tensor lists, unit layout and scratch buffers."""

    teacher: nn.Module
    student: nn.Module
    t_params: list[Tensor]
    s_params: list[Tensor]
    buffer_groups: list[_BufferGroup]
    granularity: str
    device: torch.device | None
    groups: list[_Group]
    num_units: int
    bits64: list[Tensor] = field(default_factory=list)   # scratch per draw of an update: the random words
    masks: list[Tensor] = field(default_factory=list)    # scratch per draw: one bool per unit, True = replaced

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
        buffers: dict[tuple[bool, torch.dtype], list[str]] = {}
        for name, b in tb.items():
            floating = b.is_floating_point() or b.is_complex()
            buffers.setdefault((not floating, b.dtype), []).append(name)
        buffer_groups = [_BufferGroup([tb[n] for n in names], [sb[n] for n in names], not integer)
                         for (integer, _), names in sorted(buffers.items(), key=lambda kv: kv[0][0])]
        return _Plan(
            teacher=teacher, student=student,
            t_params=[t for g in groups for t in g.t], s_params=[s for g in groups for s in g.s],
            buffer_groups=buffer_groups, granularity=granularity,
            device=next(iter(devices)) if devices else None, groups=groups, num_units=start)

    def valid_for(self, teacher: nn.Module, student: nn.Module) -> bool:
        """True if built for these very modules, and their parameters kept their device and dtype."""
        # `.to(device)` / `.half()` keep the Parameter objects but replace their data (and replace the
        # buffers): the lists, the groups' dtypes and the scratch buffers' device must follow.  Every tensor
        # of a group moves with its first one, so an O(number of dtypes) test suffices.
        return (self.teacher is teacher and self.student is student
                and all(g.t[0].device == g.s[0].device == self.device
                        and g.t[0].dtype == g.s[0].dtype == g.dtype for g in self.groups))

    def replace_mask(self, gate: Gate, generator: torch.Generator, slot: int = 0) -> Tensor:
        """One draw for all units into the scratch buffers of ``slot`` (the draw's index within one update):
        True where unit i is replaced."""
        while len(self.masks) <= slot:
            self.bits64.append(torch.empty(0, dtype=torch.int64, device=self.device))
            self.masks.append(torch.empty(self.num_units, dtype=torch.bool, device=self.device))
        if self.bits64[slot].numel() != gate.words(self.num_units):
            self.bits64[slot] = torch.empty(gate.words(self.num_units), dtype=torch.int64, device=self.device)
        # a bool output: comparing straight into a float buffer takes a slow, unvectorised path on CPU
        return torch.ge(gate.draw(self.num_units, generator, self.bits64[slot]), gate.threshold,
                        out=self.masks[slot])


def build_plan(teacher: nn.Module, student: nn.Module, granularity: str) -> _Plan:
    """The plan of a pair (module-level so that tests can count how often plans are built)."""
    return _Plan.build(teacher, student, granularity)


def copy_student_to_teacher(teacher: nn.Module, student: nn.Module) -> None:
    """Make ``teacher`` an exact copy of ``student`` (parameters and buffers, in place, no autograd).

    Use it (or ``teacher = copy.deepcopy(student)``) before the first update.  Raises ValueError if the two
    modules differ in parameter / buffer names, shapes, dtypes or devices.
    """
    plan = _Plan.build(teacher, student, "layer")
    with torch.no_grad():
        for g in plan.groups:
            torch._foreach_copy_(g.t, g.s)
        for b in plan.buffer_groups:
            torch._foreach_copy_(b.t, b.s)


def _lerp_or_copy(teacher: list[Tensor], student: list[Tensor], weight: float) -> None:
    """theta^T <- lerp(theta^T, theta^S, weight) over the lists, one fused call; weight 1 is an exact copy."""
    if not teacher:
        return
    if weight == 1.0:
        torch._foreach_copy_(teacher, student)
    else:
        torch._foreach_lerp_(teacher, student, weight)


# ------------------------------------------------------------------------------------------------------------
# What a strategy's update sees
# ------------------------------------------------------------------------------------------------------------

class Update:
    """One update of one teacher: the fused operations a strategy's ``update(u)`` composes.

    ``step`` is the index of this update (0 after the first optimizer step) and ``total_steps`` the number
    of updates the training will make (None if the caller did not say; schedules that need it refuse).
    ``teacher`` / ``student`` are the modules; the tensor lists are grouped by dtype internally, so each
    method is one fused ``torch._foreach_*`` call per dtype.  Nothing here reads a tensor back to the host on
    an accelerator.

    ``phase``: ``"both"`` draws and applies; ``"draw"`` only makes the random draws (into the plan's scratch
    masks, in call order) and changes no tensor of the modules; ``"apply"`` uses the masks the draw phase made,
    so that the apply phase is pure tensor math (compilable with ``fullgraph=True``: ``random_`` with a
    generator argument breaks a graph).  Both phases run the strategy's same Python control flow, which may
    depend on the step and the settings but never on tensor values.
    """

    def __init__(self, plan: _Plan, generator: torch.Generator | None, step: int, total_steps: int | None,
                 phase: str = "both"):
        self._plan = plan
        self.generator = generator
        self.step = step
        self.total_steps = total_steps
        self._phase = phase
        self._draws = 0
        self._writes = phase != "draw"

    @property
    def draws_made(self) -> int:
        """How many masks this update has drawn (or, in the apply phase, used)."""
        return self._draws

    @property
    def teacher(self) -> nn.Module:
        return self._plan.teacher

    @property
    def student(self) -> nn.Module:
        return self._plan.student

    @property
    def teacher_params(self) -> list[Tensor]:
        return self._plan.t_params

    @property
    def student_params(self) -> list[Tensor]:
        return self._plan.s_params

    def lerp(self, weight: float) -> None:
        """Every parameter: theta^T <- theta^T + weight (theta^S - theta^T); weight 1 copies, 0 does nothing."""
        if weight == 0.0 or not self._writes:
            return
        for g in self._plan.groups:
            _lerp_or_copy(g.t, g.s, weight)

    def gated_lerp(self, p: float, weight: float) -> None:
        """Each unit (the plan's granularity) preserved with probability p, else lerped with ``weight``.

        Draws one mask per call from the generator whenever 0 < p < 1 (even if weight is 0, so that the mask
        sequence does not depend on the momentum).  p = 0 is :meth:`lerp`; p = 1 changes nothing.
        """
        gate = Gate.for_p(p)
        if gate.always_preserves or weight == 0.0:       # p = 1, or m = 1: parameters stay
            return
        if gate.never_preserves:                         # p = 0: every unit replaced -> TMA (Eq. 4), or a copy
            self.lerp(weight)
            return
        plan = self._plan
        if not plan.num_units:
            return
        if self.generator is None:
            raise ValueError("this strategy draws random masks (gated_lerp with 0 < p < 1) but the smoother has "
                             "no generator: declare `def draws(self) -> bool: return True` on the strategy and "
                             "pass generator= (or seed=) to build_smoother")
        slot, self._draws = self._draws, self._draws + 1
        if self._phase == "apply":
            if slot >= len(plan.masks):
                raise ValueError("update(..., drawn=True) without the masks: call smoother.draw(...) with the same "
                                 "step before every drawn update")
            replaced = plan.masks[slot]
        else:
            replaced = plan.replace_mask(gate, self.generator, slot)        # P_i = 0
        if not self._writes:
            return
        # Per-element weights W in {0, w}: theta^T <- lerp(theta^T, theta^S, W).  lerp with weight 0 returns
        # theta^T and with weight 1 returns theta^S exactly (finite values; see the module docstring).  Every
        # unit of every tensor is computed, the preserved ones too: picking the replaced tensors on the host
        # (fewer bytes for layer-wise updates on the CPU) would read the mask back, one host sync per update.
        full = plan.device.type not in _BROADCAST_WEIGHT_DEVICES
        for g in plan.groups:
            unit_weights, views = g.element_weights(full)
            unit_weights.copy_(replaced[g.start:g.stop])
            if weight != 1.0:
                unit_weights.mul_(weight)
            if full:
                g.expand_weights()
            torch._foreach_lerp_(g.t, g.s, views)

    def copy_buffers(self) -> None:
        """Every buffer copied from the student (one fused copy per dtype)."""
        if not self._writes:
            return
        for b in self._plan.buffer_groups:
            torch._foreach_copy_(b.t, b.s)

    def average_buffers(self, weight: float) -> None:
        """Floating buffers lerped towards the student's with ``weight``; integer buffers copied.

        An average of a counter (``num_batches_tracked``) is meaningless and integer lerp is undefined.
        """
        if not self._writes:
            return
        for b in self._plan.buffer_groups:
            if not b.floating or weight == 1.0:
                torch._foreach_copy_(b.t, b.s)
            elif weight != 0.0:
                torch._foreach_lerp_(b.t, b.s, weight)


def describe_plan(plan: _Plan) -> dict[str, Any]:
    """Sizes of a plan, for benchmarks: tensors, units, dtype groups."""
    return {"tensors": len(plan.t_params), "units": plan.num_units, "dtype_groups": len(plan.groups),
            "buffer_groups": len(plan.buffer_groups)}
