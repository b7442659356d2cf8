"""Finding image/mask pairs in the folder layouts users have, and the fixed-seed 80/20 split."""

from __future__ import annotations

import random
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_MASK_DIRS = ("masks", "labels/final", "labels")
_MASK_SUFFIXES = ("", "_segmentation", "_mask", "_lesion")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_pairs(root: str | Path) -> list[dict[str, str]]:
    """Image/mask pairs (``{"image", "label", "id"}``) under ``root``, sorted by id.

    Recognised: ``images/<id>.jpg`` + ``masks/<id>.png`` (this project's data), a MONAI Label
    datastore (``<id>.jpg`` + ``labels/final/<id>.png``), and ISIC's own naming
    (``<id>.jpg`` + ``<id>_segmentation.png``, in the same folder or a sibling one). Images without a
    mask are skipped; masks without an image are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    image_dir = root / "images" if (root / "images").is_dir() else root
    masks: dict[str, Path] = {}
    for sub in (root, *(root / d for d in _MASK_DIRS)):
        if sub.is_dir():
            for p in _image_files(sub):
                for tail in _MASK_SUFFIXES[1:]:
                    if p.stem.endswith(tail):
                        masks.setdefault(p.stem[: -len(tail)], p)
                if sub != image_dir:
                    masks.setdefault(p.stem, p)
    pairs = []
    for img in _image_files(image_dir):
        if any(img.stem.endswith(t) for t in _MASK_SUFFIXES[1:]):
            continue
        mask = masks.get(img.stem)
        if mask is not None and mask != img:
            pairs.append({"id": img.stem, "image": str(img), "label": str(mask)})
    return pairs


def split(pairs: list[dict[str, str]], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Deterministic train/validation split: the same ids land in validation on every machine."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    ordered = sorted(pairs, key=lambda p: p["id"])
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(len(ordered) * val_fraction)) if len(ordered) > 1 else 0
    return ordered[n_val:], ordered[:n_val]
