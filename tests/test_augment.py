"""ssl_bench.augment against Pillow on real CIFAR-10 images: ops, the reference pool, composition, errors.

Tolerances (why each is what it is):
* LUT ops (autocontrast, equalize, posterize, solarize) and the integer-exact ops (brightness, color,
  contrast, sharpness are float32 blends reproduced in Pillow's order of operations): we require max |diff| <=
  1 grey level and >= 99.9 % of values exactly equal. On x86-64 they are bit-exact; the 1-level slack is for
  Pillow builds whose C compiler contracts `in1 + alpha * (in2 - in1)` into a fused multiply-add (e.g.
  aarch64), which moves a truncation boundary by one level for a handful of values.
* Geometric ops (rotate, shear, translate): Pillow's NEAREST affine runs in 16.16 fixed point and we replay
  that integer arithmetic, so they are bit-exact here; we require >= 99.9 % of pixels equal, the slack
  covering a 1-ulp difference between torch's and libm's cos/sin that can flip one fixed-point rounding (a
  pixel taken from its neighbour or the fill).
"""

from __future__ import annotations

import dataclasses
import functools
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
    RAMC_CUTOUT_SIZE,
    RAMC_LEVELS,
    RAMC_NUM_OPS,
    RAMC_OP_PROB,
    RAMC_OPS,
    STRONG_POLICIES,
    RamcDraws,
    apply_op,
    apply_ramc,
    cutout,
    draw_ramc,
    normalize,
    ramc_magnitude,
    strong_augment,
    weak_augment,
)

N_IMAGES = 16


@pytest.fixture(scope="module")
def images(shared_data) -> np.ndarray:
    """16 real CIFAR-10 training images, uint8 (16, 32, 32, 3) HWC RGB."""
    with np.load(shared_data / "cifar10_subset.npz") as data:
        return data["x_train"][:N_IMAGES].copy()


@pytest.fixture(scope="module")
def many_images(shared_data) -> np.ndarray:
    """512 real CIFAR-10 training images (enough for every reference-pool op and op pair to occur)."""
    with np.load(shared_data / "cifar10_subset.npz") as data:
        return data["x_train"][:512].copy()


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
    """Independent of the draw order: each output is one of the 2 x 9 x 9 flip/translate candidates, and over
    a large batch both flip states and all 9 x 9 offsets occur."""
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
# Weak / strong flip draws, replayed with numpy


