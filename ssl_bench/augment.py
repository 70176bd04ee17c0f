"""Batched FixMatch augmentation on the device: weak (flip + shift) and strong (weak + RandAugment + Cutout).

FixMatch (Sohn et al., NeurIPS 2020) trains on two views of every unlabeled image.

Weak view: a random horizontal flip (p = 0.5), then a random translation by up to 12.5 % of the side (4 px on
32x32) by reflect padding and a random crop: ``Primitives.ms(4)`` = ``augment_shift(augment_mirror(x), 4)`` in
google-research/fixmatch libml/augment.py (lines 65-71, 96-97), ``DEFAULT_AUGMENT`` for cifar10 / cifar100
(lines 342-346). For SVHN the reference uses ``Primitives.s(4)``, shift only (lines 100-101, 351-354): digits
are not mirror-symmetric. ``flip=False`` gives that variant (the dataset's ``hflip`` says which applies).

Strong view, policy ``"ramc"`` (the default): the reference RandAugment pool that produced FixMatch (RA)'s
numbers, ``AugmentPoolRAMC`` in libml/augment.py (lines 209-223, inheriting ``AugmentPoolRAM.queue_images``,
lines 195-206), selected by ``--augment=d.d.rac`` (ablation/ab_fixmatch_ra.py line 157; wiring in
``get_augmentation``, lines 388-391). Per image, after the dataset's own weak flip / shift (drawn
independently of the weak view's, ``pair_augment_function`` lines 406-411):

1. pick 2 ops uniformly with replacement from the 14 ``RANDOM_POLICY_OPS`` (lines 37-42), each with its own
   integer level drawn uniformly from 1..9 (``np.random.randint(1, 10)``: magnitude=10 is exclusive, line
   198);
2. apply each op with probability 0.5 (``(op, 0.5, level)``, line 198; ``random.random() < 0.5`` in
   third_party/auto_augment/augmentations.py ``TransformT.pil_transformer``, lines 211-218). The signed ops
   (rotate, shear, translate) negate their magnitude with probability 0.5 (lines 257, 289, 312, 335, 358);
3. Cutout: a 16 x 16 square (``cutout_numpy`` default size=16, augmentations.py lines 66-121, called at
   libml/augment.py line 222) centred on a uniformly drawn pixel, clipped to the image, set to grey.

Level -> Pillow magnitude, augmentations.py (PARAMETER_MAX = 10, ``float_parameter`` l * max / 10 and
``int_parameter`` int(l * max / 10), lines 35, 124-149); l in 1..9:

    identity, autocontrast, equalize   no magnitude                               (lines 226, 234-241)
    rotate        +-int(3 l) degrees: 3, 6, ..., 27                                (lines 254-259)
    shear_x/y     +-0.03 l: AFFINE (1, s, 0, 0, 1, 0) / (1, 0, 0, s, 1, 0)         (lines 274-314)
    translate_x/y +-l pixels (absolute, whatever the image size)                   (lines 320-360)
    solarize      threshold 256 - int(25.6 l): 231, 205, 180, 154, 128, 103, 77, 52, 26   (lines 376-391)
    posterize     bits 4 - int(0.4 l): 4, 4, 3, 3, 2, 2, 2, 1, 1                   (lines 265-268)
    color, contrast, brightness, sharpness   factor 0.18 l + 0.1: 0.28 .. 1.72   (lines 416-430)

The reference runs these on an RGBA Pillow image (``pil_wrap`` / ``pil_unwrap``, lines 152-165), and that
shows in its output; all of it is reproduced here:
* geometric ops bring in transparent black (0, 0, 0, 0); ``pil_unwrap`` turns every transparent pixel into 0.0
  on its [-1, 1] scale, i.e. grey (``FILL``), but autocontrast, equalize, posterize and solarize go through
  ``convert('RGB')``, which makes those pixels opaque black for good. Enhance ops keep the alpha channel;
  contrast's mean, sharpness's smoothing and autocontrast / equalize's histograms see the transparent pixels'
  RGB values.
* ``pil_wrap`` converts the [-1, 1] float image (libml/data.py line 91: ``x * (2 / 255) - 1`` in float32) back
  to uint8 as ``uint8((x * 0.5 + 0.5) * 255)`` in float32, which truncates grey levels 1..47 to one level
  lower; ``_WRAP_LUT`` applies that quantisation (strong view only, as in the reference).

Policy ``"table12"``: the FixMatch paper's description (Sec. 2.3 and Table 12), as ssl-bench did before: the
same flip / shift, then 2 ops from ``OPS`` always applied, each with a continuous magnitude drawn uniformly
from ``MAGNITUDE_RANGES`` (e.g. rotate in [-30, 30] degrees, translate +-30 % of the side, enhance factors in
[0.05, 0.95], solarize threshold in [0, 256]), on RGB with grey fill, then a grey Cutout of half the side
(kekmodel/FixMatch-pytorch's ``fixmatch_augment_pool`` follows the same table). Versus ``"ramc"``: no skipped
ops (ramc leaves an image untouched by RandAugment 25 % of the time), 9 levels instead of continuous
magnitudes, enhance factors below 1 only (ramc: 0.28..1.72, i.e. also sharpening / saturating), posterize to
4..8 bits (ramc: 1..4), solarize thresholds down to 0 (ramc: 26..231), rotation up to 30 degrees (ramc: 3..27
in steps of 3), translation by up to 30 % of the side (ramc: 1..9 px), Cutout of half the side (ramc: 16 px),
and no alpha semantics (grey fill throughout).

Every op is written here on uint8 tensors, batched, with per-sample parameters and no Python loop over
samples: samples are grouped by op (one ``argsort`` per RandAugment round) and each colour op runs once on its
group; the geometric ops of a round share one nearest-neighbour resampling pass. Reasons for writing the ops
by hand instead of using a library: torchvision cannot be imported in this project (and its v2 RandAugment,
like kornia's, draws ONE op set per call for the whole batch, which is not the reference's per-image
RandAugment); kornia is not a dependency; and a hand-written op costs a few tensor kernels per call. Every op
reproduces Pillow (the library the reference augments with) bit for bit or to within one grey level;
``tests/test_augment.py`` checks each op against Pillow and the whole ``"ramc"`` pool against a per-image
Pillow re-implementation on real CIFAR-10 images.

Randomness: every draw comes from the ``torch.Generator`` passed in, which must live on the batch's device,
and the draws are made in a fixed order and fixed shapes, so the same seed gives the same images on the same
device. ``draw_ramc`` / ``apply_ramc`` split the reference pool into its draws and their deterministic
application.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CUTOUT_FRACTION",
    "FILL",
    "MAGNITUDE_RANGES",
    "OPS",
    "RAMC_CUTOUT_SIZE",
    "RAMC_LEVELS",
    "RAMC_NUM_OPS",
    "RAMC_OPS",
    "RAMC_OP_PROB",
    "STRONG_POLICIES",
    "RamcDraws",
    "apply_op",
    "apply_ramc",
    "cutout",
    "draw_ramc",
    "normalize",
    "ramc_magnitude",
    "strong_augment",
    "weak_augment",
]

# Strong augmentation policies, by name; the first is the default (the reference's, see the module docstring).
STRONG_POLICIES: tuple[str, ...] = ("ramc", "table12")

# ------------------------------------------------------------------------------------------------------------
# "ramc": google-research/fixmatch AugmentPoolRAMC (libml/augment.py) with
# third_party/auto_augment/augmentations.py

# `RANDOM_POLICY_OPS`, libml/augment.py lines 37-42, in the reference's order (draw indices map onto it).
RAMC_OPS: tuple[str, ...] = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "contrast", "brightness",
    "sharpness", "shear_x", "translate_x", "translate_y", "posterize", "shear_y",
)  # fmt: skip
RAMC_NUM_OPS = 2  # AugmentPoolRAMC(nops=2), libml/augment.py lines 369, 391
RAMC_OP_PROB = 0.5  # (op, 0.5, level), libml/augment.py line 198
# np.random.randint(1, magnitude) with magnitude=10 for 'rac' (lines 198, 389): levels 1..9 inclusive.
RAMC_LEVELS = (1, 9)
RAMC_CUTOUT_SIZE = 16  # cutout_numpy(img, size=16) default, augmentations.py line 102; pixels, any image size
# Ops that go through convert('RGB'): their output is fully opaque (augmentations.py lines 234-241, 268, 391).
_RAMC_OPAQUE = frozenset({"autocontrast", "equalize", "posterize", "solarize"})
_RAMC_ENHANCE = ("color", "contrast", "brightness", "sharpness")
_RAMC_SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")

# ------------------------------------------------------------------------------------------------------------
# "table12": the FixMatch paper's Table 12 description

# The 14 RandAugment ops of the paper's Table 12 (the same set as RANDOM_POLICY_OPS; this order fixes the
# draws).
OPS: tuple[str, ...] = (
    "identity", "autocontrast", "brightness", "color", "contrast", "equalize", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)  # fmt: skip

# Magnitude ranges, sampled uniformly per sample and per application (FixMatch paper, Sec. 2.3: a RandAugment
# variant that draws each op's magnitude at random from a predefined range instead of one global magnitude;
# the ranges are the paper's Table 12, reproduced as `fixmatch_augment_pool` in kekmodel/FixMatch-pytorch).
# Units are those of the Pillow call the op reproduces:
MAGNITUDE_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.05, 0.95),  # ImageEnhance.Brightness factor B; Table 12: B in [0.05, 0.95]
    "color": (0.05, 0.95),  # ImageEnhance.Color factor C; Table 12: C in [0.05, 0.95]
    "contrast": (0.05, 0.95),  # ImageEnhance.Contrast factor C; Table 12: C in [0.05, 0.95]
    "sharpness": (0.05, 0.95),  # ImageEnhance.Sharpness factor S; Table 12: S in [0.05, 0.95]
    "posterize": (4, 8),  # ImageOps.posterize bits B, an integer; Table 12: B in [4, 8]
    "rotate": (-30.0, 30.0),  # Image.rotate degrees (counter-clockwise); Table 12: theta in [-30, 30]
    "shear_x": (-0.3, 0.3),  # Image.transform AFFINE (1, R, 0, 0, 1, 0); Table 12: R in [-0.3, 0.3]
    "shear_y": (-0.3, 0.3),  # Image.transform AFFINE (1, 0, 0, R, 1, 0); Table 12: R in [-0.3, 0.3]
    "solarize": (0.0, 256.0),  # ImageOps.solarize threshold in grey levels = 256 T; Table 12: T in [0, 1]
    "translate_x": (-0.3, 0.3),  # shift by lambda x width px; Table 12: lambda in [-0.3, 0.3]
    "translate_y": (-0.3, 0.3),  # shift by lambda x height px; Table 12: lambda in [-0.3, 0.3]
}
# identity, autocontrast and equalize take no magnitude.

# Cutout side as a fraction of the image side for "table12" (16 / 32 on CIFAR, as the reference's 16 px).
CUTOUT_FRACTION = 0.5

# ------------------------------------------------------------------------------------------------------------
# Shared

# Grey for the pixels geometric ops bring in from outside the image and for the Cutout square. The reference
# works on images scaled to [-1, 1]: `pil_unwrap` sets transparent pixels to 0 and `cutout_numpy` multiplies
# the square by 0, i.e. 127.5 on the 0-255 scale, which uint8 cannot hold; the reference code's own float ->
# uint8 conversion (`np.round(127.5 * (1 + x))` in libml/ctaugment.py) turns 0 into 128.
# (The popular PyTorch port fills geometric ops with black and Cutout with 127.)
FILL = 128

# Weak translation: reflect-pad by 4 px and random-crop 32x32 (libml/augment.py `augment_shift(x, 4)` for
# CIFAR and SVHN, 12 px for 96x96 STL-10): 12.5 % of the side.
TRANSLATE_FRACTION = 0.125

_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_OP_INDEX = {name: i for i, name in enumerate(OPS)}
# Order in which a RandAugment round processes its groups: colour ops, then the geometric ops side by side.
_GROUP_ORDER = tuple(op for op in OPS if op not in _GEOMETRIC) + _GEOMETRIC
_GROUP_RANK = torch.tensor([_GROUP_ORDER.index(op) for op in OPS])
_RAMC_GROUP_ORDER = tuple(op for op in RAMC_OPS if op not in _GEOMETRIC) + _GEOMETRIC
_RAMC_GROUP_RANK = torch.tensor([_RAMC_GROUP_ORDER.index(op) for op in RAMC_OPS])
_RAMC_IDENTITY = RAMC_OPS.index("identity")


def _wrap_lut() -> torch.Tensor:
    """The reference's uint8 -> float -> uint8 round trip as a 256-entry table (see the module docstring).

    libml/data.py line 91 maps v to float32(v) * float32(2 / 255) - 1; augmentations.py `pil_wrap` (line 155)
    maps that back with uint8((x * 0.5 + 0.5) * 255.0), all in float32 (NumPy keeps a float32 array float32
    under a Python float), and the uint8 cast truncates. Evaluated here with the same float32 operations in
    the same order.
    """
    v = torch.arange(256, dtype=torch.float32)
    x = v * torch.tensor(2.0 / 255, dtype=torch.float32) - 1.0
    return torch.trunc((x * 0.5 + 0.5) * 255.0).to(torch.uint8)


_WRAP_LUT = _wrap_lut()


def _pillow_rotation_table() -> torch.Tensor:
    """(360, 3) float64: Pillow's Image.rotate coefficients (a = cos, b = sin, d = -sin of -radians(angle),
    each rounded to 15 decimals, angle taken mod 360) for every integer angle, computed with Python's math and
    round exactly as Image.rotate does, so that the fixed-point NEAREST resampling picks the same pixels bit
    for bit. (Only integer angles occur in "ramc"; Python's decimal rounding has no exact torch
    equivalent.)"""
    rows = []
    for degrees in range(360):
        angle = -math.radians(degrees)
        rows.append((round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15)))
    return torch.tensor(rows, dtype=torch.float64)


_PILLOW_ROTATION = _pillow_rotation_table()

# ------------------------------------------------------------------------------------------------------------
# Input checks (the boundary: everything inside trusts its inputs)


def _check_images(x: object, caller: str) -> torch.Tensor:
    expected = "a uint8 tensor of shape (N, C, H, W) with C = 1 or 3 (raw 0-255 pixels, channels first)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{caller} expects {expected}; got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(
            f"{caller} expects {expected}; got dtype {x.dtype} with shape {tuple(x.shape)}. "
            "Augment the raw uint8 images and call normalize() afterwards."
        )
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        hint = ""
        if x.dim() == 4 and x.shape[-1] in (1, 3):
            hint = " It looks channels-last (N, H, W, C): pass x.permute(0, 3, 1, 2)."
        elif x.dim() == 3:
            hint = " For a single image pass x.unsqueeze(0)."
        raise ValueError(f"{caller} expects {expected}; got shape {tuple(x.shape)}.{hint}")
    return x


def _check_generator(generator: object, x: torch.Tensor, caller: str) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{caller} expects a torch.Generator; got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(
            f"{caller}: the generator lives on {generator.device} but the images on {x.device}; "
            f"create it with torch.Generator(device={str(x.device)!r})"
        )
    return generator


# ------------------------------------------------------------------------------------------------------------
# Building blocks


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L as (M, 1, H, W) uint8.

    Pillow documents L = R * 299/1000 + G * 587/1000 + B * 114/1000 and computes it in 16-bit fixed point with
    rounding (`L24` in libImaging/Convert.c): (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16. The
    fixed-point form is used here because it is what Pillow outputs, bit for bit.
    """
    if x.shape[1] == 1:
        return x
    xi = x.to(torch.int32)
    gray = (xi[:, 0:1] * 19595 + xi[:, 1:2] * 38470 + xi[:, 2:3] * 7471 + 0x8000) >> 16
    return gray.to(torch.uint8)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend(degenerate, x, factor), the core of every ImageEnhance op.

    libImaging/Blend.c computes `in1 + alpha * (in2 - in1)` in C float and truncates to uint8 (clipping to
    [0, 255] when alpha is outside [0, 1]); float32 reproduces it. `degenerate` broadcasts against x.
    """
    d = degenerate.to(torch.float32)
    out = (x.to(torch.float32) - d) * factor.to(torch.float32).view(-1, 1, 1, 1) + d
    return out.clamp_(0.0, 255.0).to(torch.uint8)  # float -> uint8 truncates, as the C cast does


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) lookup: x (M, C, H, W) uint8, lut (M, C, 256) uint8."""
    m, c, h, w = x.shape
    return lut.gather(2, x.reshape(m, c, h * w).to(torch.int64)).view(m, c, h, w)


