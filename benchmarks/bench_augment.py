"""Throughput of ssl_bench.augment against a plain per-image Pillow pipeline, measured in the same process.

    python benchmarks/bench_augment.py                 # CPU, one thread, 448 real CIFAR-10 images (32x32)
    python benchmarks/bench_augment.py --device cuda   # ours on the GPU (synchronised), Pillow on 1 thread

The reference is what a FixMatch data loader does per image: weak = random flip + reflect-pad-4 random crop
(numpy); strong "ramc" = the same, then google-research/fixmatch's AugmentPoolRAMC per image as its code runs
it (float [-1, 1] image -> pil_wrap to RGBA, 2 ops each applied with p = 0.5 at a level 1..9, pil_unwrap
through getdata, 16 px Cutout in numpy; third_party/auto_augment/augmentations.py); strong "table12" = the
flip / crop, 2 RandAugment ops with magnitudes from the paper's Table 12 through Pillow on RGB, a 16x16 grey
Cutout (numpy), as kekmodel's port does it. Both sides run on one CPU thread (torch.set_num_threads(1)); the
table gives images per second (median over repeats, the two pipelines timed alternately) and ours / Pillow.

A second table compares ours with ssl_bench.augment as it was before the static-shape design (``--before``, a
git revision: the version that grouped the images by op with argsort + bincount + .tolist(), a host sync
per round, and ran each op on its group only), loaded from git into this process: same draws, same images
(checked), images per second of each and the ratio. The static design evaluates every op of a round on every
image and picks with torch.where, so its work does not shrink with the group sizes; what it buys is no host
sync, one graph, a capturable step.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench import augment  # noqa: E402
from ssl_bench.augment import (  # noqa: E402
    FILL,
    MAGNITUDE_RANGES,
    OPS,
    RAMC_OPS,
    apply_op,
    strong_augment,
    weak_augment,
)

DATA = Path(os.environ.get("SSL_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REPO = Path(__file__).resolve().parents[1]
# The last commit whose ssl_bench/augment.py grouped the images by op (argsort + bincount + .tolist()).
BEFORE_REVISION = "c62e06e"


def augment_at(revision: str) -> types.ModuleType | str:
    """ssl_bench/augment.py as it was at a git revision of this repository, as a module (or why not).

    The project's own code from its history (git show), executed like any import of it."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:ssl_bench/augment.py"], check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"git show {revision}:ssl_bench/augment.py failed ({exc}); pass --before with a revision here"
    module = types.ModuleType(f"ssl_bench_augment_at_{revision}")
    sys.modules[module.__name__] = module   # dataclasses look their module up while the class is built
    exec(compile(source, f"{revision}:ssl_bench/augment.py", "exec"), module.__dict__)
    return module


# ------------------------------------------------------------------------------------------------------------
# The per-image Pillow reference, written plainly


def pillow_weak(img: np.ndarray, rng: random.Random, pad: int = 4) -> np.ndarray:
    if rng.random() < 0.5:
        img = img[:, ::-1]
    h, w = img.shape[:2]
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    top, left = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
    return padded[top : top + h, left : left + w]


def pillow_op(im: Image.Image, name: str, rng: random.Random) -> Image.Image:
    lo, hi = MAGNITUDE_RANGES.get(name, (0.0, 0.0))
    v = rng.uniform(lo, hi)
    gray = (FILL,) * 3
    if name == "identity":
        return im
    if name == "autocontrast":
        return ImageOps.autocontrast(im)
    if name == "equalize":
        return ImageOps.equalize(im)
    if name == "brightness":
        return ImageEnhance.Brightness(im).enhance(v)
    if name == "color":
        return ImageEnhance.Color(im).enhance(v)
    if name == "contrast":
        return ImageEnhance.Contrast(im).enhance(v)
    if name == "sharpness":
        return ImageEnhance.Sharpness(im).enhance(v)
    if name == "posterize":
        return ImageOps.posterize(im, rng.randint(int(lo), int(hi)))
    if name == "solarize":
        return ImageOps.solarize(im, v)
    if name == "rotate":
        return im.rotate(v, fillcolor=gray)
    affine = {
        "shear_x": (1, v, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, v, 1, 0),
        "translate_x": (1, 0, v * im.size[0], 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, v * im.size[1]),
    }[name]
    return im.transform(im.size, Image.Transform.AFFINE, affine, fillcolor=gray)


