"""ssl_bench.augment against Pillow on real CIFAR-10 images, plus the FixMatch composition, randomness and errors.

Tolerances (why each is what it is):
* LUT ops (autocontrast, equalize, posterize, solarize) and the integer-exact ops (brightness, color, contrast,
  sharpness are float32 blends reproduced in Pillow's order of operations): we require max |diff| <= 1 grey level
  and >= 99.9 % of values exactly equal. On x86-64 they are bit-exact; the 1-level slack is for Pillow builds whose
  C compiler contracts `in1 + alpha * (in2 - in1)` into a fused multiply-add (e.g. aarch64), which moves a
  truncation boundary by one level for a handful of values.
* Geometric ops (rotate, shear, translate): Pillow's NEAREST affine runs in 16.16 fixed point and we replay that
  integer arithmetic, so they are bit-exact here; we require >= 99.9 % of pixels equal, the slack covering a
  1-ulp difference between torch's and libm's cos/sin that can flip one fixed-point rounding (a pixel taken from
  its neighbour or the fill).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from ssl_bench import augment
from ssl_bench.augment import (
    CUTOUT_FRACTION,
    FILL,
    MAGNITUDE_RANGES,
    OPS,
    apply_op,
    cutout,
    normalize,
    strong_augment,
    weak_augment,
)

N_IMAGES = 16


@pytest.fixture(scope="module")
def images(shared_data) -> np.ndarray:
    """16 real CIFAR-10 training images, uint8 (16, 32, 32, 3) HWC RGB."""
    with np.load(shared_data / "cifar10_subset.npz") as data:
        return data["x_train"][:N_IMAGES].copy()


def to_nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(0, 3, 1, 2).contiguous()


def to_hwc(nchw: torch.Tensor) -> np.ndarray:
    return nchw.permute(0, 2, 3, 1).cpu().numpy()


def pillow_op(name: str, img: np.ndarray, magnitude: float) -> np.ndarray:
    """The reference: one op on one HWC uint8 image with Pillow, the library FixMatch's code augments with."""
    im = Image.fromarray(img)
    gray = (FILL,) * 3
    h, w = img.shape[:2]
    if name == "identity":
        out = im
    elif name == "autocontrast":
        out = ImageOps.autocontrast(im)
    elif name == "equalize":
        out = ImageOps.equalize(im)
    elif name == "brightness":
        out = ImageEnhance.Brightness(im).enhance(magnitude)
    elif name == "color":
        out = ImageEnhance.Color(im).enhance(magnitude)
    elif name == "contrast":
        out = ImageEnhance.Contrast(im).enhance(magnitude)
    elif name == "sharpness":
        out = ImageEnhance.Sharpness(im).enhance(magnitude)
    elif name == "posterize":
        out = ImageOps.posterize(im, int(magnitude))
    elif name == "solarize":
        out = ImageOps.solarize(im, magnitude)
    elif name == "rotate":  # Pillow's default resample for rotate / transform is NEAREST
        out = im.rotate(magnitude, fillcolor=gray)
    elif name == "shear_x":
        out = im.transform(im.size, Image.Transform.AFFINE, (1, magnitude, 0, 0, 1, 0), fillcolor=gray)
    elif name == "shear_y":
        out = im.transform(im.size, Image.Transform.AFFINE, (1, 0, 0, magnitude, 1, 0), fillcolor=gray)
    elif name == "translate_x":
        out = im.transform(im.size, Image.Transform.AFFINE, (1, 0, magnitude * w, 0, 1, 0), fillcolor=gray)
    elif name == "translate_y":
        out = im.transform(im.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, magnitude * h), fillcolor=gray)
    else:
        raise KeyError(name)
    return np.asarray(out)


# Magnitudes probed per op: the FixMatch range, its end points, and (for ops where Pillow defines it) beyond.
PROBES: dict[str, list[float]] = {
    name: list(np.linspace(lo, hi, N_IMAGES)) for name, (lo, hi) in MAGNITUDE_RANGES.items()
}
PROBES["posterize"] = [1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 4, 6, 8]  # whole bit range, FixMatch's is 4..8
PROBES["solarize"] = [0, 1, 26, 64, 100, 127, 128, 128.5, 129, 160, 200, 231, 250, 255, 255.5, 256]
EXTRA_PROBES = {  # extrapolating enhance factors (Pillow clips) and larger geometric magnitudes
    "brightness": list(np.linspace(0.0, 2.0, N_IMAGES)),
    "color": list(np.linspace(0.0, 2.0, N_IMAGES)),
    "contrast": list(np.linspace(0.0, 2.0, N_IMAGES)),
    "sharpness": list(np.linspace(0.0, 2.0, N_IMAGES)),
    "rotate": list(np.linspace(-180.0, 180.0, N_IMAGES)),
    "shear_x": list(np.linspace(-0.9, 0.9, N_IMAGES)),
    "shear_y": list(np.linspace(-0.9, 0.9, N_IMAGES)),
    "translate_x": list(np.linspace(-1.1, 1.1, N_IMAGES)),
    "translate_y": list(np.linspace(-1.1, 1.1, N_IMAGES)),
}
GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


