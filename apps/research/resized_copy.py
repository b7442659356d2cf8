"""A copy of an image/mask data folder, read and resized as training reads it, for a trip to a GPU machine.

Its upload is limited (all 2,107 ISIC pairs at 256x256 are about 51 MB)::

    python -m apps.research.resized_copy ../shared/data/isic .gpu/isic

Each pair goes through the project's own load and preprocessing transforms (EXIF, 8-bit RGB, the paper's
resize to ``--spatial-size``) and is written under the same id as ``images/<id>.jpg`` (JPEG quality 95) and
``masks/<id>.png`` (0/255), so splits made by id are the same as on the original folder. The copy is derived
from the data set and keeps its licence: never put it into the repository (``.gpu/`` is ignored by git).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from monai.transforms import Compose
from PIL import Image

from lesion_app.core.transforms import load_transforms, preprocess_transforms
from lesion_app.io.layout import find_pairs


def write_resized(source: Path, dest: Path, size: int) -> int:
    """Writes the resized copy of every pair of ``source`` under ``dest``; returns how many. Raises
    FileNotFoundError when ``source`` holds no pairs."""
    pairs = find_pairs(str(source))
    if not pairs:
        raise FileNotFoundError(f"no image/mask pairs in {source}")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(parents=True, exist_ok=True)
    read = Compose(load_transforms() + preprocess_transforms((size, size)))
    for k, pair in enumerate(pairs, 1):
        d = read({"image": pair["image"], "label": pair["label"]})
        rgb = (np.asarray(d["image"]).transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(dest / "images" / f"{pair['id']}.jpg", quality=95)
        mask = (np.asarray(d["label"])[0] > 0.5).astype(np.uint8) * 255
        Image.fromarray(mask).save(dest / "masks" / f"{pair['id']}.png")
        if k % 200 == 0 or k == len(pairs):
            print(f"  {k}/{len(pairs)} pairs", file=sys.stderr, flush=True)
    return len(pairs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.research.resized_copy", description=__doc__.splitlines()[0])
    p.add_argument("source", help="a data folder (images/ + masks/, ISIC naming or a MONAI Label datastore)")
    p.add_argument("dest", help="where the copy goes (images/ + masks/)")
    p.add_argument("--spatial-size", type=int, default=256, help="side of the square copy, pixels (default 256)")
    args = p.parse_args(argv)
    try:
        n = write_resized(Path(args.source), Path(args.dest), args.spatial_size)
    except (OSError, ValueError) as e:
        print(f"resized_copy: error: {e}", file=sys.stderr)
        return 2
    print(f"{n} pairs at {args.spatial_size}x{args.spatial_size} in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