def pillow_strong(img: np.ndarray, rng: random.Random, num_ops: int = 2, size: int = 16) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(pillow_weak(img, rng)))
    for _ in range(num_ops):
        im = pillow_op(im, rng.choice(OPS), rng)
    out = np.array(im)
    h, w = out.shape[:2]
    cy, cx = rng.randrange(h), rng.randrange(w)
    out[max(0, cy - size // 2) : cy + size // 2, max(0, cx - size // 2) : cx + size // 2] = FILL
    return out


def _ramc_op(im: Image.Image, name: str, level: int, rng: random.Random) -> Image.Image:
    """One reference-pool op on an RGBA image, as augmentations.py defines it (level 1..9)."""
    sign = -1 if rng.random() > 0.5 else 1
    if name == "identity":
        return im
    if name in ("autocontrast", "equalize", "posterize", "solarize"):  # via convert('RGB')
        rgb = im.convert("RGB")
        if name == "autocontrast":
            rgb = ImageOps.autocontrast(rgb)
        elif name == "equalize":
            rgb = ImageOps.equalize(rgb)
        elif name == "posterize":
            rgb = ImageOps.posterize(rgb, 4 - int(level * 4 / 10))
        else:
            rgb = ImageOps.solarize(rgb, 256 - int(level * 256 / 10))
        return rgb.convert("RGBA")
    if name in ("color", "contrast", "brightness", "sharpness"):
        enhancer = {
            "color": ImageEnhance.Color,
            "contrast": ImageEnhance.Contrast,
            "brightness": ImageEnhance.Brightness,
            "sharpness": ImageEnhance.Sharpness,
        }[name]
        return enhancer(im).enhance(level * 1.8 / 10 + 0.1)
    if name == "rotate":
        return im.rotate(sign * int(level * 30 / 10))
    s, t = sign * level * 0.3 / 10, sign * int(level * 10 / 10)
    affine = {
        "shear_x": (1, s, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, s, 1, 0),
        "translate_x": (1, 0, t, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, t),
    }[name]
    return im.transform(im.size, Image.Transform.AFFINE, affine)


def pillow_ramc(img: np.ndarray, rng: random.Random, size: int = 16) -> np.ndarray:
    x = pillow_weak(img, rng).astype(np.float32) * np.float32(2.0 / 255) - np.float32(
        1.0
    )  # the [-1, 1] image
    im = Image.fromarray(np.uint8((x * 0.5 + 0.5) * 255.0)).convert("RGBA")  # pil_wrap
    for name, level in [(rng.choice(RAMC_OPS), rng.randint(1, 9)) for _ in range(2)]:
        if rng.random() < 0.5:
            im = _ramc_op(im, name, level, rng)
    # pil_unwrap. The reference reads the pixels with getdata(); np.asarray gives the same values faster, so
    # this per-image pipeline is if anything faster than the original.
    rgba = np.asarray(im) / 255.0
    out = (rgba[:, :, :3] - 0.5) / 0.5
    out[rgba[:, :, 3] == 0] = 0
    h, w = out.shape[:2]
    cy, cx = rng.randrange(h), rng.randrange(w)
    mask = np.ones_like(out)
    mask[max(0, cy - size // 2) : cy + size // 2, max(0, cx - size // 2) : cx + size // 2] = 0
    return (out * mask).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------


def load_batch(n: int) -> np.ndarray:
    path = DATA / "cifar10_subset.npz"
    if path.exists():
        with np.load(path) as data:
            x = data["x_train"][:n]
        if len(x) == n:
            return x
    print(f"(real images not found in {DATA}; using random pixels)")
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def interleaved_rates(
    ours: Callable[[], object],
    ref: Callable[[], object],
    n_images: int,
    repeats: int,
    sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Images per second of ours and of the reference, median over `repeats` calls each. The calls alternate
    (ours, ref, ours, ref, ...) so that both see the same load on a shared machine. `clock`: the wall clock,
    or time.process_time on the CPU (one thread: the time waiting for a core shared with other jobs is not
    counted)."""
    for fn in (ours, ref, ours, ref):  # warm-up
        fn()
    sync()
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for k, fn in enumerate((ours, ref)):
            sync()
            t0 = clock()
            fn()
            sync()
            times[k].append(clock() - t0)
    return n_images / statistics.median(times[0]), n_images / statistics.median(times[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="device for ours: cpu or cuda (Pillow is always CPU)")
    parser.add_argument("--batch", type=int, default=448, help="images per call (FixMatch: 7 x 64 unlabeled)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--no-kornia", action="store_true", help="skip the per-op comparison with kornia")
    parser.add_argument("--before", default=BEFORE_REVISION,
                        help="git revision of the grouped augmentation to compare with (default %(default)s; "
                             "'none' skips it)")
    parser.add_argument("--no-pillow", action="store_true", help="skip the comparison with per-image Pillow")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")

    torch.set_num_threads(1)
    device = torch.device(args.device)
    images = load_batch(args.batch)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    rng = random.Random(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n = len(images)

    if args.before != "none":
        before_table(x, args.before, args.repeats, sync)
    if args.no_pillow:
        return
    rows = []
    for view, ours_fn, pil_fn in [
        ("weak", lambda: weak_augment(x, gen), lambda: np.stack([pillow_weak(im, rng) for im in images])),
        (
            "strong ramc",
            lambda: strong_augment(x, gen, policy="ramc"),
            lambda: np.stack([pillow_ramc(im, rng) for im in images]),
        ),
        (
            "strong table12",
            lambda: strong_augment(x, gen, policy="table12"),
            lambda: np.stack([pillow_strong(im, rng) for im in images]),
        ),
    ]:
        rows.append((view, *interleaved_rates(ours_fn, pil_fn, n, args.repeats, sync)))

    print(
        f"{n} images 32x32, torch {torch.__version__} threads={torch.get_num_threads()}, ours on {device}, "
        f"Pillow {Image.__version__} per image on 1 CPU thread; median of {args.repeats} calls"
    )
    print()
    print("| view           | ours, img/s | Pillow per-image, img/s | ours / Pillow |")
    print("|----------------|------------:|------------------------:|--------------:|")
    for view, ours, ref in rows:
        print(f"| {view:<14} | {ours:>11,.0f} | {ref:>23,.0f} | {ours / ref:>12.1f}x |")
    if not args.no_kornia:
        kornia_table(x, args.repeats, sync)


def before_table(x: torch.Tensor, revision: str, repeats: int, sync: Callable[[], None]) -> None:
    """This tree's two round designs (static shapes; grouped by op, the CPU default) against the grouped
    augmentation of `revision`: same seeds, same images (checked), timed alternately with the old one
    (process CPU time on the CPU, the wall clock with synchronisation on a GPU)."""
    before = augment_at(revision)
    if isinstance(before, str):
        print(f"(before: {before})")
        return
    clock = time.perf_counter if x.device.type == "cuda" else time.process_time
    n = len(x)
    print(f"This tree vs git {revision} (grouped by op, a host sync per round): {n} images 32x32 on {x.device}, "
          f"threads={torch.get_num_threads()}, median of {repeats} calls, alternating, "
          f"{'wall clock' if x.device.type == 'cuda' else 'process CPU time'}; static = every op on every image "
          "(the GPU's and torch.compile's path), grouped = this tree's CPU default")
    print()
    print(f"| view           | design  | this tree, img/s | {revision}, img/s | this / {revision} | same images |")
    print("|----------------|---------|-----------------:|---------------:|---------------:|:-----------:|")
    views = [
        ("weak", weak_augment, before.weak_augment),
        ("strong ramc", lambda x, g: strong_augment(x, g, policy="ramc"),
         lambda x, g: before.strong_augment(x, g, policy="ramc")),
        ("strong table12", lambda x, g: strong_augment(x, g, policy="table12"),
         lambda x, g: before.strong_augment(x, g, policy="table12")),
    ]
    default = augment.GROUP_BY_OP_ON_CPU
    try:
        for view, now, then in views:
            for design in ("static", "grouped"):
                if view == "weak" and design == "grouped":
                    continue   # the weak view has no rounds: one design
                augment.GROUP_BY_OP_ON_CPU = design == "grouped"
                if design == "grouped" and x.device.type != "cpu":
                    continue   # grouping is the CPU's only
                same = all(torch.equal(now(x, torch.Generator(x.device).manual_seed(s)),
                                       then(x, torch.Generator(x.device).manual_seed(s))) for s in range(3))
                g_now, g_then = torch.Generator(x.device).manual_seed(0), torch.Generator(x.device).manual_seed(0)
                ours, ref = interleaved_rates(lambda now=now, g=g_now: now(x, g),
                                              lambda then=then, g=g_then: then(x, g), n, repeats, sync, clock)
                label = "-" if view == "weak" else design
                print(f"| {view:<14} | {label:<7} | {ours:>16,.0f} | {ref:>14,.0f} | {ours / ref:>13.2f}x "
                      f"| {'yes' if same else 'NO':^11} |")
    finally:
        augment.GROUP_BY_OP_ON_CPU = default
    print()


def kornia_table(x: torch.Tensor, repeats: int, sync: Callable[[], None]) -> None:
    """Single ops with per-sample factors: ours (uint8, Pillow semantics) vs kornia's functional ops (float in
    [0, 1], kornia's own semantics, so a speed comparison only). kornia is optional: skipped if
    not installed."""
    try:
        import kornia
    except ImportError:
        print("\n(kornia not installed: `pip install kornia` adds a per-op comparison)")
        return
    n = len(x)
    g = torch.Generator(device=x.device).manual_seed(1)
    factors = torch.rand(n, generator=g, device=x.device) * 0.9 + 0.05
    angles = torch.rand(n, generator=g, device=x.device) * 60 - 30
    bits = torch.randint(4, 9, (n,), generator=g, device=x.device)
    xf = x.float() / 255.0
    cases = [
        (
            "contrast",
            lambda: apply_op("contrast", x, factors),
            lambda: kornia.enhance.adjust_contrast(xf, factors),
        ),
        (
            "color",
            lambda: apply_op("color", x, factors),
            lambda: kornia.enhance.adjust_saturation(xf, factors),
        ),
        (
            "sharpness",
            lambda: apply_op("sharpness", x, factors),
            lambda: kornia.enhance.sharpness(xf, factors),
        ),
        ("equalize", lambda: apply_op("equalize", x), lambda: kornia.enhance.equalize(xf)),
        (
            "posterize",
            lambda: apply_op("posterize", x, bits.float()),
            lambda: kornia.enhance.posterize(xf, bits),
        ),
        ("solarize", lambda: apply_op("solarize", x, factors), lambda: kornia.enhance.solarize(xf, factors)),
        (
            "rotate",
            lambda: apply_op("rotate", x, angles),
            lambda: kornia.geometry.transform.rotate(xf, angles, mode="nearest"),
        ),
    ]
    print(
        f"\nOne op on all {n} images, per-sample factors; "
        f"kornia {kornia.__version__} functional ops on float input"
    )
    print()
    print("| op        | ours, img/s | kornia, img/s | ours / kornia |")
    print("|-----------|------------:|--------------:|--------------:|")
    for name, ours_fn, kornia_fn in cases:
        ours, ref = interleaved_rates(ours_fn, kornia_fn, n, repeats, sync)
        print(f"| {name:<9} | {ours:>11,.0f} | {ref:>13,.0f} | {ours / ref:>12.1f}x |")


if __name__ == "__main__":
    main()
