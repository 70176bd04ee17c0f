"""ssl_bench.models: FixMatch's WRN pinned to its parameter count and hyper-parameters; the shared
interface; timm."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from torch import nn

from ssl_bench.models import MODEL_NAMES, TimmAdapter, build_model, check_model_name, default_model
from ssl_bench.models.wrn import PreActBlock


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def wrn_params_closed_form(depth: int, width: int, num_classes: int) -> int:
    """Parameter count of the FixMatch WRN (bias-free convs), written out from the architecture on its own."""
    n = (depth - 4) // 6
    total = 3 * 16 * 9  # stem conv3x3, no bias
    c_in = 16
    for c_out in (16 * width, 32 * width, 64 * width):
        for _ in range(n):
            total += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out  # bn1, conv1, bn2, conv2
            total += c_in * c_out if c_in != c_out else 0  # 1x1 shortcut
            c_in = c_out
    return total + 2 * c_in + c_in * num_classes + num_classes  # final BN, linear with bias


# --- WRN: pinned to FixMatch --------------------------------------------------------------------------------


def test_wrn28_2_has_the_1_47M_parameters_of_fixmatch():
    model = build_model("wrn28_2", 10)
    # FixMatch / MixMatch papers: WRN-28-2 with ~1.5 M parameters; 1.47 M exactly for the bias-free-conv port.
    assert n_params(model) == 1_467_610 == wrn_params_closed_form(28, 2, 10)
    assert model.num_features == 128


def test_wrn28_8_for_cifar100_has_23_4M_parameters():
    model = build_model("wrn28_8", 100)  # ~0.4 s to initialise; no forward pass
    assert n_params(model) == 23_401_012 == wrn_params_closed_form(28, 8, 100)
    assert round(n_params(model) / 1e6, 1) == 23.4
    assert model.num_features == 512


def test_wrn_batchnorm_and_leaky_relu_follow_the_tf_reference():
    model = build_model("wrn28_2", 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(bns) == 2 * 12 + 1 and len(acts) == len(bns)  # two per block, 12 blocks, one final
    assert all(bn.momentum == 0.001 and bn.eps == 1e-3 for bn in bns)  # TF momentum=0.999, TF default eps
    assert all(act.negative_slope == 0.1 for act in acts)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_wrn_architecture_stem_widths_strides_and_shortcuts():
    model = build_model("wrn28_2", 10)
    assert model.stem.out_channels == 16 and model.stem.kernel_size == (3, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert model.classifier.bias is not None
    blocks = [b for b in model.modules() if isinstance(b, PreActBlock)]
    assert len(blocks) == 12
    firsts = blocks[0::4]
    assert [b.conv2.out_channels for b in firsts] == [32, 64, 128]
    assert [b.conv1.stride for b in firsts] == [(1, 1), (2, 2), (2, 2)]
    assert all(b.shortcut is not None and b.shortcut.kernel_size == (1, 1) for b in firsts)
    assert all(b.shortcut is None for i, b in enumerate(blocks) if i % 4)
    assert [b.activate_before_residual for b in blocks] == [True] + [False] * 11


def test_wrn_init_matches_tf_initialisers():
    torch.manual_seed(0)
    model = build_model("wrn28_2", 10)
    # conv: normal, std = sqrt(2 / (k*k*out)) -- the largest conv gives a tight estimate
    w = model.groups[2][1].conv1.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.02)
    # dense: glorot normal truncated at 2 sigma, std after truncation sqrt(2 / (fan_in + fan_out))
    w = model.classifier.weight
    sigma = math.sqrt(2 / (128 + 10)) / 0.87962566103423978
    assert w.abs().max().item() <= 2 * sigma
    assert w.std().item() == pytest.approx(math.sqrt(2 / (128 + 10)), rel=0.1)
    assert torch.count_nonzero(model.classifier.bias) == 0


@pytest.mark.parametrize("activate_before_residual", [True, False])
def test_block_shortcut_takes_the_preactivation_only_when_asked(activate_before_residual):
    # the reference feeds BN+LeakyReLU(x0) to the shortcut only in the network's first block
    torch.manual_seed(0)
    block = PreActBlock(4, 8, stride=2, activate_before_residual=activate_before_residual).eval()
    nn.init.zeros_(block.conv2.weight)  # residual branch contributes nothing: output == shortcut(input)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = block.shortcut(block.act1(block.bn1(x)) if activate_before_residual else x)
        assert torch.equal(block(x), expected)


@pytest.mark.parametrize("name", ["wrn16_4x", "wrn27_2", "wrn4_2", "wrn28_0", "timm:", "resnet18", "WRN28_2"])
def test_unknown_or_malformed_names_raise_value_error_listing_choices(name):
    with pytest.raises(ValueError) as info:
        build_model(name, 10)
    message = str(info.value)
    assert repr(name) in message
    assert all(n in message for n in MODEL_NAMES) and "wrn<depth>_<width>" in message and "timm:<" in message


def test_check_model_name_validates_without_building():
    check_model_name("wrn28_8")
    check_model_name("wrn16_4")
    check_model_name("timm:resnet18")  # timm availability is only checked at build time
    with pytest.raises(ValueError):
        check_model_name("wrn28-2")


def test_num_classes_is_validated():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            build_model("tiny", bad)


def test_default_model_per_dataset_family():
    assert default_model("cifar10") == "wrn28_2"
    assert default_model("cifar100") == "wrn28_8"
    assert default_model(None) == "wrn28_2"
    for family in ("cifar10", "cifar100", None):
        check_model_name(default_model(family))
    with pytest.raises(ValueError, match="cifar100"):
        default_model("cifar-100")


# --- the shared interface -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "wrn28_2", "wrn10_1"])
def test_forward_shapes_and_forward_equals_classifier_of_features(name):
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (2, 7) and logits.dtype == torch.float32
    assert feats.shape == (2, model.num_features)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == model.num_features
    assert torch.equal(logits, model.classifier(feats))


def test_tiny_has_batchnorm_buffers_that_move_in_one_step():
    model = build_model("tiny", 10).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(8, 3, 32, 32))
    after = model.state_dict()
    assert any(k.endswith("num_batches_tracked") and after[k].dtype == torch.long for k in after)
    assert not torch.equal(before["body.1.running_mean"], after["body.1.running_mean"])
    assert after["body.1.num_batches_tracked"].item() == 1


@pytest.mark.parametrize("name", ["tiny", "wrn10_1"])
def test_init_is_deterministic_under_manual_seed(name):
    torch.manual_seed(123)
    a = build_model(name, 10).state_dict()
    torch.manual_seed(123)
    b = build_model(name, 10).state_dict()
    torch.manual_seed(124)
    c = build_model(name, 10).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# --- timm adapter -------------------------------------------------------------------------------------------


class FakeTimmNet(nn.Module):
    """The slice of timm's model interface the adapter uses."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_features = 12
        self.conv = nn.Conv2d(3, self.num_features, 3, padding=1)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x):
        return self.conv(x)  # unpooled, like timm

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return FakeTimmNet(kwargs["num_classes"])

    module = types.ModuleType("timm")
    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


