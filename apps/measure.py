"""Measure lesion masks (size, asymmetry, border, colour) and write one CSV row per mask.

The source is a studies folder or a data folder (photographs with ``labels/final/`` or ``masks/`` beside them: the
colour values are measured on each mask's photograph), or a folder of masks alone (``--images`` names the
photographs' folder for the colour values). Masks are 0/1 or 0/255 PNG, TIFF or BMP, or 3D Slicer's NRRD/NIfTI,
measured upright (as the app shows them). Millimetre columns are filled only with ``--pixel-spacing``: photographs
carry no calibration the app can trust. The measurements are :func:`lesion_app.core.measurements.measure`'s, the
same as the server's infer results and ``GET /measurements/<image>``. Example::

    lesion-measure studies --out measurements.csv --pixel-spacing 0.02
    lesion-measure predictions --images ../shared/data/isic/images --out isic.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from tqdm import tqdm

from lesion_app.core.measurements import COLUMNS, check_spacing, measure, photograph_rgb
from lesion_app.io.files import atomic_write
from lesion_app.io.images import read_mask
from lesion_app.io.layout import MASK_DIRS, MASK_TAILS, discover_pairs, image_files, image_id

PROG = "lesion-measure"
#: The CSV's columns: which mask and photograph, then every measurement.
FIELDS = ("id", "mask", "image", *COLUMNS)


class UsageError(Exception):
    """Nothing can be measured (no source, no masks); the program exits with status 2."""


def mask_pairs(source: Path, images: Path | None) -> list[tuple[str, Path, Path | None]]:
    """(id, mask, photograph or None) for every mask to measure, sorted by id."""
    if not source.is_dir():
        raise UsageError(f"source {source} is not a folder")
    if images is not None:
        if not images.is_dir():
            raise UsageError(f"--images {images} is not a folder")
        found, problems = discover_pairs(images, masks=source)
        pairs = [(image_id(img), mask, img) for img, mask in found if mask is not None]
    elif any((source / d).is_dir() for d in MASK_DIRS):
        found, problems = discover_pairs(source)
        pairs = [(image_id(img), mask, img) for img, mask in found if mask is not None]
    else:  # a folder of masks alone
        problems = []
        pairs = []
        for mask in image_files(source):
            stem = image_id(mask)
            tail = next((t for t in MASK_TAILS if stem.endswith(t)), "")
            pairs.append((stem[: -len(tail)] if tail else stem, mask, None))
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
    if not pairs:
        raise UsageError(f"no masks found in {source}")
    return sorted(pairs, key=lambda p: p[0])


def measure_file(mask: Path, image: Path | None, spacing_mm: float | None) -> dict[str, object]:
    """One mask's measurements (colour too when its photograph is given), as the server measures it."""
    rgb = photograph_rgb(image) if image is not None else None
    return measure(read_mask(mask), spacing_mm, rgb)


def columns_help() -> str:
    """The epilog of ``--help``: every column and its unit."""
    lines = ["columns (one row per mask):", "  id: the photograph's id", "  mask, image: the files measured"]
    lines += [f"  {name}: {unit}" for name, unit in COLUMNS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        epilog=columns_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", type=Path, help="a studies or data folder, or a folder of masks")
    p.add_argument("--images", type=Path, help="the photographs' folder, for a folder of masks (colour values)")
    p.add_argument("--out", type=Path, help="CSV file to write (default: standard output)")
    p.add_argument("--pixel-spacing", type=float, help="mm per pixel of every photograph, if calibrated")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        spacing = check_spacing(args.pixel_spacing)
    except ValueError as e:
        p.error(f"--pixel-spacing: {e}")
    try:
        pairs = mask_pairs(args.source, args.images)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, extrasaction="raise")
    writer.writeheader()
    failed = 0
    for key, mask, image in tqdm(pairs, desc=PROG, unit="mask", file=sys.stderr, disable=args.quiet):
        try:
            values = measure_file(mask, image, spacing)
        except Exception as e:  # an unreadable file, or a mask of another size than its photograph
            print(f"{PROG}: error: {mask.name}: {type(e).__name__}: {e}; skipped", file=sys.stderr)
            failed += 1
            continue
        writer.writerow({"id": key, "mask": str(mask), "image": str(image or ""), **values})
    if args.out is None:
        sys.stdout.write(text.getvalue())
    else:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text.getvalue(), encoding="utf-8"))
        print(f"{len(pairs) - failed} mask(s) measured into {args.out}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} of {len(pairs)} masks could not be measured", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
