"""The two ways a RandAugment round runs give the same images bit for bit: static shapes (every op on every
image, picked with torch.where: the GPU's and torch.compile's path) and grouped by op (the CPU's default).

tests/test_augment.py checks the CPU default against the per-image Pillow replay of the reference pool; this
closes the loop for the static path on the same real images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench import augment
from ssl_bench.augment import STRONG_POLICIES, strong_augment


@pytest.fixture(scope="module")
def real_images(shared_data) -> torch.Tensor:
    """512 real CIFAR-10 training images, uint8 NCHW."""
    with np.load(shared_data / "cifar10_subset.npz") as data:
        return torch.from_numpy(data["x_train"][:512].copy()).permute(0, 3, 1, 2).contiguous()


def strong(x: torch.Tensor, seed: int, policy: str, flip: bool, grouped: bool, monkeypatch) -> torch.Tensor:
    monkeypatch.setattr(augment, "GROUP_BY_OP_ON_CPU", grouped)
    return strong_augment(x, torch.Generator().manual_seed(seed), flip=flip, policy=policy)


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("policy", STRONG_POLICIES)
def test_static_rounds_equal_grouped_rounds_on_real_images(real_images, policy, flip, monkeypatch):
    static = strong(real_images, 11, policy, flip, grouped=False, monkeypatch=monkeypatch)
    grouped = strong(real_images, 11, policy, flip, grouped=True, monkeypatch=monkeypatch)
    differ = (static != grouped).flatten(1).any(1).nonzero().flatten().tolist()
    assert differ == [], f"{len(differ)} images differ, first {differ[:5]}"


def test_static_rounds_equal_grouped_rounds_on_grayscale_and_odd_sizes(monkeypatch):
    """One channel and a non-square image: the tables broadcast and the border rules hold the same way."""
    x = torch.randint(0, 256, (64, 1, 20, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for policy in STRONG_POLICIES:
        assert torch.equal(strong(x, 3, policy, True, grouped=False, monkeypatch=monkeypatch),
                           strong(x, 3, policy, True, grouped=True, monkeypatch=monkeypatch))


def test_the_identity_matrix_resamples_every_pixel_onto_itself():
    """Images without a geometric op go through the shared resampling pass with (1, 0, 0, 0, 1, 0)."""
    x = torch.randint(0, 256, (4, 4, 9, 13), dtype=torch.uint8)
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64).expand(4, 6)
    assert torch.equal(augment._affine_nearest(x, identity, fill=0), x)


@pytest.mark.parametrize("policy", STRONG_POLICIES)
def test_augment_is_draw_then_apply_on_the_same_stream(policy):
    """weak_augment / strong_augment = apply_* of draw_* from the same generator, leaving it in the same state."""
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    assert torch.equal(augment.weak_augment(x, g1, flip=False), augment.apply_weak(x, augment.draw_weak(32, 32, 32, g2),
                                                                                 flip=False))
    assert torch.equal(strong_augment(x, g1, policy=policy),
                       augment.apply_strong(x, augment.draw_strong(32, 32, 32, g2, policy)))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_apply_refuses_draws_of_another_batch_naming_the_field_and_the_fix():
    x = torch.zeros((4, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"draws.mirrored has shape \(5,\).*expected \(4,\).*draw_weak"):
        augment.apply_weak(x, augment.draw_weak(5, 32, 32, g))
    with pytest.raises(ValueError, match=r"draws.ops has shape \(2, 5\).*draw_strong"):
        strong = augment.draw_strong(4, 32, 32, g)
        augment.apply_strong(x, augment.StrongDraws(strong.weak, augment.draw_ramc(5, 32, 32, g)))
    with pytest.raises(TypeError, match="draw_strong"):
        augment.apply_strong(x, augment.draw_weak(4, 32, 32, g))
    with pytest.raises(ValueError, match="unknown policy 'rand'"):
        augment.draw_strong(4, 32, 32, g, "rand")
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        augment.draw_weak(-1, 32, 32, g)
