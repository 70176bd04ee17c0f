"""The runtime of one teacher's smoothing: a strategy instance, its generator, its cached plan, its checkpoint."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import ssl_bench.smoothing.kernels as kernels
from ssl_bench.smoothing.kernels import Update
from ssl_bench.smoothing.registry import (
    SmoothingError,
    build_strategy,
    known_setting_names,
    settings_of,
    strategy_settings,
)

# Version 2 nests the settings under "settings"; version 1 (before the registry) had them as top-level keys
# (strategy, p, m, granularity, buffers) and is still read.
_STATE_VERSION = 2
_STATE_KEYS = ("version", "strategy", "settings", "num_updates", "generator_state", "generator_device")


class Smoother:
    """Updates a teacher from its student, in place, with a registered strategy (see the package docstring).

    Build it with :func:`build_smoother`.  ``settings`` are the strategy's (``p``, ``m``, ...); settings some
    other strategy declares but this one does not read are ignored, so a caller may pass its configured values
    for every strategy.  Random draws come from ``generator`` (a :class:`torch.Generator` on the parameters'
    device), or with ``seed`` from a new CPU generator seeded with it.  Give every smoother its own generator:
    smoothers sharing one would interleave their draws, and each one's masks would depend on the others.
    """

    def __init__(self, strategy: str, *, generator: torch.Generator | None = None, seed: int | None = None,
                 **settings: Any) -> None:
        self.rule = build_strategy(strategy, settings)
        self.strategy: str = type(self.rule).name
        if generator is not None and seed is not None:
            raise SmoothingError(f"pass either generator= or seed= (got both, seed={seed!r}); the generator "
                                 f"would be re-seeded silently otherwise")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise SmoothingError(f"generator={generator!r} is not a torch.Generator; pass "
                                 f"torch.Generator(device).manual_seed(run_seed)")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise SmoothingError(f"seed={seed!r} is not an int; pass the run's integer seed")
            generator = torch.Generator().manual_seed(int(seed))
        if self.is_random and generator is None:
            raise SmoothingError(f"strategy {self.strategy!r} with {self.settings} draws random masks; pass "
                                 f"generator=torch.Generator(device).manual_seed(<run seed>) (or seed=<run "
                                 f"seed> on CPU) so that runs are reproducible and every data-parallel rank "
                                 f"draws the same masks")
        self._generator = generator
        self.num_updates = 0
        self._plan: kernels._Plan | None = None
        self._drawn_for: tuple[int, int] | None = None        # (step, plan) of the masks draw() made

    # -- description -----------------------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The settings the strategy reads, in declaration order."""
        return settings_of(self.rule)

    @property
    def is_random(self) -> bool:
        """True if updates draw from the generator (``se`` / ``sts`` with 0 < p < 1, up to 2**-32)."""
        draws = getattr(self.rule, "draws", None)
        return bool(draws()) if draws is not None else False

    @property
    def expected_momentum(self) -> float:
        """The momentum of the TMA that one update equals in expectation (p + (1 - p) m for STS)."""
        rule = getattr(self.rule, "expected_momentum", None)
        if rule is None:
            raise SmoothingError(f"strategy {self.strategy!r} declares no expected_momentum()")
        return float(rule())

    @property
    def generator(self) -> torch.Generator | None:
        return self._generator

    def config(self) -> dict[str, Any]:
        """The strategy and its settings, for run records (plain JSON)."""
        return {"strategy": self.strategy, **self.settings}

    def __repr__(self) -> str:
        return "Smoother(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    # -- the update ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, teacher: nn.Module, student: nn.Module, *, step: int | None = None,
               total_steps: int | None = None, drawn: bool = False) -> None:
        """One smoothing step, in place on ``teacher`` (call it after every optimizer step).

        ``step``: the index of this update, 0 after the first optimizer step (default: the number of updates
        this smoother has made).  ``total_steps``: the number of optimizer steps of the training; strategies
        that need the training's progress (momentum schedules other than constant, swa) refuse without it.

        The smoother caches the tensor lists of its last (teacher, student) pair, held by identity; a new
        pair, or parameters moved to another device or dtype (``.to()``, ``.half()``), rebuild them.  After
        module surgery between updates (registering, replacing or removing a parameter, buffer or submodule of
        either module, ``load_state_dict(assign=True)``), call :meth:`reset`.

        ``drawn=True``: use the masks :meth:`draw` made for this step instead of drawing (see there).
        """
        plan = self._plan_for(teacher, student)
        step = self.num_updates if step is None else step
        if drawn:
            if self._drawn_for != (step, id(plan)):
                raise SmoothingError(f"update(..., drawn=True) at step {step} without draw(...) at that step; call "
                                     f"smoother.draw(teacher, student, step=step, total_steps=total_steps) first")
            self._drawn_for = None
        self.rule.update(Update(plan, self._generator, step, total_steps, "apply" if drawn else "both"))
        self.num_updates += 1

    @torch.no_grad()
    def draw(self, teacher: nn.Module, student: nn.Module, *, step: int | None = None,
             total_steps: int | None = None) -> None:
        """Make the random draws of the next update now, so that ``update(..., drawn=True)`` is pure tensor
        math (e.g. ``torch.compile(fullgraph=True)`` of the update; a generator argument breaks graphs).

        ``draw`` + ``update(drawn=True)`` gives exactly what ``update`` alone gives (same masks, same values).
        """
        plan = self._plan_for(teacher, student)
        step = self.num_updates if step is None else step
        self.rule.update(Update(plan, self._generator, step, total_steps, "draw"))
        self._drawn_for = (step, id(plan))

    def reset(self) -> None:
        """Forget the cached tensor lists: the next update reads both modules afresh (see :meth:`update`)."""
        self._plan = None

    def _plan_for(self, teacher: nn.Module, student: nn.Module) -> kernels._Plan:
        plan = self._plan
        if plan is None or not plan.valid_for(teacher, student):
            plan = kernels.build_plan(teacher, student, getattr(self.rule, "granularity", "layer"))
            if self.is_random and plan.num_units:
                self._check_generator_device(plan.device)       # fail before the first draw, naming both
            self._plan = plan
        return plan

    def _check_generator_device(self, device: torch.device) -> None:
        g = self._generator
        if g.device.type != device.type or (device.index is not None
                                            and g.device.index not in (None, device.index)):
            raise SmoothingError(f"the smoother's generator is on {g.device} but the parameters are on "
                                 f"{device}; create it there: torch.Generator({str(device)!r}).manual_seed(run_seed)")

    # -- checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Strategy, settings, update count and generator state (``torch.Generator.get_state()``, or None)."""
        g = self._generator
        return {"version": _STATE_VERSION, "strategy": self.strategy, "settings": self.settings,
                "num_updates": self.num_updates, "generator_state": None if g is None else g.get_state(),
                "generator_device": None if g is None else str(g.device)}

    @staticmethod
    def _saved_settings(state_dict: Mapping[str, Any]) -> dict[str, Any]:
        if "settings" in state_dict:
            return dict(state_dict["settings"])
        return {k: v for k, v in state_dict.items() if k in known_setting_names()}      # version 1

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the update count and the generator state, after checking the strategy and settings match.

        Raises SmoothingError naming every setting that differs (a setting missing from an older checkpoint
        counts as its default).
        """
        missing = [k for k in ("strategy", "num_updates", "generator_state") if k not in state_dict]
        if missing:
            raise SmoothingError(f"not a Smoother state_dict: missing keys {missing}; pass what "
                                 f"Smoother.state_dict() returned")
        if state_dict["strategy"] != self.strategy:
            raise SmoothingError(f"smoother state_dict does not match this smoother (strategy: saved "
                                 f"{state_dict['strategy']!r}, this smoother {self.strategy!r}); build the "
                                 f"smoother with the saved settings, e.g. Smoother.from_state_dict(state_dict)")
        saved = self._saved_settings(state_dict)
        declared = strategy_settings(type(self.rule))
        diffs = [f"{k}: saved {saved.get(k, s.default)!r}, this smoother {getattr(self.rule, k)!r}"
                 for k, s in declared.items() if saved.get(k, s.default) != getattr(self.rule, k)]
        if diffs:
            raise SmoothingError("smoother state_dict does not match this smoother (" + "; ".join(diffs) + "); "
                                 "build the smoother with the saved settings, e.g. "
                                 "Smoother.from_state_dict(state_dict)")
        state = state_dict["generator_state"]
        # Nothing to restore without a saved state or a generator: such a smoother never draws.
        if state is not None and self._generator is not None:
            try:
                self._generator.set_state(state.detach().to("cpu", torch.uint8))
            except RuntimeError as e:
                raise SmoothingError(f"cannot restore the smoother's generator state on "
                                     f"{self._generator.device}: {e}. Resume on the same kind of device the "
                                     f"checkpoint was written on") from e
        self.num_updates = int(state_dict["num_updates"])

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *,
                        generator: torch.Generator | None = None) -> Smoother:
        """A smoother with the saved strategy, settings and generator state.

        Without ``generator``, the saved state goes into a new generator on the device it was saved from.
        """
        if generator is None and state_dict.get("generator_state") is not None:
            generator = torch.Generator(state_dict.get("generator_device") or "cpu")
        smoother = cls(state_dict["strategy"], generator=generator, **cls._saved_settings(state_dict))
        smoother.load_state_dict(state_dict)
        return smoother


def build_smoother(strategy: str, *, generator: torch.Generator | None = None, seed: int | None = None,
                   **settings: Any) -> Smoother:
    """Build a :class:`Smoother` by strategy name (or plug-in path) and settings.

    Args:
        strategy: a registered name (``none``, ``tma``, ``se``, ``sts``, ``swa``, a plug-in in ``./smoothers``)
            or a path to a strategy file.
        generator: a :class:`torch.Generator` on the parameters' device, seeded from the run's seed.
        seed: instead of ``generator``, for parameters on the CPU: the seed of a new CPU generator.
        settings: the strategy's settings (``p``, ``m``, ``granularity``, ``buffers``, ``schedule``, ...);
            missing ones take their declared defaults.

    Raises SmoothingError (a ValueError) on any invalid value, naming it and the valid choices.  Strategies
    that draw masks (``se``, ``sts`` with 0 < p < 1) need ``generator`` or ``seed``.
    """
    return Smoother(strategy, generator=generator, seed=seed, **settings)
