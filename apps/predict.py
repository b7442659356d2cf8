"""Segment dermoscopic photographs from the command line and write one lesion mask per photograph.

By default the two shipped models are averaged (an ensemble) and the mask is cleaned up (largest region,
holes filled), exactly as :class:`lesion_app.core.predictor.Predictor` does. ``--format png`` writes the
app's own masks (``<id>.png``, 0/1); ``--format isic`` writes an ISIC 2018 Task 1 submission
(``<id>_segmentation.png``, 0/255), which the official scorer ``isic-challenge-scoring`` reads: it counts
only values above 128 as lesion, so a 0/1 mask would score as empty there.

Example::

    lesion-predict ../shared/data/isic/images predictions --format isic --tta
    lesion-predict photo.jpg masks --model runs/unet.pt
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lesion_app.core.checkpoint import load_model
from lesion_app.core.predictor import Predictor
from lesion_app.io.files import atomic_write
from lesion_app.io.images import open_image, to_rgb
from lesion_app.io.layout import IMAGE_SUFFIXES, MASK_TAILS, is_image_file
from lesion_app.lib.settings import shipped_models

#: The shipped models, averaged when no --model is given.
DEFAULT_MODELS: tuple[Path, ...] = tuple(shipped_models("ensemble"))
#: Output name and the value written for lesion pixels, per --format.
FORMATS: dict[str, tuple[str, int]] = {"png": ("{id}.png", 1), "isic": ("{id}_segmentation.png", 255)}
PROG = "lesion-predict"


class UsageError(Exception):
    """Nothing can be predicted (no input, no images, bad model); the program exits with status 2."""


def find_images(source: Path) -> list[Path]:
    """The photographs to segment: ``source`` itself, or the image files directly inside it, sorted."""
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"{source} is not an image (expected one of {', '.join(IMAGE_SUFFIXES)})")
        return [source]
    if not source.is_dir():
        raise UsageError(f"input {source} does not exist")
    # masks (ISIC's ground truth beside its images) are not photographs: not segmented twice
    images = sorted(p for p in source.iterdir() if is_image_file(p) and not p.stem.endswith(MASK_TAILS))
    if not images:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    return images


def output_names(images: Sequence[Path], fmt: str) -> list[str]:
    """Mask file names; two photographs with the same id (a.jpg, a.png) would overwrite each other."""
    pattern = FORMATS[fmt][0]
    names = [pattern.format(id=p.stem) for p in images]
    seen: dict[str, Path] = {}
    for name, image in zip(names, images):
        if name in seen:
            raise UsageError(f"{seen[name].name} and {image.name} would both be written to {name}")
        seen[name] = image
    return names


def check_readable(path: Path) -> None:
    """Decodes the whole photograph, so a corrupt or truncated file is reported with PIL's own reason.

    The MONAI loader that the prediction uses wraps such errors in a message that names neither the
    file nor the cause.
    """
    try:
        with open_image(path) as img:
            to_rgb(img).load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise OSError(_one_line(e)) from e


def write_mask(path: Path, mask: np.ndarray, lesion_value: int) -> None:
    """Single-channel 8-bit PNG, written atomically so a reader never sees half a mask."""
    img = Image.fromarray((mask > 0).astype(np.uint8) * np.uint8(lesion_value))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _one_line(e: BaseException) -> str:
    """The first line of an error; torch's and MONAI's run to a paragraph, and one line per file is wanted."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _failing_model(paths: Sequence[Path]) -> Path | str:
    """Which of several model files cannot be loaded, to name it in the error (only called on failure)."""
    for path in paths:
        try:
            load_model(path)
        except Exception:
            return path
    return ", ".join(map(str, paths))


def _is_within(path: Path, folder: Path) -> bool:
    """Whether writing to ``path`` would change ``folder`` (resolved, so ``./in/../in`` counts too)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path, help="a photograph, or a folder of them")
    p.add_argument("output", type=Path, help="folder for the masks (created)")
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        type=Path,
        help="model file; repeat to average several (default: the two shipped models)",
    )
    p.add_argument("--tta", action="store_true", help="average over the four flips (slower, slightly better)")
    p.add_argument("--no-postprocess", action="store_true", help="keep every region and hole the network gives")
    p.add_argument("--format", choices=sorted(FORMATS), default="png", help="png: <id>.png 0/1; isic: ISIC 2018")
    p.add_argument("--threshold", type=float, default=0.5, help="probability above which a pixel is lesion")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    args = p.parse_args(argv)
    if not 0.0 < args.threshold < 1.0:
        p.error(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.threads < 0:
        p.error(f"--threads must be 0 or more, got {args.threads}")
    try:
        return _run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    images = find_images(args.input)
    names = output_names(images, args.format)
    if args.input.is_dir() and _is_within(args.output, args.input):
        raise UsageError(f"output {args.output} lies in the input folder {args.input}, which is never modified")
    if args.input.is_file() and args.output.resolve() == args.input.resolve().parent:
        raise UsageError(f"output {args.output} is the photograph's own folder, which is never modified")
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"output {args.output} exists and is not a folder")
    model_paths = args.models or list(DEFAULT_MODELS)
    for m in model_paths:
        if not m.is_file():
            raise UsageError(f"model file {m} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        predictor = Predictor.from_files(
            model_paths, tta=args.tta, postprocess=not args.no_postprocess, threshold=args.threshold
        )
    except Exception as e:  # a file that is not a model: torch, pickle and key errors alike
        raise UsageError(f"cannot load model {_failing_model(model_paths)}: {_one_line(e)}") from e
    args.output.mkdir(parents=True, exist_ok=True)

    lesion_value = FORMATS[args.format][1]
    failed: list[Path] = []
    t0 = last = time.monotonic()
    for i, (image, name) in enumerate(zip(images, names), 1):
        try:
            check_readable(image)
        except OSError as e:
            print(f"{PROG}: error: cannot read {image}: {e}; skipped", file=sys.stderr)
            failed.append(image)
        else:
            write_mask(args.output / name, predictor.mask(image), lesion_value)
        now = time.monotonic()
        if i == len(images) or now - last >= 1.0:
            print(f"{i}/{len(images)} images, {now - t0:.1f} s", file=sys.stderr)
            last = now
    if failed:
        print(f"{PROG}: {len(failed)} of {len(images)} images could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