def replay_weak_draws(images: np.ndarray, g: torch.Generator, flip: bool) -> np.ndarray:
    """The flip / shift step replayed from its documented draws (u_flip, top, left; u_flip always drawn)."""
    n = len(images)
    u_flip = torch.rand(n, generator=g)
    top = torch.randint(0, 9, (n,), generator=g)
    left = torch.randint(0, 9, (n,), generator=g)
    out = []
    for i, img in enumerate(images):
        src = img[:, ::-1] if (flip and u_flip[i] < 0.5) else img
        padded = np.pad(src, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        out.append(padded[top[i] : top[i] + 32, left[i] : left[i] + 32])
    return np.stack(out)


def test_weak_without_flip_never_mirrors_an_asymmetric_image(images):
    """flip=False (the reference's SVHN augmentation, shift only): over 400 draws of one asymmetric image
    every output is one of its 81 unflipped shifts and all 81 occur; with flip=True mirrored shifts appear."""
    img = images[0].copy()
    img[:, :8] = 255  # a white band on the left makes the image clearly asymmetric
    candidates = weak_candidates(img)
    unflipped = {c.tobytes() for c in candidates[:81]}
    flipped = {c.tobytes() for c in candidates[81:]}
    assert len(unflipped) == 81 and not unflipped & flipped
    x = to_nchw(np.repeat(img[None], 400, axis=0))
    out = [o.tobytes() for o in to_hwc(weak_augment(x, torch.Generator().manual_seed(4), flip=False))]
    assert set(out) <= unflipped and len(set(out)) == 81
    out = [o.tobytes() for o in to_hwc(weak_augment(x, torch.Generator().manual_seed(4), flip=True))]
    assert 0.4 < np.mean([o in flipped for o in out]) < 0.6


@pytest.mark.parametrize("policy", [None, *STRONG_POLICIES])
def test_flip_false_changes_only_the_samples_that_would_have_been_mirrored(images, policy):
    """Both settings consume the same draws, so with one seed the outputs agree exactly where u_flip >= 0.5
    (no flip drawn) and differ where u_flip < 0.5 (a flip drawn, refused by flip=False) on these asymmetric
    images. policy None = weak_augment."""
    x = to_nchw(images)
    aug = weak_augment if policy is None else functools.partial(strong_augment, policy=policy)
    with_flip = aug(x, torch.Generator().manual_seed(21), flip=True)
    without = aug(x, torch.Generator().manual_seed(21), flip=False)
    drew_flip = torch.rand(N_IMAGES, generator=torch.Generator().manual_seed(21)) < 0.5
    same = (with_flip == without).flatten(1).all(dim=1)
    assert drew_flip.any() and (~drew_flip).any()
    assert torch.equal(same, ~drew_flip)


# ------------------------------------------------------------------------------------------------------------
# Strong augmentation, policy "ramc": the reference pool against an independent per-image re-implementation
#
# Written from google-research/fixmatch third_party/auto_augment/augmentations.py (the op definitions,
# pil_wrap / pil_unwrap, apply_policy, cutout_numpy) and libml/augment.py (AugmentPoolRAMC): each image is a
# Pillow RGBA image as there, each op is the Pillow call the reference makes, and the random choices come from
# draw_ramc.


def ref_level(level: int, maxval: float, as_int: bool) -> float:
    """The reference's level scaling: level * maxval / 10, truncated to an int for int_parameter."""
    value = level * maxval / 10
    return int(value) if as_int else value


def ref_signed(value: float, negate: bool) -> float:
    return -value if negate else value


def ref_rgb_op(fn):  # ops the reference runs on convert('RGB') and converts back to RGBA (alpha -> opaque)
    return lambda im, level, negate: fn(im.convert("RGB"), level).convert("RGBA")


def ref_enhance(cls):
    return lambda im, level, negate: cls(im).enhance(ref_level(level, 1.8, False) + 0.1)


def ref_affine(coefficients):
    return lambda im, level, negate: im.transform(
        im.size, Image.Transform.AFFINE, coefficients(level, negate)
    )


REFERENCE_POOL = {  # RANDOM_POLICY_OPS (libml/augment.py) -> (Pillow image, level, negate) -> Pillow image
    "Identity": lambda im, level, negate: im,
    "AutoContrast": ref_rgb_op(lambda im, level: ImageOps.autocontrast(im)),
    "Equalize": ref_rgb_op(lambda im, level: ImageOps.equalize(im)),
    "Rotate": lambda im, level, negate: im.rotate(ref_signed(ref_level(level, 30, True), negate)),
    "Solarize": ref_rgb_op(lambda im, level: ImageOps.solarize(im, 256 - ref_level(level, 256, True))),
    "Color": ref_enhance(ImageEnhance.Color),
    "Contrast": ref_enhance(ImageEnhance.Contrast),
    "Brightness": ref_enhance(ImageEnhance.Brightness),
    "Sharpness": ref_enhance(ImageEnhance.Sharpness),
    "ShearX": ref_affine(lambda level, neg: (1, ref_signed(ref_level(level, 0.3, False), neg), 0, 0, 1, 0)),
    "TranslateX": ref_affine(lambda level, neg: (1, 0, ref_signed(ref_level(level, 10, True), neg), 0, 1, 0)),
    "TranslateY": ref_affine(lambda level, neg: (1, 0, 0, 0, 1, ref_signed(ref_level(level, 10, True), neg))),
    "Posterize": ref_rgb_op(lambda im, level: ImageOps.posterize(im, 4 - ref_level(level, 4, True))),
    "ShearY": ref_affine(lambda level, neg: (1, 0, 0, ref_signed(ref_level(level, 0.3, False), neg), 1, 0)),
}
REFERENCE_OP_NAMES = tuple(REFERENCE_POOL)  # the reference's order, which draw_ramc's indices follow


def reference_pool_on_one_image(
    img: np.ndarray, ops, levels, applied, negated, cy: int, cx: int
) -> np.ndarray:
    """One image through the reference pool with given choices; returns uint8 HWC with its grey as FILL."""
    as_float = img.astype(np.float32) * np.float32(2.0 / 255) - np.float32(1.0)  # libml/data.py record_parse
    im = Image.fromarray(np.uint8((as_float * 0.5 + 0.5) * 255.0)).convert("RGBA")  # pil_wrap
    for op, level, apply, negate in zip(ops, levels, applied, negated, strict=True):
        if apply:
            im = REFERENCE_POOL[REFERENCE_OP_NAMES[op]](im, int(level), bool(negate))
    rgba = np.asarray(im).astype(np.float64) / 255.0  # pil_unwrap: transparent pixels become 0.0
    out = (rgba[..., :3] - 0.5) / 0.5
    out[rgba[..., 3] == 0] = 0.0
    h, w = out.shape[:2]
    mask = np.ones_like(out)  # cutout_numpy(size=16): the 16 x 16 square at (cy, cx), clipped, times 0
    mask[max(0, cy - 8) : min(h, cy + 8), max(0, cx - 8) : min(w, cx + 8)] = 0
    out = out * mask
    # Back to 0-255. Every real pixel is (v / 255 - 0.5) / 0.5 for an integer v, never exactly 0.0; the
    # reference's grey 0.0 (127.5) has no uint8 value and is FILL (128) in ssl-bench by design (see
    # augment.FILL).
    as_uint8 = np.rint((out * 0.5 + 0.5) * 255.0).astype(np.uint8)
    return np.where(out == 0.0, np.uint8(FILL), as_uint8)


def replay_ramc(images: np.ndarray, seed: int, flip: bool) -> tuple[np.ndarray, RamcDraws]:
    g = torch.Generator().manual_seed(seed)
    shifted = replay_weak_draws(images, g, flip)
    d = draw_ramc(len(images), 32, 32, g)
    out = [
        reference_pool_on_one_image(
            shifted[i], d.ops[:, i].tolist(), d.levels[:, i].tolist(), d.applied[:, i].tolist(),
            d.negated[:, i].tolist(), int(d.cutout_y[i]), int(d.cutout_x[i]),
        )
        for i in range(len(images))
    ]  # fmt: skip
    return np.stack(out), d


def test_ramc_op_names_are_the_reference_pool_in_its_order():
    assert [name.lower().replace("_", "") for name in RAMC_OPS] == [n.lower() for n in REFERENCE_OP_NAMES]
    assert (RAMC_NUM_OPS, RAMC_OP_PROB, RAMC_LEVELS, RAMC_CUTOUT_SIZE) == (2, 0.5, (1, 9), 16)
    assert STRONG_POLICIES[0] == "ramc"


@pytest.mark.parametrize("flip", [True, False])
def test_ramc_equals_the_reference_pool_replayed_per_image_with_pillow(many_images, flip):
    """Bit-exact on 512 real CIFAR-10 images: flip / shift, the wrap quantisation, both rounds with the RGBA
    semantics of the reference (transparent fill, opaque after convert('RGB') ops), pil_unwrap, Cutout."""
    seed = 5 if flip else 6
    ours = to_hwc(strong_augment(to_nchw(many_images), torch.Generator().manual_seed(seed), flip=flip))
    ref, d = replay_ramc(many_images, seed, flip)
    bad = np.flatnonzero((ours != ref).any(axis=(1, 2, 3)))
    assert len(bad) == 0, (
        f"{len(bad)} of {len(ref)} images differ from the per-image reference, e.g. image {bad[0]}: ops "
        f"{[RAMC_OPS[k] for k in d.ops[:, bad[0]]]} levels {d.levels[:, bad[0]].tolist()} applied "
        f"{d.applied[:, bad[0]].tolist()} negated {d.negated[:, bad[0]].tolist()}"
    )
    # The seed exercises what the comparison is about: every op applied at both rounds' positions somewhere,
    # skipped ops, both signs, and a geometric op followed by an opaque (convert('RGB')) op, by an enhance op
    # and by another geometric op.
    applied_ops = {RAMC_OPS[k] for k in d.ops[d.applied].tolist()}
    assert applied_ops == set(RAMC_OPS)
    assert (~d.applied).any() and d.negated[d.applied].any() and (~d.negated[d.applied]).any()
    first, second = (
        [
            RAMC_OPS[k] if a else "skipped"
            for k, a in zip(d.ops[r].tolist(), d.applied[r].tolist(), strict=True)
        ]
        for r in range(2)
    )
    pairs = set(zip(first, second, strict=True))
    geometric = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
    assert any(
        a in geometric and b in {"autocontrast", "equalize", "posterize", "solarize"} for a, b in pairs
    )
    assert any(a in geometric and b in {"color", "contrast", "brightness", "sharpness"} for a, b in pairs)
    assert any(a in geometric and b in geometric for a, b in pairs)


def test_ramc_level_to_magnitude_is_the_reference_mapping_worked_by_hand():
    levels = torch.arange(1, 10)
    expected = {  # augmentations.py: int_parameter = int(l * max / 10), float_parameter = l * max / 10
        "rotate": [3, 6, 9, 12, 15, 18, 21, 24, 27],  # int(3 l) degrees
        "translate_x": [1, 2, 3, 4, 5, 6, 7, 8, 9],  # int(l) pixels
        "solarize": [231, 205, 180, 154, 128, 103, 77, 52, 26],  # 256 - int(25.6 l)
        "posterize": [4, 4, 3, 3, 2, 2, 2, 1, 1],  # 4 - int(0.4 l) bits
        "shear_x": [0.03, 0.06, 0.09, 0.12, 0.15, 0.18, 0.21, 0.24, 0.27],  # 0.03 l
        "contrast": [0.28, 0.46, 0.64, 0.82, 1.0, 1.18, 1.36, 1.54, 1.72],  # 0.18 l + 0.1
    }
    for name, values in expected.items():
        got = ramc_magnitude(name, levels).tolist()
        assert got == pytest.approx(values, abs=1e-12), name
    assert ramc_magnitude("rotate", levels[:2], torch.tensor([True, False])).tolist() == [-3.0, 6.0]
    with pytest.raises(KeyError, match="no magnitude"):
        ramc_magnitude("equalize", levels)


def test_ramc_draws_have_the_reference_distribution():
    """Op probability 0.5, levels uniform on 1..9 (randint(1, 10): 10 excluded), ops uniform on the 14, signs
    fair, Cutout centres over every pixel: checked on 40 000 images at > 5 standard errors."""
    n = 40_000
    d = draw_ramc(n, 32, 32, torch.Generator().manual_seed(0))
    m = 2 * n
    tol = 5 * math.sqrt(0.25 / m)
    assert abs(d.applied.double().mean().item() - 0.5) < tol
    assert abs(d.negated.double().mean().item() - 0.5) < tol
    for values, support in ((d.levels, range(1, 10)), (d.ops, range(len(RAMC_OPS)))):
        counts = torch.bincount(values.flatten(), minlength=max(support) + 1)
        assert set(values.unique().tolist()) == set(support)
        p = 1 / len(support)
        assert ((counts[list(support)].double() / m - p).abs() < 5 * math.sqrt(p * (1 - p) / m)).all()
    assert set(d.cutout_y.unique().tolist()) == set(range(32)) == set(d.cutout_x.unique().tolist())
    assert d.ops.shape == d.levels.shape == (2, n) and d.cutout_y.shape == (n,)


def test_ramc_with_nothing_applied_is_the_wrap_quantised_input_with_a_grey_square(images):
    """Hand-checkable case: no op runs, so the output is the input with grey levels 1..47 lowered by one (the
    reference's float32 round trip) and the 16 x 16 Cutout square in FILL."""
    x = to_nchw(images)
    d = draw_ramc(N_IMAGES, 32, 32, torch.Generator().manual_seed(3))
    d = dataclasses.replace(d, applied=torch.zeros_like(d.applied))
    out = apply_ramc(x, d)
    expected = torch.where((x >= 1) & (x <= 47), x - 1, x)
    for i in range(N_IMAGES):
        cy, cx = int(d.cutout_y[i]), int(d.cutout_x[i])
        expected[i, :, max(0, cy - 8) : cy + 8, max(0, cx - 8) : cx + 8] = FILL
    assert torch.equal(out, expected)


def test_ramc_on_grayscale_equals_one_channel_of_the_replicated_rgb(images):
    gray = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in images])
    x1 = torch.from_numpy(gray).unsqueeze(1)
    d = draw_ramc(N_IMAGES, 32, 32, torch.Generator().manual_seed(8))
    assert torch.equal(apply_ramc(x1, d), apply_ramc(x1.expand(-1, 3, -1, -1).contiguous(), d)[:, :1])


