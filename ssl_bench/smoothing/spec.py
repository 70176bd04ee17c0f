"""The smoothing of one teacher as one value: strategy + the settings it reads.

:class:`SmoothingSpec` is what a run configuration, a run directory, a leaderboard row and a record hold for a
teacher, so that the strategy's settings are spelled out in one place (its registry entry) instead of field
by field in every module.  ``SmoothingSpec.of("tma", {"m": 0.99, "p": 0.3})`` keeps only what ``tma`` reads
(m, buffers, schedule), fills the rest with their declared defaults and checks every value.

Names derived from it:

* :attr:`key`: the teacher's key within a training and in checkpoints (``sts-layer-p0.5-m0.999-copy``); the
  four settings of the original suite (granularity, p, m, buffers) are always shown, in that order, exactly as
  ``RunConfig.teacher_key`` wrote them, so keys of saved trainings stay valid; any other setting is appended
  only where it differs from its default (``tma-m0.99-copy-cosine``).
* :meth:`suffix`: the smoothing part of a run directory's name, every setting that differs from the defaults
  (``sts_channel_p0.3``, ``tma_m0.999``).  Pass ``defaults={"m": profile.m}`` so that m shows exactly when it
  is not the profile's: two teachers ``--m 0.99,0.999`` on the cpu profile get ``tma`` and ``tma_m0.999``.
* :meth:`label`: the leaderboard's words (``sts (channel, p=0.3)``), settings that differ from the defaults.
* :meth:`to_record` / :meth:`from_record`: a plain-JSON dict, ``{"strategy": "sts", "settings": {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.smoothing.registry import SmoothingError, strategy_class, strategy_settings
from ssl_bench.smoothing.smoother import Smoother

# The settings of the original suite, in the order RunConfig.teacher_key and run_base_name wrote them.
_KEY_ORDER = ("granularity", "p", "m", "buffers")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class SmoothingSpec:
    """A strategy name and the values of every setting it reads (validated, in declaration order)."""

    strategy: str
    settings: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, strategy: str, settings: Mapping[str, Any] | None = None, **more: Any) -> SmoothingSpec:
        """The spec of ``strategy`` from any mapping of settings (others' settings are dropped)."""
        rule = strategy_class(strategy)
        given = {**(settings or {}), **more}
        values = tuple((name, s.check(name, given.get(name, s.default)))
                       for name, s in strategy_settings(rule).items())
        return cls(rule.name, values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def __getitem__(self, name: str) -> Any:
        return self.as_dict()[name]

    def _defaults(self, defaults: Mapping[str, Any] | None) -> dict[str, Any]:
        declared = {n: s.default for n, s in strategy_settings(strategy_class(self.strategy)).items()}
        return declared | {k: v for k, v in (defaults or {}).items() if k in declared}

    def _differing(self, defaults: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
        base = self._defaults(defaults)
        ordered = sorted(self.settings, key=lambda kv: (_KEY_ORDER.index(kv[0]) if kv[0] in _KEY_ORDER
                                                        else len(_KEY_ORDER)))
        return [(k, v) for k, v in ordered if v != base[k]]

    @property
    def key(self) -> str:
        """The teacher's key in a training and its checkpoint (see the module docstring)."""
        values, base = self.as_dict(), self._defaults(None)
        parts = [self.strategy]
        parts += [str(values[k]) if isinstance(values[k], str) else f"{k}{values[k]}"
                  for k in _KEY_ORDER if k in values]
        parts += [str(v) if isinstance(v, str) else f"{k}{v}" for k, v in self.settings
                  if k not in _KEY_ORDER and v != base[k]]
        return "-".join(parts)

    def suffix(self, defaults: Mapping[str, Any] | None = None) -> str:
        """The run-directory piece: the strategy, then ``_value`` / ``_name<value>`` for each non-default."""
        parts = [str(v) if isinstance(v, str) else f"{k}{v}" for k, v in self._differing(defaults)]
        return "_".join([self.strategy, *parts])

    def label(self, defaults: Mapping[str, Any] | None = None) -> str:
        """The leaderboard's words: ``sts``, ``sts (channel, p=0.3)``, ``tma (m=0.99, schedule=cosine)``."""
        extras = [v if k == "granularity" else f"{k}={_show(v)}" for k, v in self._differing(defaults)]
        return f"{self.strategy} ({', '.join(extras)})" if extras else self.strategy

    def to_record(self) -> dict[str, Any]:
        """Plain JSON: ``{"strategy": "sts", "settings": {"p": 0.5, ...}}``."""
        return {"strategy": self.strategy, "settings": self.as_dict()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SmoothingSpec:
        """The spec a record field holds; settings the strategy no longer declares are an error."""
        if not isinstance(record, Mapping) or "strategy" not in record:
            raise SmoothingError(f"not a smoothing record: {record!r}; expected "
                                 f"{{'strategy': NAME, 'settings': {{...}}}} as SmoothingSpec.to_record() writes")
        settings = dict(record.get("settings", {}))
        declared = strategy_settings(strategy_class(record["strategy"]))
        extra = sorted(set(settings) - set(declared))
        if extra:
            raise SmoothingError(f"smoothing record of {record['strategy']!r} sets {extra[0]!r}, which the "
                                 f"strategy does not read (it reads {sorted(declared) or 'nothing'})")
        return cls.of(record["strategy"], settings)

    def build(self, *, generator: torch.Generator | None = None, seed: int | None = None) -> Smoother:
        """The smoother of this spec."""
        return Smoother(self.strategy, generator=generator, seed=seed, **self.as_dict())
