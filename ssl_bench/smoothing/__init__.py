"""Teacher smoothing: how the teacher follows the student after every optimizer step.

Paper: Huang, Sun, Wang, Yao, Zhang, "Spatial Ensemble: a Novel Model Smoothing Mechanism for Student-Teacher
Framework", NeurIPS 2021, Section 3.  Reference code: github.com/tengteng95/Spatial_Ensemble.

A **strategy** is data plus an update rule: one registry entry (``registry.py``) that declares the settings it
reads, with their defaults and ranges, and an ``update(u)`` composed of fused operations (``kernels.Update``).
The built-ins are in ``builtins.py`` (none, tma, se, sts, swa, with their formulas and sources); a plug-in is
one file registered the same way (``--smooth path/to/my_smoother.py`` or ``./smoothers/<name>.py``).  A
:class:`Smoother` runs one strategy for one teacher: generator, cached tensor lists, checkpoint.
:class:`SmoothingSpec` is one teacher's smoothing as one value (key, run-directory suffix, label, record).

The teacher Theta^T and the student Theta^S are split into n *units* theta_i (a layer, a channel or a neuron,
see :data:`GRANULARITIES`); P_i ~ Ber(p) independent per unit (P_i = 1: *preserve* unit i).  p is the paper's
*preserving probability* and m the TMA momentum.  STS contains the others: m = 0 gives SE, p = 0 gives TMA,
p = 0 and m = 0 give "none".  In expectation STS is a TMA with momentum p + (1 - p) m.

**p = 0 vs p = 1.**  The sentence under Eq. 3 says STS becomes TMA "when p = 1, which results in P_i = 0".
That contradicts Eq. 1 (P_i ~ Ber(p), P_i = 1 preserves) and Algorithm 2 (``if rand() < p: continue``): with
p = 1 every unit is preserved and the teacher never moves.  We follow the equations and the pseudo-code:
**p = 0 is TMA, p = 1 freezes the parameters.**  (Algorithms 1-2 also write ``t = s`` / ``t = m*t + ...``,
which in Python only rebinds a loop variable; the intended in-place update is what is implemented here.)

**Buffers** (BatchNorm running statistics, ``num_batches_tracked``) are not units of Eqs. 1-3 (Theta is the
parameters; the official code, ``models/m2_teacher.py``, gates ``parameters()`` only and its BYOL teacher
normalises with batch statistics).  In ssl-bench the teacher is evaluated in eval mode, so its running
statistics matter and the policy is explicit: ``copy`` (default, as the PyTorch FixMatch EMA,
kekmodel/FixMatch-pytorch ``models/ema.py``: never through the random gate, a preserved layer with stale
statistics would mis-normalise) or ``average`` (EMAN's rule; see ``builtins.py``).

Randomness: every draw comes from one dedicated :class:`torch.Generator` on the parameters' device, passed in
and seeded from the run's seed (the official code uses NumPy's global generator), so every data-parallel rank
draws the same masks and ``state_dict()`` / ``load_state_dict()`` resume the exact mask sequence.
P_i ~ Ber(p) is drawn as integer bits compared with a threshold (``kernels.Gate``): exact for dyadic p such as
the default 0.5.  The teacher should start as an exact copy of the student (:func:`copy_student_to_teacher`,
or ``copy.deepcopy(student)``): the official code lets the very first update go through the random gate,
which leaves most teacher tensors at their random initialisation.

A smoother keeps no state outside itself (no process-wide hooks or caches), so several smoothers may update
their own teachers from one student in the same step (multi-teacher training).  It caches the tensor lists of
its (teacher, student) pair: call :meth:`Smoother.reset` after replacing, adding or removing parameters,
buffers or submodules of either.

Example::

    teacher = copy.deepcopy(student)
    smoother = build_smoother("sts", p=0.5, m=0.999, granularity="layer",
                              generator=torch.Generator(device).manual_seed(run_seed))
    for step in range(total_steps):
        ...; optimizer.step()
        smoother.update(teacher, student, step=step, total_steps=total_steps)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ssl_bench.smoothing.builtins import SCHEDULES, momentum_at  # importing it registers the built-ins
from ssl_bench.smoothing.kernels import (
    GRANULARITIES,
    Update,
    copy_student_to_teacher,
    draw_replace_mask,
    unit_shape,
)
from ssl_bench.smoothing.registry import (
    SHARED_SETTINGS,
    Setting,
    SmoothingError,
    available_strategies,
    is_plugin_reference,
    plugin_file,
    register,
    setting,
    shared,
    strategy_class,
    strategy_settings,
)
from ssl_bench.smoothing.smoother import Smoother, build_smoother
from ssl_bench.smoothing.spec import SmoothingSpec

__all__ = [
    "BUFFER_POLICIES", "DEFAULT_M", "DEFAULT_P", "GRANULARITIES", "PARAMETER_DEFAULTS", "SCHEDULES",
    "SHARED_SETTINGS", "STRATEGIES", "STRATEGY_PARAMETERS", "Setting", "Smoother", "SmoothingError", "SmoothingSpec",
    "Update", "available_strategies", "build_smoother", "copy_student_to_teacher", "draw_replace_mask",
    "is_plugin_reference", "momentum_at", "plugin_file", "register", "relevant_settings", "setting", "shared",
    "strategy_class", "strategy_settings", "unit_shape",
]

# The built-in strategies the command line offers (the paper's four, then SWA); the loop passes every update
# its step and the training's length, which swa and the momentum schedules read.
STRATEGIES: tuple[str, ...] = ("none", "tma", "se", "sts", "swa")
# Views of the registry for importers (config, results, leaderboard): what each strategy reads, the defaults.
STRATEGY_PARAMETERS: dict[str, tuple[str, ...]] = {
    name: tuple(strategy_settings(strategy_class(name))) for name in STRATEGIES}
PARAMETER_DEFAULTS: dict[str, Any] = {name: s.default for name, s in SHARED_SETTINGS.items()}
BUFFER_POLICIES: tuple[str, ...] = SHARED_SETTINGS["buffers"].choices
DEFAULT_P: float = PARAMETER_DEFAULTS["p"]
DEFAULT_M: float = PARAMETER_DEFAULTS["m"]
DEFAULT_GRANULARITY: str = PARAMETER_DEFAULTS["granularity"]
DEFAULT_BUFFERS: str = PARAMETER_DEFAULTS["buffers"]


def relevant_settings(strategy: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``strategy`` reads (declaration order), taken from ``settings`` or their defaults.

    For naming runs and leaderboard rows: ``relevant_settings("tma", {"p": 0.7, "m": 0.99})`` is
    ``{"m": 0.99, "buffers": "copy", "schedule": "constant"}``.
    """
    return {name: settings.get(name, s.default) for name, s in strategy_settings(strategy_class(strategy)).items()}