# ------------------------------------------------------------------------------------------------------------
# Strong augmentation, policy "table12": composition, per-sample randomness, Cutout


def replay_strong_with_pillow(images: np.ndarray, seed: int, flip: bool = True) -> tuple[np.ndarray, list]:
    """The Table 12 strong view rebuilt per image: the flip / shift step, then Pillow for every drawn
    RandAugment op, then numpy Cutout, from the draws strong_augment documents (weak draws, ops, magnitudes, a
    spare draw, cutout centres)."""
    n, num_ops = len(images), 2
    g = torch.Generator().manual_seed(seed)
    weak = replay_weak_draws(images, g, flip)
    ops = torch.randint(0, len(OPS), (num_ops, n), generator=g)
    u = torch.rand((num_ops, n), generator=g, dtype=torch.float64)
    torch.rand((num_ops, n), generator=g)  # the spare draw
    cy = torch.randint(0, 32, (n,), generator=g)
    cx = torch.randint(0, 32, (n,), generator=g)
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


@pytest.mark.parametrize("flip", [True, False])
def test_table12_is_weak_then_two_randaugment_ops_then_cutout_as_pillow_would_do_it(images, flip):
    x = to_nchw(images)
    ours = to_hwc(strong_augment(x, torch.Generator().manual_seed(11), flip=flip, policy="table12"))
    ref, drawn = replay_strong_with_pillow(images, seed=11, flip=flip)
    equal = (ours == ref).all(axis=-1).mean()
    assert equal >= 0.999, f"only {equal:.4%} of pixels equal the per-image Pillow pipeline"
    assert len({name for _, name, _ in drawn}) >= 8  # the seed exercises most ops