def test_timm_adapter_creates_the_named_model_without_pretrained_weights(fake_timm):
    model = build_model("timm:resnet18", 5)
    assert fake_timm == [("resnet18", {"pretrained": False, "num_classes": 5})]
    assert isinstance(model, TimmAdapter)


def test_timm_adapter_exposes_the_shared_interface(fake_timm):
    torch.manual_seed(0)
    model = build_model("timm:fake_net", 5).eval()
    x = torch.randn(3, 3, 16, 16)
    feats = model.features(x)
    assert model.num_features == 12 and feats.shape == (3, 12)
    assert model.classifier is model.model.fc
    assert torch.equal(model(x), model.classifier(feats))
    assert torch.equal(model(x), model.model(x))  # same as timm's own forward
    # the classifier is not registered twice: each weight appears once in the state dict
    assert sorted(model.state_dict()) == ["model.conv.bias", "model.conv.weight", "model.fc.bias",
                                          "model.fc.weight"]


def test_timm_adapter_prefers_head_hidden_size(fake_timm):
    net = FakeTimmNet(5)
    net.head_hidden_size = 20
    assert TimmAdapter(net).num_features == 20


def test_missing_timm_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError) as info:
        build_model("timm:resnet18", 10)
    message = str(info.value)
    assert "pip install 'ssl-bench[timm]'" in message and "torchvision" in message and "timm:resnet18" in message
