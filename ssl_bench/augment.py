"""Batched FixMatch augmentation on the batch's device: weak (flip + translate) and strong (weak + RandAugment + Cutout).

FixMatch (Sohn et al., NeurIPS 2020) trains on two views of every unlabeled image:

* weak   = random horizontal flip (p = 0.5), then a random translation by up to 12.5 % of the side
           (4 px on 32x32): reflect-pad and random crop, as ``augment_shift`` in google-research/fixmatch
           ``libml/augment.py`` (``Primitives.ms(4)``, used for cifar10/cifar100).
* strong = the same flip + translate, then RandAugment (2 ops, each sample its own ops and its own magnitudes
           drawn uniformly from the ranges of the paper's Table 12), then Cutout (a 0.5 x side square of gray).

Every op is written here on uint8 tensors, batched, with per-sample parameters and no Python loop over samples:
samples are grouped by op (one ``argsort`` per RandAugment round) and each colour op runs once on its group;
the five geometric ops of a round share one nearest-neighbour resampling pass. Reasons for writing the ops by
hand instead of using a library: torchvision cannot be imported in this project (and its v2 RandAugment, like
kornia's, draws ONE op set per call for the whole batch, which is not FixMatch's per-image RandAugment); kornia
is not a dependency; and a hand-written op costs a few tensor kernels per call, with no per-image or per-call
Python objects. Every op reproduces Pillow (the library FixMatch's reference code augments with) to within one
grey level or exactly; ``tests/test_augment.py`` checks each one against Pillow on real CIFAR-10 images.

Randomness: every draw comes from the ``torch.Generator`` passed in, which must live on the batch's device, and
the draws are made in a fixed order and fixed shapes, so the same seed gives the same images on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "CUTOUT_FRACTION",
    "FILL",
    "MAGNITUDE_RANGES",
    "OPS",
    "apply_op",
    "cutout",
    "normalize",
    "strong_augment",
    "weak_augment",
]

# The 14 RandAugment ops FixMatch uses: `RANDOM_POLICY_OPS` in google-research/fixmatch libml/augment.py and the
# RandAugment rows of the FixMatch paper's Table 12 (no Invert, no Cutout among the ops; Cutout comes after).
OPS: tuple[str, ...] = (
    "identity", "autocontrast", "brightness", "color", "contrast", "equalize", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)  # fmt: skip

# Magnitude ranges, sampled uniformly per sample and per application (FixMatch paper, Sec. 2.3: a RandAugment
# variant that draws each op's magnitude at random from a predefined range instead of one global magnitude; the
# ranges are the paper's Table 12, reproduced as `fixmatch_augment_pool` in kekmodel/FixMatch-pytorch).
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

# Gray used for the pixels that geometric ops bring in from outside the image and for the Cutout square.
# FixMatch's RandAugment ("RA", libml/augment.py + third_party/auto_augment/augmentations.py) works on images
# scaled to [-1, 1]: Pillow's transform leaves alpha = 0 outside the image, `pil_unwrap` sets those pixels to 0,
# and `cutout_numpy` multiplies the square by 0, i.e. both are 127.5 on the 0-255 scale; the reference code's own
# float -> uint8 conversion (`np.round(127.5 * (1 + x))` in libml/ctaugment.py) turns 0 into 128.
# (The popular PyTorch port fills geometric ops with black and Cutout with 127.)
FILL = 128

# Cutout side as a fraction of the image side: `cutout_numpy(img, size=16)` on 32x32 CIFAR in
# libml/augment.py (AugmentPoolRAMC, the `rac` augmentation of ablation/ab_fixmatch_ra.py): 16 / 32 = 0.5.
CUTOUT_FRACTION = 0.5

# Weak translation: reflect-pad by 4 px and random-crop 32x32 (libml/augment.py `augment_shift(x, 4)` for CIFAR,
# 12 px for 96x96 STL-10): 12.5 % of the side.
TRANSLATE_FRACTION = 0.125

_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_OP_INDEX = {name: i for i, name in enumerate(OPS)}
# Order in which a RandAugment round processes its groups: colour ops, then the geometric ops side by side.
_GROUP_ORDER = tuple(op for op in OPS if op not in _GEOMETRIC) + _GEOMETRIC
_GROUP_RANK = torch.tensor([_GROUP_ORDER.index(op) for op in OPS])


# --------------------------------------------------------------------------------------------------------------
# Input checks (the boundary: everything inside trusts its inputs)


def _check_images(x: object, caller: str) -> torch.Tensor:
    expected = "a uint8 tensor of shape (N, C, H, W) with C = 1 or 3 (raw 0-255 pixels, channels first)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{caller} expects {expected}; got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(
            f"{caller} expects {expected}; got dtype {x.dtype} with shape {tuple(x.shape)}. Augment the raw uint8 "
            "images and call normalize() afterwards."
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


# --------------------------------------------------------------------------------------------------------------
# Building blocks


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L as (M, 1, H, W) uint8.

    Pillow documents L = R * 299/1000 + G * 587/1000 + B * 114/1000 and computes it in 16-bit fixed point with
    rounding (`L24` in libImaging/Convert.c): (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16. The fixed-point
    form is used here because it is what Pillow outputs, bit for bit.
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
    which picks a different pixel than Pillow wherever the point lies near a pixel border, and it needs a float
    copy of the batch. This is the same single batched resampling pass, on uint8, with Pillow's exact rule.
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
    # Out-of-image sources read a one-pixel border of `fill` (clamping to -1 / side lands on it): no mask pass.
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


# --------------------------------------------------------------------------------------------------------------
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

    For uint8, 255 - v == v XOR 255, and v >= threshold <=> v >= ceil(threshold): an integer compare and an xor,
    about 10x faster on the CPU than torch.where."""
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