def assert_matches_pillow(name: str, ours: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
    if name in GEOMETRIC:
        pixel_equal = (diff == 0).all(axis=-1).mean()
        assert pixel_equal >= 0.999, f"{name}: only {pixel_equal:.4%} of pixels equal Pillow's"
    else:
        assert diff.max() <= 1, f"{name}: max |diff| {diff.max()} grey levels"
        assert (diff == 0).mean() >= 0.999, f"{name}: only {(diff == 0).mean():.4%} values equal Pillow's"


@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_pillow_on_real_images(images, name):
    probe_sets = [PROBES.get(name, [0.0] * N_IMAGES)] + ([EXTRA_PROBES[name]] if name in EXTRA_PROBES else [])
    for probes in probe_sets:
        mags = torch.tensor(probes, dtype=torch.float64)
        ours = to_hwc(apply_op(name, to_nchw(images), mags if name in MAGNITUDE_RANGES else None))
        ref = np.stack([pillow_op(name, img, float(m)) for img, m in zip(images, probes, strict=True)])
        assert_matches_pillow(name, ours, ref)


def test_ops_work_on_grayscale_images(images):
    gray = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in images])
    x = torch.from_numpy(gray).unsqueeze(1)
    mags = torch.full((N_IMAGES,), 0.4, dtype=torch.float64)
    for name, ref_fn in [
        ("contrast", lambda im: ImageEnhance.Contrast(im).enhance(0.4)),
        ("color", lambda im: ImageEnhance.Color(im).enhance(0.4)),
        ("equalize", ImageOps.equalize),
    ]:
        ours = apply_op(name, x, mags if name in MAGNITUDE_RANGES else None)[:, 0].numpy()
        ref = np.stack([np.asarray(ref_fn(Image.fromarray(g))) for g in gray])
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1, name


def test_magnitude_ranges_are_fixmatch_table_12():
    assert OPS == (
        "identity", "autocontrast", "brightness", "color", "contrast", "equalize", "posterize",
        "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
    )  # fmt: skip
    for enhance in ("brightness", "color", "contrast", "sharpness"):
        assert MAGNITUDE_RANGES[enhance] == (0.05, 0.95)
    assert MAGNITUDE_RANGES["posterize"] == (4, 8)
    assert MAGNITUDE_RANGES["rotate"] == (-30.0, 30.0)
    assert MAGNITUDE_RANGES["solarize"] == (0.0, 256.0)
    for geo in ("shear_x", "shear_y", "translate_x", "translate_y"):
        assert MAGNITUDE_RANGES[geo] == (-0.3, 0.3)
    assert CUTOUT_FRACTION == 0.5 and FILL == 128


# ------------------------------------------------------------------------------------------------------------
# Weak augmentation