def _gather_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """out[m, :, i, j] = x.flatten(2)[m, :, index[m, i, j]]: one gather over the flattened image.

    x (M, C, H', W') uint8; index (M, H, W) int64 into H' * W' (broadcastable over M); out (M, C, H, W).
    """
    m, c = x.shape[:2]
    h, w = index.shape[-2:]
    flat = index.expand(m, h, w).reshape(m, 1, h * w).expand(m, c, h * w)
    return x.reshape(m, c, -1).gather(2, flat).view(m, c, h, w)


def _affine_nearest(x: torch.Tensor, matrix: torch.Tensor, fill: int) -> torch.Tensor:
    """Pillow's Image.transform(size, AFFINE, (a, b, c, d, e, f), NEAREST, fillcolor=fill), batched.

    For the output pixel (i, j) Pillow samples the input at (a x + b y + c, d x + e y + f) with x = j + 0.5,
    y = i + 0.5 (pixel centres) and takes the pixel containing that point. For NEAREST it does so in 16.16
    fixed point (`affine_fixed` in libImaging/Geometry.c): every coefficient becomes floor(v * 65536 + 0.5)
    and the source index is (c' + j a' + i b') >> 16. Doing the same integer arithmetic here reproduces Pillow
    bit for bit in the tests (a float64 floor of the exact coordinate differs on ~0.03 % of rotated pixels).
    `matrix` is (M, 6): one (a, b, c, d, e, f) per sample.

    Why not affine_grid + grid_sample(mode="nearest"): grid_sample rounds (half to even) a float32 coordinate,
    which picks a different pixel than Pillow wherever the point lies near a pixel border, and it needs a
    float copy of the batch. This is the same single batched resampling pass, on uint8, with Pillow's exact
    rule.
    """
    m, _, h, w = x.shape
    mat = matrix.to(torch.float64)
    a, b, c, d, e, f = (mat[:, k].view(m, 1, 1) for k in range(6))

    def fix(v: torch.Tensor) -> torch.Tensor:  # FIX(v) = FLOOR(v * 65536.0 + 0.5)
        return torch.floor(v * 65536.0 + 0.5).to(torch.int32)

    # int32 is plenty: |coefficient| * 65536 * side < 2**31 for sides up to several thousand pixels.
    jj = torch.arange(w, device=x.device, dtype=torch.int32).view(1, 1, w)
    ii = torch.arange(h, device=x.device, dtype=torch.int32).view(1, h, 1)
    src_x = (fix(c + a * 0.5 + b * 0.5) + ii * fix(b) + jj * fix(a)) >> 16
    src_y = (fix(f + d * 0.5 + e * 0.5) + ii * fix(e) + jj * fix(d)) >> 16
    # Out-of-image sources read a one-pixel border of `fill` (clamping to -1 / side lands on it): no mask
    # pass.
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=fill)
    index = (src_y.clamp_(-1, h) + 1) * (w + 2) + src_x.clamp_(-1, w) + 1
    return _gather_pixels(padded, index.to(torch.int64))