# --------------------------------------------------------------------------------------------------------------
# Public API


def _weak(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (p = 0.5), then reflect-pad by `pad` and random-crop back to (H, W), per sample.

    Draws, in this order: u_flip ~ U[0, 1) (N,), top ~ U{0..2 pad_h} (N,), left ~ U{0..2 pad_w} (N,); the image is
    flipped where u_flip < 0.5, and out[i, j] = flipped_padded[i + top, j + left].
    """
    n, _, h, w = x.shape
    pad_h, pad_w = round(TRANSLATE_FRACTION * h), round(TRANSLATE_FRACTION * w)
    dev = x.device
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    top = torch.randint(0, 2 * pad_h + 1, (n,), generator=generator, device=dev)
    left = torch.randint(0, 2 * pad_w + 1, (n,), generator=generator, device=dev)

    def reflect(idx: torch.Tensor, size: int) -> torch.Tensor:  # numpy / TF "reflect": edge not repeated
        idx = idx.abs()
        return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)

    rows = reflect(torch.arange(h, device=dev).view(1, h) + top.view(n, 1) - pad_h, h)  # (N, H)
    cols = reflect(torch.arange(w, device=dev).view(1, w) + left.view(n, 1) - pad_w, w)  # (N, W)
    cols = torch.where(flip.view(n, 1), w - 1 - cols, cols)  # flip first, then shift (libml `ms`)
    # Built in int32 (faster than int64 here); the reflection never leaves the image, so no fill is needed.
    index = rows.to(torch.int32).view(n, h, 1) * w + cols.to(torch.int32).view(n, 1, w)
    return _gather_pixels(x, index.to(torch.int64))


def weak_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """FixMatch's weak augmentation: random horizontal flip (p = 0.5) and a random translation by up to 12.5 %
    of the side (4 px on 32x32) via reflect padding and a random crop, drawn per sample.

    x: uint8 (N, C, H, W) on any device; generator: a torch.Generator on the same device.
    Returns a new uint8 tensor of the same shape on the same device; x is not modified.
    Source: google-research/fixmatch libml/augment.py, `Primitives.ms(4)` = `augment_shift(augment_mirror(x), 4)`.
    """
    x = _check_images(x, "weak_augment")
    _check_generator(generator, x, "weak_augment")
    return _weak(x, generator)


def cutout(
    x: torch.Tensor, generator: torch.Generator, fraction: float = CUTOUT_FRACTION, fill: int = FILL
) -> torch.Tensor:
    """Cutout as FixMatch's reference `cutout_numpy` / `create_cutout_mask` (third_party/auto_augment): a centre
    (cy, cx) is drawn uniformly over all pixels and rows [cy - s//2, cy + s//2) x cols [cx - s//2, cx + s//2),
    clipped to the image, are set to `fill`; s = int(fraction * min(H, W)) (16 on 32x32). Returns a new tensor.

    Draws, in order: cy ~ U{0..H-1} (N,), cx ~ U{0..W-1} (N,)."""
    x = _check_images(x, "cutout")
    _check_generator(generator, x, "cutout")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"cutout: fraction must be in [0, 1]; got {fraction!r}")
    n, _, h, w = x.shape
    size = int(fraction * min(h, w))
    cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=x.device)
    if size // 2 == 0:
        return x.clone()
    ii = torch.arange(h, device=x.device).view(1, h, 1)
    jj = torch.arange(w, device=x.device).view(1, 1, w)
    in_rows = ((ii >= cy - size // 2) & (ii < cy + size // 2)).to(torch.uint8)  # (N, H, 1)
    in_cols = ((jj >= cx - size // 2) & (jj < cx + size // 2)).to(torch.uint8)  # (N, 1, W)
    box = (in_rows * in_cols).unsqueeze(1)  # (N, 1, H, W) of 0 / 1
    # (x AND keep) OR fill_bits with keep = 0 inside the box, 255 outside: many times faster on the CPU than
    # masked_fill / where with a broadcast mask.
    return (x & (255 - box * 255)) | (box * fill)


def strong_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    num_ops: int = 2,
    *,
    op_prob: float = 1.0,
    cutout_fraction: float = CUTOUT_FRACTION,
) -> torch.Tensor:
    """FixMatch's strong augmentation, per sample: weak flip + translate, then RandAugment, then Cutout.

    Composition, as FixMatch's reference code builds the strong view (ablation/ab_fixmatch_ra.py sets
    `--augment=d.d.rac`; in libml/augment.py `rac` = the default CIFAR tf-side augmentation `Primitives.ms(4)`,
    i.e. flip + reflect-pad-4 crop, followed by `AugmentPoolRAMC`: 2 RandAugment ops and `cutout_numpy`):

    1. random horizontal flip + random translation by up to 12.5 %, as in weak_augment but drawn independently
       (call strong_augment on the raw batch, not on the weak view);
    2. `num_ops` rounds; in each, every sample draws one of the 14 OPS uniformly (with replacement across
       rounds, like `np.random.choice`) and its own magnitude uniformly from MAGNITUDE_RANGES (FixMatch paper,
       Sec. 2.3 / Table 12). Every drawn op is applied (op_prob = 1.0: the paper describes no skipping, and the
       reference ImageNet RandAugment class, imagenet/augment/rand_augment.py, defaults to prob_to_apply=None,
       "always apply"). The reference CIFAR `rac` pool (AugmentPoolRAMC) instead applies each op with
       probability 0.5 and uses integer levels 1..9 mapped through AutoAugment's ranges; op_prob=0.5
       reproduces its skipping (not its level mapping);
    3. Cutout of a gray (FILL) square of side cutout_fraction x side (16 px on 32x32), see `cutout`.

    x: uint8 (N, C, H, W) on any device; generator on the same device. Returns a new uint8 tensor.
    Random draws, in order: the weak draws, ops (num_ops, N), magnitudes u (num_ops, N), apply u (num_ops, N),
    cutout centres. The same seed gives the same output on the same device.
    """
    x = _check_images(x, "strong_augment")
    _check_generator(generator, x, "strong_augment")
    if not isinstance(num_ops, int) or num_ops < 0:
        raise ValueError(f"strong_augment: num_ops must be an int >= 0; got {num_ops!r}")
    if not 0.0 <= op_prob <= 1.0:
        raise ValueError(f"strong_augment: op_prob must be in [0, 1]; got {op_prob!r}")
    if not 0.0 <= cutout_fraction <= 1.0:
        raise ValueError(f"strong_augment: cutout_fraction must be in [0, 1]; got {cutout_fraction!r}")

    n, _, h, w = x.shape
    dev = x.device
    out = _weak(x, generator)
    ops = torch.randint(0, len(OPS), (num_ops, n), generator=generator, device=dev)
    u_mag = torch.rand((num_ops, n), generator=generator, device=dev, dtype=torch.float64)
    u_apply = torch.rand((num_ops, n), generator=generator, device=dev)
    if op_prob < 1.0:
        ops = torch.where(u_apply < op_prob, ops, torch.zeros_like(ops))  # skipped -> identity (index 0)
    for r in range(num_ops):
        out = _randaugment_round(out, ops[r], u_mag[r], h, w)
    return cutout(out, generator, cutout_fraction, FILL)


def _magnitudes(name: str, u: torch.Tensor) -> torch.Tensor:
    lo, hi = MAGNITUDE_RANGES[name]
    if name == "posterize":  # integer bits, uniform over {lo, ..., hi}
        return lo + torch.floor(u * (hi - lo + 1))
    return lo + u * (hi - lo)


def _randaugment_round(x: torch.Tensor, ops: torch.Tensor, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """One RandAugment layer: sample i gets OPS[ops[i]] with magnitude from u[i].

    Samples are sorted by op, colour ops first and the five geometric ops last (one argsort and one bincount:
    a single host sync per round); every colour op then runs once on the contiguous slice of its samples and
    all geometric samples share one affine resampling pass. One index_select restores the original order.
    """
    key = _GROUP_RANK.to(ops.device)[ops]
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=len(OPS)).tolist()
    xs, us = x.index_select(0, order), u.index_select(0, order)
    pieces, start, geo_start, geo_mats = [], 0, None, []
    for name, count in zip(_GROUP_ORDER, counts, strict=True):
        sl = slice(start, start + count)
        start += count
        if count == 0:
            continue
        if name in _GEOMETRIC:
            geo_start = sl.start if geo_start is None else geo_start
            geo_mats.append(_geometric_matrix(name, _magnitudes(name, us[sl]), h, w))
        else:
            mag = _magnitudes(name, us[sl]) if name in MAGNITUDE_RANGES else None
            pieces.append(_COLOUR_OPS[name](xs[sl], mag))
    if geo_mats:
        pieces.append(_affine_nearest(xs[geo_start:], torch.cat(geo_mats), FILL))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(pieces).index_select(0, inverse)


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as float32 on x's device; mean and std on the 0-1 scale, one per channel
    (e.g. CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2471, 0.2435, 0.2616))."""
    x = _check_images(x_uint8, "normalize")
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"normalize: need one mean and one std per channel ({c}); got mean={tuple(mean)}, std={tuple(std)}"
        )
    if any(not math.isfinite(s) or s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive and finite; got {tuple(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1) * 255.0
    return (x.to(torch.float32) - m) / s