def test_table12_gives_each_sample_its_own_ops_and_magnitudes(images):
    same = to_nchw(np.repeat(images[:1], 64, axis=0))
    out = strong_augment(same, torch.Generator().manual_seed(0), policy="table12")
    distinct = {bytes(o.numpy()) for o in out}
    assert len(distinct) >= 60, f"only {len(distinct)} distinct strong views of one image in a batch of 64"
    _, drawn = replay_strong_with_pillow(images, seed=0)
    first_round = [(name, mag) for _, name, mag in drawn[::2]]  # (op, magnitude) of round 1, per sample
    assert len({name for name, _ in first_round}) >= 8
    with_magnitude = [(name, mag) for name, mag in first_round if name in MAGNITUDE_RANGES]
    assert len(set(with_magnitude)) == len(with_magnitude)  # no two samples share op and magnitude


AUGMENTERS = [weak_augment, *(functools.partial(strong_augment, policy=p) for p in STRONG_POLICIES)]


def test_same_seed_same_output_different_seed_different_output(images):
    x = to_nchw(images)
    for fn in AUGMENTERS:
        a = fn(x, torch.Generator().manual_seed(123))
        b = fn(x, torch.Generator().manual_seed(123))
        c = fn(x, torch.Generator().manual_seed(124))
        assert torch.equal(a, b), fn
        assert not torch.equal(a, c), fn


