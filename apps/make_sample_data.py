"""Draw synthetic dermoscopy-like studies with exact masks, for ``sample-data/``.

The real data may not be redistributed, so the bundled studies are drawn: skin with mottled
texture, an irregular pigmented lesion with a darker core, hairs and the dermoscope's vignette. The
mask is the lesion's outline exactly, so the images double as test inputs with known answers.
Deterministic for a given seed.

Example::

    lesion-make-sample-data sample-data --count 10 --labelled 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter, zoom


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Noise in [0, 1] with features about ``shape / cells`` across."""
    coarse = rng.random((cells, cells))
    field = zoom(coarse, (shape[0] / cells, shape[1] / cells), order=3)[: shape[0], : shape[1]]
    field -= field.min()
    return field / max(field.max(), 1e-6)


def lesion_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """An irregular star-shaped blob: a radius that wobbles with a few random harmonics."""
    h, w = shape
    cy = h / 2 + rng.uniform(-0.12, 0.12) * h
    cx = w / 2 + rng.uniform(-0.12, 0.12) * w
    base = rng.uniform(0.14, 0.3) * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.ones_like(theta)
    for k in range(2, 7):
        radius += rng.uniform(0.0, 0.22 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) < base * radius


def draw_study(rng: np.random.Generator, shape: tuple[int, int] = (384, 512)) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 photograph and its (H, W) bool lesion mask."""
    h, w = shape
    skin = np.array([rng.uniform(200, 235), rng.uniform(150, 185), rng.uniform(125, 160)])
    mottling = _smooth_noise(rng, shape, 6)[..., None]
    img = skin * (0.9 + 0.15 * mottling) + rng.normal(0, 4, (h, w, 3))

    mask = lesion_mask(rng, shape)
    red = rng.uniform(85, 140)
    green = red * rng.uniform(0.5, 0.68)
    pigment = np.array([red, green, green * rng.uniform(0.6, 0.85)])  # browns, from tan to near black
    core = gaussian_filter(mask.astype(float), sigma=min(h, w) / 14)  # darker towards the middle
    blotches = _smooth_noise(rng, shape, 14)[..., None]
    lesion = pigment * (1.25 - 0.6 * core[..., None]) * (0.8 + 0.35 * blotches)
    alpha = gaussian_filter(mask.astype(float), sigma=1.0)[..., None]  # a slightly soft, camera-like border
    img = img * (1 - alpha) + lesion * alpha

    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 9))):
        p0, p1, p2 = (rng.uniform([0, 0], [w, h]) for _ in range(3))
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        shade = int(rng.integers(20, 60))
        draw.line([tuple(p) for p in curve], fill=(shade, shade - 10, shade - 15), width=int(rng.integers(1, 4)))
    img = np.asarray(canvas, dtype=float)

    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)
    vignette = np.clip(1.0 - rng.uniform(0.3, 0.7) * r**3, 0.0, 1.0)
    img = img * vignette[..., None]
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_sample_data(out: Path, count: int, labelled: int, seed: int = 7, png_every: int = 4) -> list[Path]:
    """Writes ``count`` studies to ``out`` (every ``png_every``-th as PNG) and 0/1 labels for ``labelled``."""
    rng = np.random.default_rng(seed)
    labels = out / "labels" / "final"
    labels.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        shape = (384, 512) if i % 3 else (512, 512)
        img, mask = draw_study(rng, shape)
        name = f"lesion_{i:03d}"
        path = out / (f"{name}.png" if png_every and i % png_every == png_every - 1 else f"{name}.jpg")
        if path.suffix == ".jpg":
            Image.fromarray(img).save(path, quality=90)
        else:
            Image.fromarray(img).save(path)
        if i < labelled:
            Image.fromarray(mask.astype(np.uint8), mode="L").save(labels / f"{name}.png")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-make-sample-data", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--labelled", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    for path in make_sample_data(args.out, args.count, args.labelled, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
