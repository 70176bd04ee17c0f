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
samples. A RandAugment round runs in one of two designs that give the same images bit for bit: **static
shapes** (on a GPU and inside torch.compile): every op is evaluated for every image and the image's own op is
picked with ``torch.where`` (the table ops - autocontrast, equalize, solarize, posterize, brightness, contrast
- as one per-image 256-entry table and a single lookup, Color and Sharpness as one blend, the geometric ops as
one resampling pass with the identity matrix for the others), so nothing depends on the draws' values: no host
sync, one graph, capturable by a CUDA graph; **grouped by op** (the CPU's default, ``GROUP_BY_OP_ON_CPU``):
images sorted by op, each op run on its group only, about 6x less work, and the group sizes read back, which
costs nothing on a CPU. Reasons for writing the ops by hand instead of using a library: torchvision cannot be
imported in this project (and its v2 RandAugment, like kornia's, draws ONE op set per call for the whole batch,
which is not the reference's per-image RandAugment); kornia is not a dependency; and a hand-written op costs a
few tensor kernels per call. Every op reproduces Pillow (the library the reference augments with) bit for bit
or to within one grey level; ``tests/test_augment.py`` checks each op against Pillow and the whole ``"ramc"``
pool against a per-image Pillow re-implementation on real CIFAR-10 images.

Randomness is separated from the math: ``draw_weak`` / ``draw_strong`` (``draw_ramc``, ``draw_table12``)
make every random choice of a batch up front into fixed-shape tensors, and ``apply_weak`` / ``apply_strong``
(``apply_ramc``) are pure functions of the images and the draws (one torch.compile graph each, no break).
``weak_augment`` / ``strong_augment`` are draw-then-apply, with the draws in the same order as always, so the
same seed gives the same images as before the split. Device constants (the wrap table, Pillow's rotation
coefficients, normalize's mean and std) are copied to a device once and cached.

Randomness: every draw comes from the ``torch.Generator`` passed in, which must live on the batch's device,
and the draws are made in a fixed order and fixed shapes, so the same seed gives the same images on the same
device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
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
    "StrongDraws",
    "Table12Draws",
    "WeakDraws",
    "apply_op",
    "apply_ramc",
    "apply_strong",
    "apply_weak",
    "cutout",
    "draw_ramc",
    "draw_strong",
    "draw_table12",
    "draw_weak",
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
_RAMC_INDEX = {name: i for i, name in enumerate(RAMC_OPS)}
_RAMC_IDENTITY = _RAMC_INDEX["identity"]
_NO_MAGNITUDE = frozenset({"identity", "autocontrast", "equalize"})


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


# Tables computed once on the host; `_table` hands out one copy per device, made on first use. Moving a CPU
# tensor to a GPU (or building one from Python numbers there) blocks the host until the copy is done; cached,
# every later call finds the device's copy and the augmentation queues its kernels without waiting.
# (filled at the end of the module, once every table's builder is defined)
_HOST_TABLES: dict[str, torch.Tensor] = {}
_DEVICE_TABLES: dict[tuple[str, torch.device], torch.Tensor] = {}


def _table(name: str, device: torch.device) -> torch.Tensor:
    """The host table `name` on `device`, copied there once per device (see _HOST_TABLES)."""
    key = (name, device)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = _HOST_TABLES[name].to(device)
    return _DEVICE_TABLES[key]

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
    f = factor.to(torch.float32).view(-1, *([1] * (x.dim() - 1)))
    out = (x.to(torch.float32) - d) * f + d
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
    a, b, c, d, e, f = mat.unbind(1)
    # The pixel-centre origin terms, then FIX(v) = FLOOR(v * 65536.0 + 0.5) of all six coefficients in one pass.
    # int32 is plenty: |coefficient| * 65536 * side < 2**31 for sides up to several thousand pixels.
    origin = torch.stack([a, b, c + a * 0.5 + b * 0.5, d, e, f + d * 0.5 + e * 0.5], dim=1)
    fa, fb, fc, fd, fe, ff = torch.floor(origin * 65536.0 + 0.5).to(torch.int32).view(m, 6, 1, 1).unbind(1)
    jj = torch.arange(w, device=x.device, dtype=torch.int32).view(1, 1, w)
    ii = torch.arange(h, device=x.device, dtype=torch.int32).view(1, h, 1)
    src_x = (fc + ii * fb + jj * fa) >> 16
    src_y = (ff + ii * fe + jj * fd) >> 16
    # Out-of-image sources read a one-pixel border of `fill` (clamping to -1 / side lands on it): no mask
    # pass.
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=fill)
    index = (src_y.clamp_(-1, h) + 1) * (w + 2) + src_x.clamp_(-1, w) + 1
    return _gather_pixels(padded, index.to(torch.int64))


def _op_mask(op: torch.Tensor, n_ops: int) -> torch.Tensor:
    """(M, n_ops) bool: [i, k] = op[i] == k, one comparison for every test of a sample's op in a round."""
    return op.unsqueeze(1) == _levels(op.device, torch.int64).view(256)[:n_ops]


def _affine_matrices(is_op: torch.Tensor, index: dict[str, int], rotation: tuple[torch.Tensor, ...],
                     shear: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor, h: int,
                     w: int) -> torch.Tensor:
    """(M, 6): per sample, the inverse affine (a, b, c, d, e, f) Pillow uses for its geometric op (output pixel
    -> input point), the identity (1, 0, 0, 0, 1, 0) for any other op, which _affine_nearest maps exactly onto
    the input pixels. rotation = (a, b, d) of Image.rotate (e = a) about the centre, in Pillow's order of terms;
    shear_x puts `shear` at b, shear_y at d; translate_x puts `shift_x` at c, translate_y `shift_y` at f."""
    a, b, d = rotation
    cx, cy = w / 2, h / 2
    rot = is_op[:, index["rotate"]]
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    a_ = torch.where(rot, a, one)
    b_ = torch.where(rot, b, torch.where(is_op[:, index["shear_x"]], shear, zero))
    c_ = torch.where(rot, a * -cx + b * -cy + cx, torch.where(is_op[:, index["translate_x"]], shift_x, zero))
    d_ = torch.where(rot, d, torch.where(is_op[:, index["shear_y"]], shear, zero))
    f_ = torch.where(rot, d * -cx + a * -cy + cy, torch.where(is_op[:, index["translate_y"]], shift_y, zero))
    return torch.stack([a_, b_, c_, d_, a_, f_], dim=1)


def _table12_matrices(is_op: torch.Tensor, magnitude: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """_affine_matrices for OPS with MAGNITUDE_RANGES' units: Image.rotate(angle) (float angle: cos / sin of
    -radians), Image.transform AFFINE (1, R, 0, 0, 1, 0) / (1, 0, 0, R, 1, 0), translation by lambda x side."""
    mag = magnitude.to(torch.float64)
    theta = -torch.deg2rad(mag)
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _affine_matrices(is_op, _OP_INDEX, (cos, sin, -sin), mag, mag * w, mag * h, h, w)


def _geometric_matrix(name: str, magnitude: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (M, 6) inverse affine Pillow uses for geometric op `name` of OPS at these magnitudes."""
    if name not in _GEOMETRIC:
        raise KeyError(name)
    op = torch.full(magnitude.shape, _OP_INDEX[name], device=magnitude.device)
    return _table12_matrices(_op_mask(op, len(OPS)), magnitude, h, w)


# ------------------------------------------------------------------------------------------------------------
# Colour ops: x (M, C, H, W) uint8, magnitude (M,) -> (M, C, H, W) uint8


def _levels(device: torch.device, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """(1, 1, 256): the identity table, the grey levels 0..255 (cached per device and dtype)."""
    return _table(f"levels_{str(dtype).removeprefix('torch.')}", device)


def _autocontrast_lut(x: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    """ImageOps.autocontrast(img): per channel, lut[v] = int(v * scale + offset) clipped to [0, 255], with
    scale = 255 / (hi - lo), offset = -lo * scale, lo / hi the channel's min / max; identity if hi <= lo.
    Evaluated in float64 in Pillow's order of operations, so it truncates exactly as Pillow does. (M, C, 256)."""
    m, c, h, w = x.shape
    flat = x.reshape(m, c, h * w)
    lo = flat.amin(dim=2, keepdim=True).to(torch.float64)
    hi = flat.amax(dim=2, keepdim=True).to(torch.float64)
    flat_channel = hi <= lo
    # (not `255.0 / tensor`: torch evaluates that as 255 * reciprocal(tensor), which rounds differently)
    scale = torch.full_like(hi, 255.0).div_(torch.where(flat_channel, torch.ones_like(hi), hi - lo))
    offset = -lo * scale
    levels = _levels(x.device, torch.float64)
    lut = torch.trunc(levels * scale + offset).clamp_(0, 255)
    return torch.where(flat_channel, levels, lut).to(torch.uint8)


def _equalize_lut(x: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    """ImageOps.equalize(img), per channel: with h the histogram and `last` the count of the highest occupied
    level, step = (sum(h) - last) // 255; lut[i] = (step // 2 + sum(h[:i])) // step; identity when step == 0.

    All M * C histograms come from one scatter_add into a (M * C, 256) table: a fixed shape, no host sync
    (torch.bincount sizes its output from the data's maximum, which a GPU must send back first). (M, C, 256)."""
    m, c, hgt, wid = x.shape
    rows = m * c
    flat = x.reshape(rows, hgt * wid).to(torch.int64)
    hist = torch.zeros((rows, 256), dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    last = hist.gather(1, flat.amax(dim=1, keepdim=True))
    step = (hgt * wid - last) // 255  # (rows, 1)
    below = torch.cumsum(hist, dim=1) - hist  # sum(h[:i])
    safe_step = step.clamp(min=1)
    lut = torch.div(safe_step // 2 + below, safe_step, rounding_mode="floor").clamp_(0, 255)
    identity = _levels(x.device, torch.int64).view(1, 256)
    return torch.where(step == 0, identity, lut).to(torch.uint8).view(m, c, 256)


def _brightness_lut(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness(img).enhance(f) = blend(black, img, f), as a (M, 1, 256) table."""
    return _blend(torch.zeros((), dtype=torch.uint8, device=x.device), _levels(x.device), factor)


def _contrast_lut(x: torch.Tensor, factor: torch.Tensor, gray: torch.Tensor | None = None) -> torch.Tensor:
    """ImageEnhance.Contrast(img).enhance(f) = blend(constant image of int(mean(L) + 0.5), img, f), with L the
    grayscale image (ImageStat mean = sum / count), as a (M, 1, 256) table. `gray`: _grayscale(x) if known."""
    gray = _grayscale(x) if gray is None else gray
    total = gray.reshape(gray.shape[0], -1).to(torch.int64).sum(dim=1)
    mean = torch.floor(total.to(torch.float64) / gray[0].numel() + 0.5)
    return _blend(mean.view(-1, 1, 1), _levels(x.device), factor)


def _posterize_lut(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize(img, bits): keep the top `bits` bits of every value (bits in 1..8); (M, 1, 256)."""
    b = bits.round().to(torch.int64).clamp(1, 8)
    mask = (255 - ((1 << (8 - b)) - 1)).to(torch.uint8)  # 0b1111_0000 for bits = 4
    return _levels(x.device) & mask.view(-1, 1, 1)


def _solarize_lut(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize(img, threshold): v if v < threshold else 255 - v, as a (M, 1, 256) table.

    For uint8, 255 - v == v XOR 255, and v >= threshold <=> v >= ceil(threshold)."""
    levels = _levels(x.device)
    at_or_above = levels >= torch.ceil(threshold).to(torch.int16).view(-1, 1, 1)
    return levels ^ (at_or_above.to(torch.uint8) * 255)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """Pillow's img.filter(SMOOTH): the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on the interior,
    rounded to nearest (checked bit for bit on real images: round(S / 13), S the integer weighted sum), the
    one-pixel border untouched. Computed exactly in int16 with two separable 3-tap sums plus 4 x centre."""
    xi = x.to(torch.int16)
    rows = xi[:, :, :-2] + xi[:, :, 1:-1] + xi[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    weighted = box + 4 * xi[:, :, 1:-1, 1:-1]
    interior = torch.div(weighted + 6, 13, rounding_mode="floor").to(torch.uint8)
    # Pad the interior with the input's border instead of writing into a clone: no in-place slice update.
    return torch.cat([x[:, :, :1], torch.cat([x[:, :, 1:-1, :1], interior, x[:, :, 1:-1, -1:]], dim=3),
                      x[:, :, -1:]], dim=2)


def _color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color(img).enhance(f) = blend(img.convert("L").convert("RGB"), img, f)."""
    return _blend(_grayscale(x), x, factor)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness(img).enhance(f) = blend(img.filter(SMOOTH), img, f) (see _smooth)."""
    return _blend(_smooth(x), x, factor)


# Colour ops that are a per-(image, channel) table of the grey level: (x, magnitude) -> (M, C or 1, 256).
_LUT_OPS = {
    "autocontrast": _autocontrast_lut,
    "brightness": _brightness_lut,
    "contrast": _contrast_lut,
    "equalize": _equalize_lut,
    "posterize": _posterize_lut,
    "solarize": _solarize_lut,
}
# Colour ops that blend every pixel with a degenerate image of its own: (x, magnitude) -> (M, C, H, W).
_PIXEL_OPS = {"color": _color, "sharpness": _sharpness}


def _colour_op(name: str, x: torch.Tensor, magnitude: torch.Tensor | None) -> torch.Tensor:
    """One colour op on every image of x (uint8 (M, C, H, W)), magnitudes (M,) in the op's units."""
    if name == "identity":
        return x
    if name in _PIXEL_OPS:
        return _PIXEL_OPS[name](x, magnitude)
    return _apply_lut(x, _LUT_OPS[name](x, magnitude).expand(x.shape[0], x.shape[1], 256))


def _select(is_op: torch.Tensor, choices: dict[int, torch.Tensor], default: torch.Tensor) -> torch.Tensor:
    """Per sample i: choices[k] where is_op[i, k] (see _op_mask), else default; all (M, ...), broadcasting.

    The static-shape replacement of grouping samples by op: every choice is computed for every sample and
    picked with torch.where, so shapes never depend on the draws (no sync, one graph, capturable)."""
    out = default
    for k, value in choices.items():
        out = torch.where(is_op[:, k].view(-1, *([1] * (max(value.dim(), out.dim()) - 1))), value, out)
    return out


def _colour_stage(x: torch.Tensor, is_op: torch.Tensor, magnitude: torch.Tensor,
                  index: dict[str, int]) -> torch.Tensor:
    """Every colour op of a RandAugment round at once: sample i gets the op k with is_op[i, k] (any other
    op, geometric or identity, leaves it as it is) with magnitude[i] (in that op's units).

    The table ops compute one (M, C, 256) table each and the chosen one is applied with a single gather; Color
    and Sharpness blend with their degenerate image (grey / smoothed), chosen per sample, in one pass. Every
    value goes through the same arithmetic as the op alone would apply (_colour_op), so the result is the same
    bit for bit. (Each table is computed for every sample from the sample's own magnitude, whatever its op: the
    tables of other ops are finite nonsense, never picked.)"""
    m, c = x.shape[:2]
    gray = _grayscale(x)
    tables = {index[name]: (fn(x, magnitude, gray) if name == "contrast" else
                            fn(x, None if name in _NO_MAGNITUDE else magnitude))
              for name, fn in _LUT_OPS.items()}
    lut = _select(is_op, tables, _levels(x.device)).expand(m, c, 256)
    looked_up = _apply_lut(x, lut)
    is_color, is_sharpness = is_op[:, index["color"]], is_op[:, index["sharpness"]]
    degenerate = torch.where(is_color.view(m, 1, 1, 1), gray, _smooth(x))
    blended = _blend(degenerate, x, magnitude)
    return torch.where((is_color | is_sharpness).view(m, 1, 1, 1), blended, looked_up)


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
        return _colour_op(name, x, None)
    mag = torch.as_tensor(magnitudes, device=x.device)
    if mag.dim() == 0:
        mag = mag.expand(x.shape[0])
    if mag.shape != (x.shape[0],):
        raise ValueError(
            f"apply_op({name!r}): need one magnitude per image, shape ({x.shape[0]},); got {tuple(mag.shape)}"
        )
    if name in _GEOMETRIC:
        return _affine_nearest(x, _geometric_matrix(name, mag, x.shape[2], x.shape[3]), FILL)
    return _colour_op(name, x, mag)


# ------------------------------------------------------------------------------------------------------------
# Draws: every random choice of a batch, made up front into fixed-shape tensors


@dataclass(frozen=True)
class WeakDraws:
    """The weak view's choices for a batch: mirrored[i] (bool; used only with flip=True), top[i] / left[i]
    (int64 crop offsets into the reflect-padded image, 0..2 pad). All (N,), on one device."""

    mirrored: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor


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


@dataclass(frozen=True)
class Table12Draws:
    """The "table12" policy's choices: ops[r, i] (index into OPS), u[r, i] ~ U[0, 1) float64 (the magnitude's
    position in its MAGNITUDE_RANGES range), both (2, N); cutout_y[i], cutout_x[i] (N,)."""

    ops: torch.Tensor
    u: torch.Tensor
    cutout_y: torch.Tensor
    cutout_x: torch.Tensor


@dataclass(frozen=True)
class StrongDraws:
    """The strong view's choices: its own weak flip / shift (`weak`), then the policy's (`pool`)."""

    weak: WeakDraws
    pool: RamcDraws | Table12Draws


def _check_size(n: object, height: object, width: object, caller: str) -> None:
    for name, value in (("n", n), ("height", height), ("width", width)):
        low = 0 if name == "n" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{caller}: {name} must be an int >= {low}; got {value!r}")


def _check_draw_generator(generator: object, caller: str) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{caller} expects a torch.Generator; got {type(generator).__name__}")
    return generator


def _shift_pad(size: int) -> int:
    return round(TRANSLATE_FRACTION * size)


def draw_weak(n: int, height: int, width: int, generator: torch.Generator) -> WeakDraws:
    """Draw the weak view's choices for n images of height x width on the generator's device.

    Draws, in this order: u_flip ~ U[0, 1) (n,) with mirrored = u_flip < 0.5, top ~ U{0..2 pad_h} (n,),
    left ~ U{0..2 pad_w} (n,) (pad = 12.5 % of the side). u_flip is drawn whether or not the view flips, so
    both settings consume the stream alike."""
    _check_size(n, height, width, "draw_weak")
    g = _check_draw_generator(generator, "draw_weak")
    dev = g.device
    mirrored = torch.rand(n, generator=g, device=dev) < 0.5
    top = torch.randint(0, 2 * _shift_pad(height) + 1, (n,), generator=g, device=dev)
    left = torch.randint(0, 2 * _shift_pad(width) + 1, (n,), generator=g, device=dev)
    return WeakDraws(mirrored, top, left)


def draw_ramc(n: int, height: int, width: int, generator: torch.Generator) -> RamcDraws:
    """Draw the reference pool's random choices for n images of height x width on the generator's device.

    Draws, in this order and these shapes (R = RAMC_NUM_OPS): ops ~ U{0..13} (R, n), levels ~ U{1..9} (R, n),
    u_apply ~ U[0, 1) (R, n) with applied = u_apply < 0.5, u_sign ~ U[0, 1) (R, n) with
    negated = u_sign > 0.5, cutout_y ~ U{0..height-1} (n,), cutout_x ~ U{0..width-1} (n,).
    """
    g = _check_draw_generator(generator, "draw_ramc")
    _check_size(n, height, width, "draw_ramc")
    dev, shape = g.device, (RAMC_NUM_OPS, n)
    lo, hi = RAMC_LEVELS
    ops = torch.randint(0, len(RAMC_OPS), shape, generator=g, device=dev)
    levels = torch.randint(lo, hi + 1, shape, generator=g, device=dev)
    applied = torch.rand(shape, generator=g, device=dev) < RAMC_OP_PROB
    negated = torch.rand(shape, generator=g, device=dev) > 0.5
    cutout_y = torch.randint(0, height, (n,), generator=g, device=dev)
    cutout_x = torch.randint(0, width, (n,), generator=g, device=dev)
    return RamcDraws(ops, levels, applied, negated, cutout_y, cutout_x)


def draw_table12(n: int, height: int, width: int, generator: torch.Generator, num_ops: int = 2) -> Table12Draws:
    """Draw the "table12" policy's choices: ops ~ U{0..13} (num_ops, n), u ~ U[0, 1) float64 (num_ops, n), one
    more U[0, 1) (num_ops, n) draw that is discarded (the former op-probability draw: it keeps every seed's
    images as they were), cutout_y ~ U{0..height-1} (n,), cutout_x ~ U{0..width-1} (n,), in this order."""
    g = _check_draw_generator(generator, "draw_table12")
    _check_size(n, height, width, "draw_table12")
    dev = g.device
    ops = torch.randint(0, len(OPS), (num_ops, n), generator=g, device=dev)
    u = torch.rand((num_ops, n), generator=g, device=dev, dtype=torch.float64)
    torch.rand((num_ops, n), generator=g, device=dev)
    cutout_y = torch.randint(0, height, (n,), generator=g, device=dev)
    cutout_x = torch.randint(0, width, (n,), generator=g, device=dev)
    return Table12Draws(ops, u, cutout_y, cutout_x)


def draw_strong(n: int, height: int, width: int, generator: torch.Generator, policy: str = "ramc") -> StrongDraws:
    """The strong view's draws: draw_weak's, then the policy's (draw_ramc or draw_table12), in that order."""
    _check_policy(policy, "draw_strong")
    weak = draw_weak(n, height, width, generator)
    pool = (draw_ramc if policy == "ramc" else draw_table12)(n, height, width, generator)
    return StrongDraws(weak, pool)


# ------------------------------------------------------------------------------------------------------------
# The math: pure functions of the images and the draws (no randomness, no host sync, shapes fixed by the batch)


def _apply_weak(x: torch.Tensor, draws: WeakDraws, flip: bool) -> torch.Tensor:
    """The image flipped where flip and draws.mirrored, then out[i, j] = flipped_padded[i + top, j + left] of
    the reflect-padded image: one gather."""
    n, _, h, w = x.shape
    pad_h, pad_w = _shift_pad(h), _shift_pad(w)
    dev = x.device

    def reflect(idx: torch.Tensor, size: int) -> torch.Tensor:  # numpy / TF "reflect": edge not repeated
        idx = idx.abs()
        return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)

    rows = reflect(torch.arange(h, device=dev).view(1, h) + draws.top.view(n, 1) - pad_h, h)  # (N, H)
    cols = reflect(torch.arange(w, device=dev).view(1, w) + draws.left.view(n, 1) - pad_w, w)  # (N, W)
    if flip:
        cols = torch.where(draws.mirrored.view(n, 1), w - 1 - cols, cols)  # flip first, then shift (libml `ms`)
    # Built in int32 (faster than int64 here); the reflection never leaves the image, so no fill is needed.
    index = rows.to(torch.int32).view(n, h, 1) * w + cols.to(torch.int32).view(n, 1, w)
    return _gather_pixels(x, index.to(torch.int64))


def _apply_strong(x: torch.Tensor, draws: StrongDraws, flip: bool) -> torch.Tensor:
    shifted = _apply_weak(x, draws.weak, flip)
    if isinstance(draws.pool, RamcDraws):
        return _apply_ramc(shifted, draws.pool)
    return _apply_table12(shifted, draws.pool)


def apply_weak(x: torch.Tensor, draws: WeakDraws, *, flip: bool = True) -> torch.Tensor:
    """weak_augment with the given draws (from draw_weak): a pure function, for torch.compile / CUDA graphs."""
    x = _check_images(x, "apply_weak")
    _check_draw_fields(draws, WeakDraws, {"mirrored": (x.shape[0],), "top": (x.shape[0],),
                                          "left": (x.shape[0],)}, x, "apply_weak", "draw_weak")
    return _apply_weak(x, draws, _check_flag(flip, "flip", "apply_weak"))


def apply_strong(x: torch.Tensor, draws: StrongDraws, *, flip: bool = True) -> torch.Tensor:
    """strong_augment with the given draws (from draw_strong): a pure function, for torch.compile / CUDA
    graphs. Checks shapes and devices only (a check of the values would read them back from the device)."""
    x = _check_images(x, "apply_strong")
    n = x.shape[0]
    if not isinstance(draws, StrongDraws):
        raise TypeError(f"apply_strong expects draws from draw_strong (a StrongDraws); got {type(draws).__name__}")
    _check_draw_fields(draws.weak, WeakDraws, {"mirrored": (n,), "top": (n,), "left": (n,)}, x, "apply_strong",
                       "draw_strong")
    if isinstance(draws.pool, RamcDraws):
        _check_draw_fields(draws.pool, RamcDraws, _ramc_shapes(n), x, "apply_strong", "draw_strong")
    else:
        rounds = draws.pool.ops.shape[0] if isinstance(draws.pool, Table12Draws) else 0
        _check_draw_fields(draws.pool, Table12Draws, {"ops": (rounds, n), "u": (rounds, n), "cutout_y": (n,),
                                                      "cutout_x": (n,)}, x, "apply_strong", "draw_strong")
    return _apply_strong(x, draws, _check_flag(flip, "flip", "apply_strong"))


def _check_draw_fields(draws: object, kind: type, shapes: dict[str, tuple[int, ...]], x: torch.Tensor,
                       caller: str, maker: str) -> None:
    if not isinstance(draws, kind):
        raise TypeError(f"{caller} expects draws from {maker} (a {kind.__name__}); got {type(draws).__name__}")
    for field, shape in shapes.items():
        value = getattr(draws, field)
        if tuple(value.shape) != shape or value.device != x.device:
            raise ValueError(
                f"{caller}: draws.{field} has shape {tuple(value.shape)} on {value.device}; expected {shape} on "
                f"{x.device} for {x.shape[0]} images: call {maker}(n, height, width, generator) for this batch"
            )


def _ramc_shapes(n: int) -> dict[str, tuple[int, ...]]:
    r = RAMC_NUM_OPS
    return {"ops": (r, n), "levels": (r, n), "applied": (r, n), "negated": (r, n), "cutout_y": (n,),
            "cutout_x": (n,)}


def _check_flag(value: object, name: str, caller: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{caller}: {name} must be True or False; got {value!r}")
    return value


def _check_policy(policy: object, caller: str) -> str:
    if policy not in STRONG_POLICIES:
        raise ValueError(
            f"{caller}: unknown policy {policy!r}; expected one of {', '.join(STRONG_POLICIES)} "
            "(ramc = the reference AugmentPoolRAMC, table12 = the FixMatch paper's Table 12 ranges)"
        )
    return policy


# ------------------------------------------------------------------------------------------------------------
# Public API: draw, then apply


def weak_augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool = True) -> torch.Tensor:
    """FixMatch's weak augmentation, drawn per sample: a random horizontal flip (p = 0.5; none if flip=False)
    and a random translation by up to 12.5 % of the side (4 px on 32x32) via reflect padding and a random
    crop.

    flip=True is the reference's CIFAR / STL-10 augmentation (`Primitives.ms`), flip=False its SVHN one
    (`Primitives.s`, shift only: digits are not mirror-symmetric); google-research/fixmatch libml/augment.py,
    `DEFAULT_AUGMENT`. x: uint8 (N, C, H, W) on any device; generator: a torch.Generator on the same device.
    Returns a new uint8 tensor of the same shape on the same device; x is not modified. Equals
    apply_weak(x, draw_weak(N, H, W, generator), flip=flip).
    """
    x = _check_images(x, "weak_augment")
    _check_generator(generator, x, "weak_augment")
    flip = _check_flag(flip, "flip", "weak_augment")
    n, _, h, w = x.shape
    return _apply_weak(x, draw_weak(n, h, w, generator), flip)


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
    Random draws (draw_strong), in order: the weak draws (draw_weak), then for "ramc" those of `draw_ramc`,
    for "table12" those of `draw_table12`. The same seed gives the same output on the same device. Equals
    apply_strong(x, draw_strong(N, H, W, generator, policy), flip=flip).
    """
    x = _check_images(x, "strong_augment")
    _check_generator(generator, x, "strong_augment")
    flip = _check_flag(flip, "flip", "strong_augment")
    policy = _check_policy(policy, "strong_augment")
    n, _, h, w = x.shape
    return _apply_strong(x, draw_strong(n, h, w, generator, policy), flip)


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


# ------------------------------------------------------------------------------------------------------------
# "ramc": the reference pool


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


def _ramc_matrices(is_op: torch.Tensor, signed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """_affine_matrices for RAMC_OPS with signed magnitudes in ramc_magnitude's units: Image.rotate(degrees)
    with Pillow's rounded coefficients (_pillow_rotation_table), shear coefficients, translations in pixels."""
    a, b, d = _table("rotation", signed.device)[signed.to(torch.int64).remainder(360)].unbind(1)
    return _affine_matrices(is_op, _RAMC_INDEX, (a, b, d), signed, signed, signed, h, w)


def _ramc_magnitude_table() -> torch.Tensor:
    """(14, 10) float64: ramc_magnitude(RAMC_OPS[k], level) at [k, level] (unsigned; 0 for the ops without one;
    column 0 unused), so that a round finds every sample's magnitude with one lookup."""
    levels = torch.arange(10)
    return torch.stack([torch.zeros(10, dtype=torch.float64) if name in _NO_MAGNITUDE else
                        ramc_magnitude(name, levels) for name in RAMC_OPS])


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
    Steps: the reference's wrap quantisation (_wrap_lut), RAMC_NUM_OPS rounds of op RAMC_OPS[ops[r, i]] at
    levels[r, i] where applied[r, i], with RGBA semantics (see the module docstring), transparent pixels ->
    FILL, then Cutout of RAMC_CUTOUT_SIZE px centred on (cutout_y, cutout_x) filled with FILL. Returns a new
    tensor. Checks the draws' values (ranges), which reads them back from the device; apply_strong does not.
    """
    x = _check_images(x, "apply_ramc")
    return _apply_ramc(x, _check_draws(draws, x))


def _apply_ramc(x: torch.Tensor, draws: RamcDraws) -> torch.Tensor:
    n, c, h, w = x.shape
    rgb = _table("wrap", x.device)[x.to(torch.int64)]
    # RGBA state: channel c is alpha, 255 (opaque) or 0 (transparent: brought in by a geometric op).
    state = torch.cat([rgb, torch.full((n, 1, h, w), 255, dtype=torch.uint8, device=x.device)], dim=1)
    for r in range(RAMC_NUM_OPS):
        state = _ramc_round(state, draws, r, h, w)
    alpha = state[:, c:]  # 0 / 255 per pixel; pil_unwrap: transparent -> 0.0 on [-1, 1] -> grey
    out = (state[:, :c] & alpha) | ((255 - alpha) & FILL)
    return _cutout_square(out, draws.cutout_y, draws.cutout_x, RAMC_CUTOUT_SIZE, FILL)


def _ramc_round(state: torch.Tensor, draws: RamcDraws, r: int, h: int, w: int) -> torch.Tensor:
    """One round of the reference pool on the RGBA state (N, C + 1, H, W), every sample's op at once.

    The colour ops see RGB (transparent pixels included, as in Pillow) and keep alpha, except those that go
    through convert('RGB'), which make every pixel opaque; the geometric ops resample RGB and alpha together,
    bringing in transparent black (0, 0, 0, 0)."""
    ops = torch.where(draws.applied[r], draws.ops[r], torch.full_like(draws.ops[r], _RAMC_IDENTITY))
    magnitude = _table("ramc_magnitude", state.device)[ops, draws.levels[r]]
    signed = torch.where(draws.negated[r], -magnitude, magnitude)   # only the geometric ops read the sign
    is_op = _op_mask(ops, len(RAMC_OPS))
    return _round(state, ops, is_op, _RAMC_INDEX, magnitude, _ramc_matrices(is_op, signed, h, w),
                  colour_channels=state.shape[1] - 1, opaque=_RAMC_OPAQUE, fill=0)


# ------------------------------------------------------------------------------------------------------------
# One RandAugment round: static shapes (every op on every image), or grouped by op on the CPU

# On the CPU a round groups the images by op (one argsort, one bincount read back) and runs each op on its
# group only: about 6x less work than evaluating all 14 ops on every image (benchmarks/bench_augment.py), and
# reading a count back costs nothing there. Everywhere else (a GPU, or inside torch.compile) a round has
# static shapes: no host sync, one graph, capturable by a CUDA graph. Both give the same images bit for bit
# (tests/test_augment_static.py); set False to run the static design on the CPU as well (the sync tests do).
GROUP_BY_OP_ON_CPU = True


def _grouped(x: torch.Tensor) -> bool:
    return GROUP_BY_OP_ON_CPU and x.device.type == "cpu" and not torch.compiler.is_compiling()


def _round(state: torch.Tensor, op: torch.Tensor, is_op: torch.Tensor, index: dict[str, int],
           magnitude: torch.Tensor, matrices: torch.Tensor, colour_channels: int, opaque: frozenset[str],
           fill: int) -> torch.Tensor:
    """Sample i gets the op `index` maps to op[i] (is_op = _op_mask(op)): a colour op with magnitude[i], or a
    geometric op with the inverse affine matrices[i] (the identity for the others; outside the image reads
    `fill`). Colour ops act on the first `colour_channels` channels; a further (alpha) channel becomes 255 under
    the ops in `opaque`."""
    if _grouped(state):
        return _round_grouped(state, op, index, magnitude, matrices, colour_channels, opaque, fill)
    c = colour_channels
    out = _colour_stage(state[:, :c], is_op, magnitude, index)
    if state.shape[1] > c:
        is_opaque = torch.zeros_like(op, dtype=torch.bool)
        for name in opaque:
            is_opaque = is_opaque | is_op[:, index[name]]
        alpha = state[:, c:] | (is_opaque.to(torch.uint8) * 255).view(-1, 1, 1, 1)  # alpha is 0 / 255
        out = torch.cat([out, alpha], dim=1)
    return _affine_nearest(out, matrices, fill)


@functools.cache
def _group_rank(names: tuple[str, ...]) -> torch.Tensor:
    """Position of each op (by index) in the grouped round's order: colour ops, then the geometric ones."""
    order = [n for n in names if n not in _GEOMETRIC] + [n for n in names if n in _GEOMETRIC]
    return torch.tensor([order.index(n) for n in names])


def _round_grouped(state: torch.Tensor, op: torch.Tensor, index: dict[str, int], magnitude: torch.Tensor,
                   matrices: torch.Tensor, colour_channels: int, opaque: frozenset[str], fill: int) -> torch.Tensor:
    """_round with the images sorted by op: every colour op runs once on the contiguous slice of its images,
    all geometric images share one resampling pass, one index_select restores the order."""
    names = tuple(sorted(index, key=index.__getitem__))
    group_order = [n for n in names if n not in _GEOMETRIC] + [n for n in names if n in _GEOMETRIC]
    key = _group_rank(names)[op]
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=len(names)).tolist()   # the host sync that the static round avoids
    xs = state.index_select(0, order)
    c = colour_channels
    pieces, start = [], 0
    for name, count in zip(group_order, counts, strict=True):
        if name in _GEOMETRIC:
            break
        sl = slice(start, start + count)
        start += count
        if count == 0:
            continue
        mag = None if name in _NO_MAGNITUDE else magnitude.index_select(0, order[sl])
        part = xs[sl]
        rgb = _colour_op(name, part[:, :c], mag)
        if part.shape[1] > c:
            rgb = torch.cat([rgb, torch.full_like(part[:, c:], 255) if name in opaque else part[:, c:]], dim=1)
        pieces.append(rgb)
    if start < len(order):   # the geometric ops, side by side in one pass
        pieces.append(_affine_nearest(xs[start:], matrices.index_select(0, order[start:]), fill))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(pieces).index_select(0, inverse)


# ------------------------------------------------------------------------------------------------------------
# "table12": the FixMatch paper's description


def _apply_table12(x: torch.Tensor, draws: Table12Draws) -> torch.Tensor:
    """Rounds of one op per sample, OPS[ops[r, i]] with magnitude from u[r, i], every drawn op applied; then
    Cutout of half the side. x is the already flipped / shifted batch."""
    h, w = x.shape[2:]
    for r in range(draws.ops.shape[0]):
        ops = draws.ops[r]
        magnitude = _table12_magnitudes(ops, draws.u[r])
        is_op = _op_mask(ops, len(OPS))
        x = _round(x, ops, is_op, _OP_INDEX, magnitude, _table12_matrices(is_op, magnitude, h, w),
                   colour_channels=x.shape[1], opaque=frozenset(), fill=FILL)
    return _cutout_square(x, draws.cutout_y, draws.cutout_x, int(CUTOUT_FRACTION * min(h, w)), FILL)


def _magnitude_ranges_table() -> torch.Tensor:
    """(14, 2) float64: (lo, hi - lo) of MAGNITUDE_RANGES per op of OPS (0, 0 for the ops without one), the
    differences taken in Python floats as the per-op formula takes them."""
    return torch.tensor([(MAGNITUDE_RANGES[n][0], MAGNITUDE_RANGES[n][1] - MAGNITUDE_RANGES[n][0])
                         if n in MAGNITUDE_RANGES else (0.0, 0.0) for n in OPS], dtype=torch.float64)


def _table12_magnitudes(op: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Each sample's magnitude for its op: lo + u (hi - lo), uniform over MAGNITUDE_RANGES; posterize's integer
    bits uniform over {lo, ..., hi}: lo + floor(u (hi - lo + 1))."""
    lo, span = _table("table12_ranges", u.device)[op].unbind(1)
    return torch.where(op == _OP_INDEX["posterize"], lo + torch.floor(u * (span + 1)), lo + u * span)


# ------------------------------------------------------------------------------------------------------------
# Normalisation

# (mean, std, device) -> the (1, C, 1, 1) float32 tensors of 255 * mean and 255 * std on that device, made once:
# building them from Python numbers on every call would copy them to the GPU and block the host each step.
_NORMALIZERS: dict[tuple[tuple[float, ...], tuple[float, ...], torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as float32 on x's device; mean and std on the 0-1 scale, one per
    channel (e.g. CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616)). Computed as
    (x - 255 mean) / (255 std) in float32, with the constants cached per device."""
    x = _check_images(x_uint8, "normalize")
    key = (tuple(mean), tuple(std), x.device)
    if key not in _NORMALIZERS:
        _NORMALIZERS[key] = _normalizer(key[0], key[1], x)
    m, s = _NORMALIZERS[key]
    return (x.to(torch.float32) - m) / s


def _normalizer(mean: tuple[float, ...], std: tuple[float, ...], x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"normalize: need one mean and one std per channel ({c}); got mean={mean}, std={std}"
        )
    if any(not math.isfinite(s) or s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive and finite; got {std}")
    m = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1) * 255.0
    return m.to(x.device), s.to(x.device)


_HOST_TABLES.update({f"levels_{str(t).removeprefix('torch.')}": torch.arange(256, dtype=t).view(1, 1, 256)
                     for t in (torch.uint8, torch.int64, torch.float64)})
_HOST_TABLES.update(wrap=_wrap_lut(), rotation=_pillow_rotation_table(), ramc_magnitude=_ramc_magnitude_table(),
                    table12_ranges=_magnitude_ranges_table())
