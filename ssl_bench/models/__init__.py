"""Models by name: ``build_model(name, num_classes)``.

Every model maps float images (N, 3, H, W) to logits (N, num_classes) and exposes ``features(x)`` (pooled,
(N, num_features)), ``num_features`` and ``classifier`` (the final layer), with ``forward(x) ==
classifier(features(x))``.

Names:
  ``wrn28_2``, ``wrn28_8``  FixMatch's Wide ResNets (any ``wrn<depth>_<width>`` with depth = 6n + 4 works)
  ``tiny``                  a three-layer CNN with BatchNorm (6 k weights), for tests
  ``small``                 the same CNN at widths 32/64/128 (95 k weights), for the ``cpu`` profile: a few
                            CPU minutes per run, where WRN-28-2 would take hours
  ``timm:<name>``           any timm model, e.g. ``timm:resnet18`` (optional: ``pip install 'ssl-bench[timm]'``)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from ssl_bench.errors import UserError

from .timm_adapter import TIMM_PREFIX, TimmAdapter, build_timm_model
from .tiny import SMALL_WIDTHS, TinyCNN
from .wrn import WideResNet

__all__ = ["MODEL_NAMES", "TimmAdapter", "TinyCNN", "WideResNet", "build_model", "check_model_name",
           "default_model"]

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "wrn28_2": lambda num_classes: WideResNet(num_classes, depth=28, width=2),
    "wrn28_8": lambda num_classes: WideResNet(num_classes, depth=28, width=8),
    "tiny": TinyCNN,
    "small": lambda num_classes: TinyCNN(num_classes, widths=SMALL_WIDTHS),
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)

_WRN = re.compile(r"wrn(\d+)_(\d+)(?:_s(\d+))?")  # wrn<depth>_<width>[_s<scales>]



def _choices() -> str:
    return (
        f"choose one of {', '.join(MODEL_NAMES)}, wrn<depth>_<width> (depth = 6n+4 >= 10, width >= 1, "
        "e.g. wrn16_4; wrn<depth>_<width>_s<scales> for another number of scales than 3, e.g. wrn28_2_s5 for "
        f"96-px STL-10), or {TIMM_PREFIX}<timm model name> (e.g. {TIMM_PREFIX}resnet18)"
    )


def _unknown(name: str) -> UserError:
    return UserError(f"--model {name!r} is not a model ssl-bench knows; {_choices()}")


def _resolve(name: str) -> Callable[[int], nn.Module]:
    """The constructor for ``name``; raises ValueError for names no constructor accepts (nothing is built)."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX):]
        if not timm_name:
            raise _unknown(name)
        return lambda num_classes: build_timm_model(timm_name, num_classes)
    match = _WRN.fullmatch(name)
    if match:
        depth, width, scales = int(match[1]), int(match[2]), int(match[3] or 3)
        if depth < 10 or (depth - 4) % 6 or width < 1 or scales < 1:
            raise UserError(f"model {name!r}: a Wide ResNet needs depth = 6n+4 >= 10 and width >= 1; "
                            f"{_choices()}")
        return lambda num_classes: WideResNet(num_classes, depth=depth, width=width, scales=scales)
    raise _unknown(name)


def check_model_name(name: str) -> None:
    """Validate ``name`` without building anything (the CLI boundary); timm's presence is checked at build."""
    _resolve(name)


def build_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised model (draws from the global torch RNG: ``torch.manual_seed`` fixes the init)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
    return _resolve(name)(num_classes)


def default_model(dataset_family: str | None) -> str:
    """The reference's model for a data set family, as the data registry declares it (with its source):
    ssl_bench.data.registry.FAMILIES (cifar10 / svhn / None -> wrn28_2, cifar100 -> wrn28_8, stl10 -> wrn28_2_s5)."""
    from ssl_bench.data.registry import default_model as registry_default_model

    return registry_default_model(dataset_family)