def _geometric_matrix(name: str, magnitude: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (M, 6) inverse affine Pillow uses for each geometric op (output pixel -> input point)."""
    mag = magnitude.to(torch.float64)
    one, zero = torch.ones_like(mag), torch.zeros_like(mag)
    if name == "rotate":  # Image.rotate(angle): inverse rotation about the centre, terms in Pillow's order
        theta = -torch.deg2rad(mag)
        cos, sin = torch.cos(theta), torch.sin(theta)
        cx, cy = w / 2.0, h / 2.0
        c = cos * -cx + sin * -cy + cx
        f = -sin * -cx + cos * -cy + cy
        return torch.stack([cos, sin, c, -sin, cos, f], dim=1)
    if name == "shear_x":  # Image.transform(AFFINE, (1, R, 0, 0, 1, 0))
        return torch.stack([one, mag, zero, zero, one, zero], dim=1)
    if name == "shear_y":  # Image.transform(AFFINE, (1, 0, 0, R, 1, 0))
        return torch.stack([one, zero, zero, mag, one, zero], dim=1)
    if name == "translate_x":  # Image.transform(AFFINE, (1, 0, lambda * w, 0, 1, 0))
        return torch.stack([one, zero, mag * w, zero, one, zero], dim=1)
    if name == "translate_y":  # Image.transform(AFFINE, (1, 0, 0, 0, 1, lambda * h))
        return torch.stack([one, zero, zero, zero, one, mag * h], dim=1)
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------------------
# Colour ops: x (M, C, H, W) uint8, magnitude (M,) -> (M, C, H, W) uint8


def _autocontrast(x: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
    """ImageOps.autocontrast(img): per channel, lut[v] = int(v * scale + offset) clipped to [0, 255], with
    scale = 255 / (hi - lo), offset = -lo * scale, lo / hi the channel's min / max; identity if hi <= lo.
    Evaluated in float64 in Pillow's order of operations, so it truncates exactly as Pillow does."""
    m, c, h, w = x.shape
    flat = x.reshape(m, c, h * w)
    lo = flat.amin(dim=2, keepdim=True).to(torch.float64)
    hi = flat.amax(dim=2, keepdim=True).to(torch.float64)
    flat_channel = hi <= lo
    # (not `255.0 / tensor`: torch evaluates that as 255 * reciprocal(tensor), which rounds differently)
    scale = torch.full_like(hi, 255.0).div_(torch.where(flat_channel, torch.ones_like(hi), hi - lo))
    offset = -lo * scale
    levels = torch.arange(256, device=x.device, dtype=torch.float64).view(1, 1, 256)
    lut = torch.trunc(levels * scale + offset).clamp_(0, 255)
    lut = torch.where(flat_channel, levels, lut).to(torch.uint8)
    return _apply_lut(x, lut)


def _equalize(x: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
    """ImageOps.equalize(img), per channel: with h the histogram and `last` the count of the highest occupied
    level, step = (sum(h) - last) // 255; lut[i] = (step // 2 + sum(h[:i])) // step; identity when step == 0.
    All M * C histograms come from one bincount."""
    m, c, hgt, wid = x.shape
    rows = m * c
    flat = x.reshape(rows, hgt * wid).to(torch.int64)
    offsets = torch.arange(rows, device=x.device, dtype=torch.int64).view(rows, 1) * 256
    hist = torch.bincount((flat + offsets).view(-1), minlength=rows * 256).view(rows, 256)
    last = hist.gather(1, flat.amax(dim=1, keepdim=True))
    step = (hgt * wid - last) // 255  # (rows, 1)
    below = torch.cumsum(hist, dim=1) - hist  # sum(h[:i])
    safe_step = step.clamp(min=1)
    lut = torch.div(safe_step // 2 + below, safe_step, rounding_mode="floor").clamp_(0, 255)
    identity = torch.arange(256, device=x.device, dtype=torch.int64).view(1, 256)
    lut = torch.where(step == 0, identity, lut).to(torch.uint8)
    return _apply_lut(x, lut.view(m, c, 256))


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness(img).enhance(f) = blend(black, img, f)."""
    return _blend(torch.zeros((), dtype=torch.uint8, device=x.device), x, factor)


def _color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color(img).enhance(f) = blend(img.convert("L").convert("RGB"), img, f)."""
    return _blend(_grayscale(x), x, factor)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast(img).enhance(f) = blend(constant image of int(mean(L) + 0.5), img, f), with L the
    grayscale image (ImageStat mean = sum / count)."""
    gray = _grayscale(x)
    total = gray.reshape(gray.shape[0], -1).to(torch.int64).sum(dim=1)
    mean = torch.floor(total.to(torch.float64) / gray[0].numel() + 0.5)
    return _blend(mean.view(-1, 1, 1, 1), x, factor)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness(img).enhance(f) = blend(img.filter(SMOOTH), img, f).

    SMOOTH is the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13; Pillow leaves the one-pixel border
    untouched and rounds the interior to nearest (checked bit for bit on real images: round(S / 13), S the
    integer weighted sum). Computed exactly in int16 with two separable 3-tap sums plus 4 x centre.
    """
    xi = x.to(torch.int16)
    rows = xi[:, :, :-2] + xi[:, :, 1:-1] + xi[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    weighted = box + 4 * xi[:, :, 1:-1, 1:-1]
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = torch.div(weighted + 6, 13, rounding_mode="floor").to(torch.uint8)
    return _blend(smooth, x, factor)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize(img, bits): keep the top `bits` bits of every value (bits in 1..8)."""
    b = bits.round().to(torch.int64).clamp(1, 8)
    mask = (255 - ((1 << (8 - b)) - 1)).to(torch.uint8)  # 0b1111_0000 for bits = 4
    return x & mask.view(-1, 1, 1, 1)


def _solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize(img, threshold): v if v < threshold else 255 - v.

    For uint8, 255 - v == v XOR 255, and v >= threshold <=> v >= ceil(threshold): an integer compare and an
    xor, about 10x faster on the CPU than torch.where."""
    at_or_above = x >= torch.ceil(threshold).to(torch.int16).view(-1, 1, 1, 1)
    return x ^ (at_or_above.to(torch.uint8) * 255)


def _identity(x: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
    return x


_COLOUR_OPS = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "sharpness": _sharpness,
    "solarize": _solarize,
}


def apply_op(
    name: str, x: torch.Tensor, magnitudes: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """Apply one RandAugment op to every image of x with the given per-sample magnitudes (no randomness).

    x: uint8 (M, C, H, W); magnitudes: (M,) in the units of MAGNITUDE_RANGES (ignored by identity,
    autocontrast and equalize; may then be None). Values outside the FixMatch ranges are allowed (the Pillow
    semantics extend to them), which is how the tests probe the ops.
    """
    x = _check_images(x, "apply_op")
    if name not in _OP_INDEX:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")
    if magnitudes is None:
        if name in MAGNITUDE_RANGES:
            raise ValueError(f"op {name!r} needs magnitudes, one per image, in {MAGNITUDE_RANGES[name]}")
        return _COLOUR_OPS[name](x, None)
    mag = torch.as_tensor(magnitudes, device=x.device)
    if mag.dim() == 0:
        mag = mag.expand(x.shape[0])
    if mag.shape != (x.shape[0],):
        raise ValueError(
            f"apply_op({name!r}): need one magnitude per image, shape ({x.shape[0]},); got {tuple(mag.shape)}"
        )
    if name in _GEOMETRIC:
        return _affine_nearest(x, _geometric_matrix(name, mag, x.shape[2], x.shape[3]), FILL)
    return _COLOUR_OPS[name](x, mag)


# ------------------------------------------------------------------------------------------------------------
# Public API


def _weak(x: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random horizontal flip (p = 0.5, only if `flip`), then reflect-pad and random-crop back to (H, W).

    Draws, in this order: u_flip ~ U[0, 1) (N,), top ~ U{0..2 pad_h} (N,), left ~ U{0..2 pad_w} (N,); u_flip
    is drawn even when flip=False, so both settings consume the stream alike. The image is flipped where
    flip and u_flip < 0.5, and out[i, j] = flipped_padded[i + top, j + left].
    """
    n, _, h, w = x.shape
    pad_h, pad_w = round(TRANSLATE_FRACTION * h), round(TRANSLATE_FRACTION * w)
    dev = x.device
    mirrored = torch.rand(n, generator=generator, device=dev) < 0.5
    top = torch.randint(0, 2 * pad_h + 1, (n,), generator=generator, device=dev)
    left = torch.randint(0, 2 * pad_w + 1, (n,), generator=generator, device=dev)

    def reflect(idx: torch.Tensor, size: int) -> torch.Tensor:  # numpy / TF "reflect": edge not repeated
        idx = idx.abs()
        return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)

    rows = reflect(torch.arange(h, device=dev).view(1, h) + top.view(n, 1) - pad_h, h)  # (N, H)
    cols = reflect(torch.arange(w, device=dev).view(1, w) + left.view(n, 1) - pad_w, w)  # (N, W)
    if flip:
        cols = torch.where(mirrored.view(n, 1), w - 1 - cols, cols)  # flip first, then shift (libml `ms`)
    # Built in int32 (faster than int64 here); the reflection never leaves the image, so no fill is needed.
    index = rows.to(torch.int32).view(n, h, 1) * w + cols.to(torch.int32).view(n, 1, w)
    return _gather_pixels(x, index.to(torch.int64))


def _check_flag(value: object, name: str, caller: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{caller}: {name} must be True or False; got {value!r}")
    return value


def weak_augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool = True) -> torch.Tensor:
    """FixMatch's weak augmentation, drawn per sample: a random horizontal flip (p = 0.5; none if flip=False)
    and a random translation by up to 12.5 % of the side (4 px on 32x32) via reflect padding and a random
    crop.

    flip=True is the reference's CIFAR / STL-10 augmentation (`Primitives.ms`), flip=False its SVHN one
    (`Primitives.s`, shift only: digits are not mirror-symmetric); google-research/fixmatch libml/augment.py,
    `DEFAULT_AUGMENT`. x: uint8 (N, C, H, W) on any device; generator: a torch.Generator on the same device.
    Returns a new uint8 tensor of the same shape on the same device; x is not modified.
    """
    x = _check_images(x, "weak_augment")
    _check_generator(generator, x, "weak_augment")
    return _weak(x, generator, _check_flag(flip, "flip", "weak_augment"))


def _cutout_square(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int, fill: int) -> torch.Tensor:
    """Set rows [cy - size//2, cy + size//2) x cols [cx - size//2, cx + size//2), clipped, to fill.

    The reference's `create_cutout_mask` (third_party/auto_augment/augmentations.py). cy, cx: (N,) int64."""
    n, _, h, w = x.shape
    if size // 2 == 0:
        return x.clone()
    cy, cx = cy.view(n, 1, 1), cx.view(n, 1, 1)
    ii = torch.arange(h, device=x.device).view(1, h, 1)
    jj = torch.arange(w, device=x.device).view(1, 1, w)
    in_rows = ((ii >= cy - size // 2) & (ii < cy + size // 2)).to(torch.uint8)  # (N, H, 1)
    in_cols = ((jj >= cx - size // 2) & (jj < cx + size // 2)).to(torch.uint8)  # (N, 1, W)
    box = (in_rows * in_cols).unsqueeze(1)  # (N, 1, H, W) of 0 / 1
    # (x AND keep) OR fill_bits with keep = 0 inside the box, 255 outside: many times faster on the CPU than
    # masked_fill / where with a broadcast mask.
    return (x & (255 - box * 255)) | (box * fill)


def cutout(
    x: torch.Tensor, generator: torch.Generator, fraction: float = CUTOUT_FRACTION, fill: int = FILL
) -> torch.Tensor:
    """Cutout as FixMatch's reference `cutout_numpy` / `create_cutout_mask` (third_party/auto_augment): a
    centre (cy, cx) is drawn uniformly over all pixels and rows [cy - s//2, cy + s//2) x
    cols [cx - s//2, cx + s//2), clipped to the image, are set to `fill`; s = int(fraction * min(H, W))
    (16 on 32x32). Returns a new tensor.

    Draws, in order: cy ~ U{0..H-1} (N,), cx ~ U{0..W-1} (N,)."""
    x = _check_images(x, "cutout")
    _check_generator(generator, x, "cutout")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"cutout: fraction must be in [0, 1]; got {fraction!r}")
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=x.device)
    return _cutout_square(x, cy, cx, int(fraction * min(h, w)), fill)


def strong_augment(
    x: torch.Tensor, generator: torch.Generator, *, flip: bool = True, policy: str = "ramc"
) -> torch.Tensor:
    """FixMatch's strong augmentation, per sample: weak flip (unless flip=False) + shift, RandAugment, Cutout.

    policy "ramc" (default): the reference pool google-research/fixmatch `AugmentPoolRAMC`
    (`--augment=d.d.rac`): 2 ops from RAMC_OPS, each applied with probability 0.5 at an integer level 1..9,
    then a 16 px grey Cutout; see the module docstring, `draw_ramc` and `apply_ramc`. policy "table12": the
    FixMatch paper's Table 12 description (2 ops always applied, continuous magnitudes from MAGNITUDE_RANGES,
    Cutout of half the side). The flip / shift step is drawn independently of the weak view's: call this on
    the raw batch, not on the weak view. flip=False (digits) never mirrors; no RandAugment op mirrors either.

    x: uint8 (N, C, H, W) on any device; generator on the same device. Returns a new uint8 tensor.
    Random draws, in order: the weak draws (see weak_augment), then for "ramc" those of `draw_ramc`; for
    "table12" ops (2, N), magnitudes u (2, N), a (2, N) draw kept for stream compatibility, cutout centres.
    The same seed gives the same output on the same device.
    """
    x = _check_images(x, "strong_augment")
    _check_generator(generator, x, "strong_augment")
    flip = _check_flag(flip, "flip", "strong_augment")
    if policy not in STRONG_POLICIES:
        raise ValueError(
            f"strong_augment: unknown policy {policy!r}; expected one of {', '.join(STRONG_POLICIES)} "
            "(ramc = the reference AugmentPoolRAMC, table12 = the FixMatch paper's Table 12 ranges)"
        )
    shifted = _weak(x, generator, flip)
    n, _, h, w = x.shape
    if policy == "ramc":
        return _apply_ramc(shifted, draw_ramc(n, h, w, generator))
    return _table12(shifted, generator)


# ------------------------------------------------------------------------------------------------------------
# "ramc": the reference pool


@dataclass(frozen=True)
class RamcDraws:
    """Every random choice the reference pool makes for a batch, one entry per sample (tensors on one device).

    ops[r, i]: index into RAMC_OPS of sample i's op in round r (np.random.choice(RANDOM_POLICY_OPS, 2));
    levels[r, i]: its level, 1..9 (np.random.randint(1, 10));
    applied[r, i]: whether it runs (random.random() < 0.5);
    negated[r, i]: whether a signed op (rotate, shear, translate) flips its sign (random.random() > 0.5;
    ignored by the other ops);
    cutout_y[i], cutout_x[i]: the Cutout centre (np.random.randint(0, H), np.random.randint(0, W)).
    ops / levels / applied / negated are (RAMC_NUM_OPS, N); cutout_y / cutout_x are (N,).
    """

    ops: torch.Tensor
    levels: torch.Tensor
    applied: torch.Tensor
    negated: torch.Tensor
    cutout_y: torch.Tensor
    cutout_x: torch.Tensor


def draw_ramc(n: int, height: int, width: int, generator: torch.Generator) -> RamcDraws:
    """Draw the reference pool's random choices for n images of height x width on the generator's device.

    Draws, in this order and these shapes (R = RAMC_NUM_OPS): ops ~ U{0..13} (R, n), levels ~ U{1..9} (R, n),
    u_apply ~ U[0, 1) (R, n) with applied = u_apply < 0.5, u_sign ~ U[0, 1) (R, n) with
    negated = u_sign > 0.5, cutout_y ~ U{0..height-1} (n,), cutout_x ~ U{0..width-1} (n,).
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"draw_ramc expects a torch.Generator; got {type(generator).__name__}")
    for name, value in (("n", n), ("height", height), ("width", width)):
        if not isinstance(value, int) or value < (0 if name == "n" else 1):
            raise ValueError(f"draw_ramc: {name} must be an int >= {0 if name == 'n' else 1}; got {value!r}")
    dev, g, shape = generator.device, generator, (RAMC_NUM_OPS, n)
    lo, hi = RAMC_LEVELS
    ops = torch.randint(0, len(RAMC_OPS), shape, generator=g, device=dev)
    levels = torch.randint(lo, hi + 1, shape, generator=g, device=dev)
    applied = torch.rand(shape, generator=g, device=dev) < RAMC_OP_PROB
    negated = torch.rand(shape, generator=g, device=dev) > 0.5
    cutout_y = torch.randint(0, height, (n,), generator=g, device=dev)
    cutout_x = torch.randint(0, width, (n,), generator=g, device=dev)
    return RamcDraws(ops, levels, applied, negated, cutout_y, cutout_x)


def ramc_magnitude(name: str, levels: torch.Tensor, negated: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's level -> Pillow magnitude for op `name` (augmentations.py; table in module docstring).

    levels: int tensor (any shape) of levels 1..9; negated: bool tensor of the same shape (signed ops only;
    None = all positive). Returns float64: degrees (rotate), shear coefficient, pixels (translate), solarize
    threshold, posterize bits, or enhance factor. identity / autocontrast / equalize have no magnitude
    (KeyError).
    """
    lv = levels.to(torch.int64)
    if name == "rotate":
        mag = ((lv * 30) // 10).to(torch.float64)  # int_parameter(level, 30)
    elif name in ("shear_x", "shear_y"):
        mag = lv.to(torch.float64) * 0.3 / 10  # float_parameter(level, 0.3), Python's order of operations
    elif name in ("translate_x", "translate_y"):
        mag = ((lv * 10) // 10).to(torch.float64)  # int_parameter(level, 10): pixels
    elif name == "solarize":
        return (256 - (lv * 256) // 10).to(torch.float64)  # 256 - int_parameter(level, 256)
    elif name == "posterize":
        return (4 - (lv * 4) // 10).to(torch.float64)  # 4 - int_parameter(level, 4)
    elif name in _RAMC_ENHANCE:
        return lv.to(torch.float64) * 1.8 / 10 + 0.1  # float_parameter(level, 1.8) + .1
    else:
        raise KeyError(
            f"op {name!r} has no magnitude in the reference pool; ops with one: "
            f"{', '.join(op for op in RAMC_OPS if op not in ('identity', 'autocontrast', 'equalize'))}"
        )
    if negated is not None:
        mag = torch.where(negated, -mag, mag)
    return mag


def _ramc_matrix(name: str, mag: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(M, 6) Pillow inverse affine of a signed reference op with magnitude `mag` (ramc_magnitude's units)."""
    one, zero = torch.ones_like(mag), torch.zeros_like(mag)
    if name == "rotate":  # Image.rotate(degrees): Pillow's rounded coefficients, about the centre (w/2, h/2)
        a, b, d = _PILLOW_ROTATION.to(mag.device)[mag.to(torch.int64).remainder(360)].unbind(1)
        e = a
        cx, cy = w / 2, h / 2
        return torch.stack([a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy], dim=1)
    if name == "shear_x":  # (1, s, 0, 0, 1, 0)
        return torch.stack([one, mag, zero, zero, one, zero], dim=1)
    if name == "shear_y":  # (1, 0, 0, s, 1, 0)
        return torch.stack([one, zero, zero, mag, one, zero], dim=1)
    if name == "translate_x":  # (1, 0, t, 0, 1, 0), t in pixels
        return torch.stack([one, zero, mag, zero, one, zero], dim=1)
    if name == "translate_y":  # (1, 0, 0, 0, 1, t)
        return torch.stack([one, zero, zero, zero, one, mag], dim=1)
    raise KeyError(name)


def _check_draws(draws: object, x: torch.Tensor) -> RamcDraws:
    if not isinstance(draws, RamcDraws):
        raise TypeError(f"apply_ramc expects draws from draw_ramc (a RamcDraws); got {type(draws).__name__}")
    n, _, h, w = x.shape
    expected = {
        "ops": (RAMC_NUM_OPS, n),
        "levels": (RAMC_NUM_OPS, n),
        "applied": (RAMC_NUM_OPS, n),
        "negated": (RAMC_NUM_OPS, n),
        "cutout_y": (n,),
        "cutout_x": (n,),
    }
    for field, shape in expected.items():
        value = getattr(draws, field)
        if tuple(value.shape) != shape or value.device != x.device:
            raise ValueError(
                f"apply_ramc: draws.{field} has shape {tuple(value.shape)} on {value.device}; expected "
                f"{shape} on {x.device} for {n} images: call draw_ramc(n, height, width, generator) "
                "for this batch"
            )
    if bool(((draws.levels < RAMC_LEVELS[0]) | (draws.levels > RAMC_LEVELS[1])).any()):
        raise ValueError(f"apply_ramc: levels must lie in {RAMC_LEVELS[0]}..{RAMC_LEVELS[1]}")
    if bool(((draws.ops < 0) | (draws.ops >= len(RAMC_OPS))).any()):
        raise ValueError(f"apply_ramc: ops must index RAMC_OPS (0..{len(RAMC_OPS) - 1})")
    if bool(
        ((draws.cutout_y < 0) | (draws.cutout_y >= h) | (draws.cutout_x < 0) | (draws.cutout_x >= w)).any()
    ):
        raise ValueError(f"apply_ramc: cutout centres must lie inside the {h}x{w} image")
    return draws


def apply_ramc(x: torch.Tensor, draws: RamcDraws) -> torch.Tensor:
    """The reference pool with the given draws (no randomness): RandAugment rounds, then the 16 px Cutout.

    x: uint8 (N, C, H, W), already flipped / shifted; draws: from draw_ramc(N, H, W, generator) on x's device.
    Steps: the reference's wrap quantisation (_WRAP_LUT), RAMC_NUM_OPS rounds of op RAMC_OPS[ops[r, i]] at
    levels[r, i] where applied[r, i], with RGBA semantics (see the module docstring), transparent pixels ->
    FILL, then Cutout of RAMC_CUTOUT_SIZE px centred on (cutout_y, cutout_x) filled with FILL. Returns a new
    tensor.
    """
    x = _check_images(x, "apply_ramc")
    return _apply_ramc(x, _check_draws(draws, x))


def _apply_ramc(x: torch.Tensor, draws: RamcDraws) -> torch.Tensor:
    n, c, h, w = x.shape
    rgb = _WRAP_LUT.to(x.device)[x.to(torch.int64)]
    # RGBA state: channel c is alpha, 255 (opaque) or 0 (transparent: brought in by a geometric op).
    state = torch.cat([rgb, torch.full((n, 1, h, w), 255, dtype=torch.uint8, device=x.device)], dim=1)
    for r in range(RAMC_NUM_OPS):
        state = _ramc_round(state, draws, r, h, w)
    alpha = state[:, c:]  # 0 / 255 per pixel; pil_unwrap: transparent -> 0.0 on [-1, 1] -> grey
    out = (state[:, :c] & alpha) | ((255 - alpha) & FILL)
    return _cutout_square(out, draws.cutout_y, draws.cutout_x, RAMC_CUTOUT_SIZE, FILL)


def _ramc_round(state: torch.Tensor, draws: RamcDraws, r: int, h: int, w: int) -> torch.Tensor:
    """One round of the reference pool on the RGBA state (N, C + 1, H, W), grouped by op like table12's."""
    c = state.shape[1] - 1
    ops = torch.where(draws.applied[r], draws.ops[r], torch.full_like(draws.ops[r], _RAMC_IDENTITY))

    def colour(name: str, xs: torch.Tensor, levels: torch.Tensor, negated: torch.Tensor) -> torch.Tensor:
        if name == "identity":
            return xs
        mag = None if name in ("autocontrast", "equalize") else ramc_magnitude(name, levels)
        alpha = torch.full_like(xs[:, c:], 255) if name in _RAMC_OPAQUE else xs[:, c:]
        return torch.cat([_COLOUR_OPS[name](xs[:, :c], mag), alpha], dim=1)

    def geometric(name: str, levels: torch.Tensor, negated: torch.Tensor) -> torch.Tensor:
        return _ramc_matrix(name, ramc_magnitude(name, levels, negated), h, w)

    # RGB and alpha are resampled together; outside the image is transparent black (0, 0, 0, 0)
    return _apply_grouped(state, _RAMC_GROUP_RANK.to(ops.device)[ops], _RAMC_GROUP_ORDER,
                          (draws.levels[r], draws.negated[r]), colour, geometric, fill=0)


def _apply_grouped(x: torch.Tensor, key: torch.Tensor, group_order: Sequence[str], params: tuple[torch.Tensor, ...],
                   colour: Callable[..., torch.Tensor], geometric: Callable[..., torch.Tensor],
                   fill: int) -> torch.Tensor:
    """Apply one op per sample, batched by op: sample i gets ``group_order[key[i]]``.

    Samples are sorted by ``key`` (colour ops first, the geometric ops last: one argsort and one bincount, a single
    host sync); every colour op runs once on the contiguous slice of its samples (``colour(name, xs, *params)``)
    and all geometric samples share one affine resampling pass (``geometric(name, *params)`` gives their
    matrices). ``params`` are per-sample tensors, sliced like the samples. One index_select restores the order.
    """
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=len(group_order)).tolist()
    xs = x.index_select(0, order)
    ps = tuple(p.index_select(0, order) for p in params)
    pieces, start, geo_start, geo_mats = [], 0, None, []
    for name, count in zip(group_order, counts, strict=True):
        sl = slice(start, start + count)
        start += count
        if count == 0:
            continue
        if name in _GEOMETRIC:
            geo_start = sl.start if geo_start is None else geo_start
            geo_mats.append(geometric(name, *(p[sl] for p in ps)))
        else:
            pieces.append(colour(name, xs[sl], *(p[sl] for p in ps)))
    if geo_mats:
        pieces.append(_affine_nearest(xs[geo_start:], torch.cat(geo_mats), fill))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(pieces).index_select(0, inverse)


# ------------------------------------------------------------------------------------------------------------
# "table12": the FixMatch paper's description


def _table12(x: torch.Tensor, generator: torch.Generator, num_ops: int = 2) -> torch.Tensor:
    """num_ops rounds; in each, every sample draws one of the 14 OPS uniformly (with replacement across
    rounds) and its own magnitude uniformly from MAGNITUDE_RANGES; every drawn op is applied; then Cutout of
    half the side. x is the already flipped / shifted batch."""
    n = x.shape[0]
    h, w = x.shape[2:]
    dev = x.device
    ops = torch.randint(0, len(OPS), (num_ops, n), generator=generator, device=dev)
    u_mag = torch.rand((num_ops, n), generator=generator, device=dev, dtype=torch.float64)
    torch.rand((num_ops, n), generator=generator, device=dev)  # the former op_prob draw: keeps seeds' outputs
    for r in range(num_ops):
        x = _randaugment_round(x, ops[r], u_mag[r], h, w)
    cy = torch.randint(0, h, (n,), generator=generator, device=dev)
    cx = torch.randint(0, w, (n,), generator=generator, device=dev)
    return _cutout_square(x, cy, cx, int(CUTOUT_FRACTION * min(h, w)), FILL)


def _magnitudes(name: str, u: torch.Tensor) -> torch.Tensor:
    lo, hi = MAGNITUDE_RANGES[name]
    if name == "posterize":  # integer bits, uniform over {lo, ..., hi}
        return lo + torch.floor(u * (hi - lo + 1))
    return lo + u * (hi - lo)


def _randaugment_round(x: torch.Tensor, ops: torch.Tensor, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """One RandAugment layer: sample i gets OPS[ops[i]] with magnitude from u[i] (batched by op)."""

    def colour(name: str, xs: torch.Tensor, us: torch.Tensor) -> torch.Tensor:
        return _COLOUR_OPS[name](xs, _magnitudes(name, us) if name in MAGNITUDE_RANGES else None)

    def geometric(name: str, us: torch.Tensor) -> torch.Tensor:
        return _geometric_matrix(name, _magnitudes(name, us), h, w)

    return _apply_grouped(x, _GROUP_RANK.to(ops.device)[ops], _GROUP_ORDER, (u,), colour, geometric, fill=FILL)


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as float32 on x's device; mean and std on the 0-1 scale, one per
    channel (e.g. CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616))."""
    x = _check_images(x_uint8, "normalize")
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"normalize: need one mean and one std per channel ({c}); "
            f"got mean={tuple(mean)}, std={tuple(std)}"
        )
    if any(not math.isfinite(s) or s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive and finite; got {tuple(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1) * 255.0
    return (x.to(torch.float32) - m) / s