def weak_candidates(img: np.ndarray, pad: int = 4) -> list[np.ndarray]:
    """Every image flip + reflect-pad + crop can produce (FixMatch: mirror first, then shift)."""
    h, w = img.shape[:2]
    out = []
    for flipped in (img, img[:, ::-1]):
        padded = np.pad(flipped, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        out += [padded[t : t + h, s : s + w] for t in range(2 * pad + 1) for s in range(2 * pad + 1)]
    return out


def test_weak_output_is_exactly_the_flip_and_crop_of_the_drawn_parameters(images):
    """Replays the documented draws (u_flip, top, left) and rebuilds the output with numpy."""
    x = to_nchw(images)
    out = to_hwc(weak_augment(x, torch.Generator().manual_seed(7)))
    g = torch.Generator().manual_seed(7)
    flip = torch.rand(N_IMAGES, generator=g) < 0.5
    top = torch.randint(0, 9, (N_IMAGES,), generator=g)
    left = torch.randint(0, 9, (N_IMAGES,), generator=g)
    for i, img in enumerate(images):
        src = img[:, ::-1] if flip[i] else img
        padded = np.pad(src, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        np.testing.assert_array_equal(out[i], padded[top[i] : top[i] + 32, left[i] : left[i] + 32])


def test_weak_output_is_a_flip_and_or_translate_of_its_input(images):
    """Independent of the draw order: each output is one of the 2 x 9 x 9 flip/translate candidates, and over a
    large batch both flip states and all 9 x 9 offsets occur."""
    out = to_hwc(weak_augment(to_nchw(images), torch.Generator().manual_seed(3)))
    for img, o in zip(images, out, strict=True):
        assert any(np.array_equal(o, c) for c in weak_candidates(img))

    many = np.repeat(images[:1], 400, axis=0)
    out = to_hwc(weak_augment(to_nchw(many), torch.Generator().manual_seed(4)))
    lookup = {c.tobytes(): k for k, c in enumerate(weak_candidates(images[0]))}
    assert (
        len(lookup) == 162
    )  # the candidates of a natural image are distinct: k identifies (flip, top, left)
    hits = [lookup[o.tobytes()] for o in out]
    flips = np.array(hits) >= 81
    assert 0.4 < flips.mean() < 0.6
    assert len({h % 81 for h in hits}) == 81


# ------------------------------------------------------------------------------------------------------------
# Strong augmentation: composition, per-sample randomness, Cutout


def replay_strong_with_pillow(images: np.ndarray, seed: int, num_ops: int = 2) -> tuple[np.ndarray, list]:
    """FixMatch's strong view rebuilt per image: our weak step, then Pillow for every drawn RandAugment op, then
    numpy Cutout — from the draws strong_augment documents (weak draws, ops, magnitudes, apply, cutout)."""
    n = len(images)
    g = torch.Generator().manual_seed(seed)
    weak = to_hwc(weak_augment(to_nchw(images), g))
    ops = torch.randint(0, len(OPS), (num_ops, n), generator=g)
    u = torch.rand((num_ops, n), generator=g, dtype=torch.float64)
    torch.rand((num_ops, n), generator=g)  # apply draws, unused at op_prob = 1
    cy = torch.randint(0, 32, (n, 1, 1), generator=g).view(n)
    cx = torch.randint(0, 32, (n, 1, 1), generator=g).view(n)
    out, drawn = [], []
    for i in range(n):
        img = weak[i]
        for r in range(num_ops):
            name = OPS[int(ops[r, i])]
            mag = 0.0
            if name in MAGNITUDE_RANGES:
                lo, hi = MAGNITUDE_RANGES[name]
                mag = (
                    lo + math.floor(u[r, i] * (hi - lo + 1))
                    if name == "posterize"
                    else lo + float(u[r, i]) * (hi - lo)
                )
                assert lo <= mag <= hi
            drawn.append((i, name, mag))
            img = pillow_op(name, img, mag)
        img = img.copy()
        img[max(0, cy[i] - 8) : cy[i] + 8, max(0, cx[i] - 8) : cx[i] + 8] = FILL
        out.append(img)
    return np.stack(out), drawn


def test_strong_is_weak_then_two_randaugment_ops_then_cutout_as_pillow_would_do_it(images):
    x = to_nchw(images)
    ours = to_hwc(strong_augment(x, torch.Generator().manual_seed(11)))
    ref, drawn = replay_strong_with_pillow(images, seed=11)
    equal = (ours == ref).all(axis=-1).mean()
    assert equal >= 0.999, f"only {equal:.4%} of pixels equal the per-image Pillow pipeline"
    assert len({name for _, name, _ in drawn}) >= 8  # the seed exercises most ops


def test_strong_with_no_ops_and_no_cutout_is_the_weak_view(images):
    x = to_nchw(images)
    strong = strong_augment(x, torch.Generator().manual_seed(5), num_ops=0, cutout_fraction=0.0)
    weak = weak_augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(strong, weak)
    strong = strong_augment(x, torch.Generator().manual_seed(5), op_prob=0.0, cutout_fraction=0.0)
    assert torch.equal(strong, weak)


def test_each_sample_gets_its_own_ops_and_magnitudes(images):
    same = to_nchw(np.repeat(images[:1], 64, axis=0))
    out = strong_augment(same, torch.Generator().manual_seed(0), cutout_fraction=0.0)
    distinct = {bytes(o.numpy()) for o in out}
    assert len(distinct) >= 60, f"only {len(distinct)} distinct strong views of one image in a batch of 64"
    _, drawn = replay_strong_with_pillow(images, seed=0)
    first_round = [(name, mag) for _, name, mag in drawn[::2]]  # (op, magnitude) of round 1, per sample
    assert len({name for name, _ in first_round}) >= 8
    with_magnitude = [(name, mag) for name, mag in first_round if name in MAGNITUDE_RANGES]
    assert len(set(with_magnitude)) == len(with_magnitude)  # no two samples share op and magnitude


def test_same_seed_same_output_different_seed_different_output(images):
    x = to_nchw(images)
    for fn in (weak_augment, strong_augment):
        a = fn(x, torch.Generator().manual_seed(123))
        b = fn(x, torch.Generator().manual_seed(123))
        c = fn(x, torch.Generator().manual_seed(124))
        assert torch.equal(a, b), fn.__name__
        assert not torch.equal(a, c), fn.__name__


def test_shape_dtype_device_preserved_and_input_untouched(images):
    x = to_nchw(images)
    before = x.clone()
    for fn in (weak_augment, strong_augment):
        y = fn(x, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
        assert torch.equal(x, before)
    assert normalize(x, (0.5,) * 3, (0.25,) * 3).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_deterministically(images):
    x = to_nchw(images).cuda()
    for fn in (weak_augment, strong_augment):
        a = fn(x, torch.Generator(device="cuda").manual_seed(9))
        b = fn(x, torch.Generator(device="cuda").manual_seed(9))
        assert a.device.type == "cuda" and torch.equal(a, b)
    for name in OPS:  # the ops themselves are deterministic: same answer as on the CPU
        mags = torch.linspace(*MAGNITUDE_RANGES.get(name, (0.0, 0.0)), N_IMAGES, dtype=torch.float64)
        if name == "posterize":
            mags = mags.round()
        m = mags if name in MAGNITUDE_RANGES else None
        assert torch.equal(apply_op(name, x, m).cpu(), apply_op(name, x.cpu(), m)), name


def test_cutout_fills_a_gray_half_side_square_at_the_drawn_centre():
    n = 256
    x = torch.zeros((n, 3, 32, 32), dtype=torch.uint8)
    out = cutout(x, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    cy = torch.randint(0, 32, (n, 1, 1), generator=g).view(n)
    cx = torch.randint(0, 32, (n, 1, 1), generator=g).view(n)
    for i in range(n):
        expected = torch.zeros((32, 32), dtype=torch.uint8)
        expected[max(0, cy[i] - 8) : cy[i] + 8, max(0, cx[i] - 8) : cx[i] + 8] = 128
        assert torch.equal(out[i], expected.expand(3, 32, 32)), i
    inner = (cy >= 8) & (cy <= 24) & (cx >= 8) & (cx <= 24)
    assert ((out[inner, 0] == 128).sum(dim=(1, 2)) == 16 * 16).all()
    assert torch.equal(x, torch.zeros_like(x))  # not in place


def test_normalize_is_per_channel_standardisation():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 4, 4)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    m, s = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (mean, std))
    expected = (x.double() / 255 - m) / s
    assert (normalize(x, mean, std).double() - expected).abs().max() < 1e-5
    with pytest.raises(ValueError, match="one mean and one std per channel"):
        normalize(x, (0.5,), (0.5,))


# ------------------------------------------------------------------------------------------------------------
# Errors at the boundary


@pytest.mark.parametrize("fn", [weak_augment, strong_augment])
def test_float_input_is_refused_naming_dtype_and_expectation(fn):
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(TypeError, match=r"uint8 tensor of shape \(N, C, H, W\).*got dtype torch.float32"):
        fn(x, torch.Generator())


@pytest.mark.parametrize("fn", [weak_augment, strong_augment])
def test_channels_last_input_is_refused_naming_shape_and_fix(fn):
    x = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"got shape \(2, 32, 32, 3\).*channels-last.*permute\(0, 3, 1, 2\)"):
        fn(x, torch.Generator())
    with pytest.raises(ValueError, match=r"got shape \(32, 32, 3\)"):
        fn(torch.zeros(32, 32, 3, dtype=torch.uint8), torch.Generator())


def test_bad_arguments_are_refused():
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(TypeError, match="torch.Generator"):
        weak_augment(x, 0)
    with pytest.raises(ValueError, match="num_ops"):
        strong_augment(x, torch.Generator(), num_ops=-1)
    with pytest.raises(ValueError, match="op_prob"):
        strong_augment(x, torch.Generator(), op_prob=1.5)
    with pytest.raises(KeyError, match="unknown op 'invert'"):
        apply_op("invert", x, None)
    with pytest.raises(ValueError, match="needs magnitudes"):
        apply_op("rotate", x, None)
    with pytest.raises(ValueError, match="one magnitude per image"):
        apply_op("rotate", x, torch.zeros(3))


def test_module_does_not_need_torchvision():
    assert "torchvision" not in augment.__dict__