def test_shape_dtype_device_preserved_and_input_untouched(images):
    x = to_nchw(images)
    before = x.clone()
    for fn in AUGMENTERS:
        y = fn(x, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
        assert torch.equal(x, before)
    assert normalize(x, (0.5,) * 3, (0.25,) * 3).dtype == torch.float32


@pytest.mark.cuda
def test_runs_on_cuda_deterministically(images):
    x = to_nchw(images).cuda()
    for fn in AUGMENTERS:
        a = fn(x, torch.Generator(device="cuda").manual_seed(9))
        b = fn(x, torch.Generator(device="cuda").manual_seed(9))
        assert a.device.type == "cuda" and torch.equal(a, b)
    # The reference pool with the same draws gives the same images on the GPU as on the CPU.
    d = draw_ramc(N_IMAGES, 32, 32, torch.Generator(device="cuda").manual_seed(9))
    d_cpu = RamcDraws(*(getattr(d, f.name).cpu() for f in dataclasses.fields(d)))
    assert torch.equal(apply_ramc(x, d).cpu(), apply_ramc(x.cpu(), d_cpu))
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
    with pytest.raises(ValueError, match=r"unknown policy 'randaugment'; expected one of ramc, table12"):
        strong_augment(x, torch.Generator(), policy="randaugment")
    with pytest.raises(TypeError, match="flip must be True or False; got 'no'"):
        strong_augment(x, torch.Generator(), flip="no")
    with pytest.raises(TypeError, match="flip must be True or False"):
        weak_augment(x, torch.Generator(), flip=1)
    d = draw_ramc(3, 32, 32, torch.Generator())
    with pytest.raises(ValueError, match=r"draws.ops has shape \(2, 3\).*expected \(2, 2\).*draw_ramc"):
        apply_ramc(x, d)
    with pytest.raises(ValueError, match="levels must lie in 1..9"):
        d = draw_ramc(2, 32, 32, torch.Generator())
        apply_ramc(x, dataclasses.replace(d, levels=d.levels * 0 + 10))
    with pytest.raises(ValueError, match="height must be an int >= 1"):
        draw_ramc(2, 0, 32, torch.Generator())
    with pytest.raises(KeyError, match="unknown op 'invert'"):
        apply_op("invert", x, None)
    with pytest.raises(ValueError, match="needs magnitudes"):
        apply_op("rotate", x, None)
    with pytest.raises(ValueError, match="one magnitude per image"):
        apply_op("rotate", x, torch.zeros(3))


def test_module_does_not_need_torchvision():
    assert "torchvision" not in augment.__dict__
