"""Any timm backbone behind the ssl-bench model interface (``features``, ``num_features``, ``classifier``).

timm is optional (``pip install 'ssl-bench[timm]'``) because it needs torchvision, so it is imported only when a
``timm:<name>`` model is built.  The interface comes from timm's own (timm >= 0.9, "Feature Extraction" docs):
``forward_features(x)`` gives the unpooled last hidden state, ``forward_head(h, pre_logits=True)`` the pooled
features that enter the classifier, ``get_classifier()`` that classifier.  The pooled width is
``head_hidden_size`` where a model has a hidden layer in its head (MobileNetV3/V4, some ConvNeXt), else
``num_features``.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench.errors import MissingPackageError, UserError

TIMM_PREFIX = "timm:"


class TimmAdapter(nn.Module):
    """Wraps a timm model; ``forward(x)`` is defined as ``classifier(features(x))``.

    For timm classifiers this equals ``model(x)`` (timm's forward is ``forward_head(forward_features(x))``),
    and defining it this way makes the identity ReMixMatch's rotation head relies on hold by construction.
    ``classifier`` is a property, not a second registered sub-module: registering the timm head twice would
    list its weights twice in ``state_dict()``, and a smoother iterating the state dict would update them
    twice.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        hidden = getattr(model, "head_hidden_size", None)
        self.num_features = int(hidden if hidden else model.num_features)

    @property
    def classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_timm_model(timm_name: str, num_classes: int) -> TimmAdapter:
    """``timm.create_model(timm_name, pretrained=False, num_classes=num_classes)`` in a ``TimmAdapter``.

    No pretrained weights: SSL benchmarks train from scratch, and nothing is downloaded.
    """
    if not timm_name:
        raise UserError(f"empty timm model name; use {TIMM_PREFIX}<timm model name>, "
                        f"e.g. {TIMM_PREFIX}resnet18")
    try:   # the wide except: timm imports torchvision, and one that does not match torch fails in odd ways
        import timm
    except (ImportError, RuntimeError, AttributeError, OSError) as err:
        raise MissingPackageError(
            f"model '{TIMM_PREFIX}{timm_name}' needs the optional package timm: pip install 'ssl-bench[timm]'. "
            f"timm imports torchvision, which must be the build that matches the installed torch "
            f"({torch.__version__}). Import failed with: {type(err).__name__}: {err}"
        ) from err
    return TimmAdapter(timm.create_model(timm_name, pretrained=False, num_classes=num_classes))
