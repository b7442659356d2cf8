"""How photographs and masks are named and laid out on disk: the one home of every file-name rule.

- which files are photographs (:data:`IMAGE_SUFFIXES`, any case; hidden and AppleDouble ``._`` files never);
- what an image id is (:func:`image_id`: the file name without its image extension) and which ids are valid
  (:func:`id_problem`);
- which file is a photograph's mask (:func:`discover_pairs`: ``images/`` + ``masks/``, a MONAI Label
  datastore's ``labels/final/``, ISIC's ``<id>_segmentation.png``) and where the datastore keeps a label
  (:func:`label_file_name`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

#: Photographs the app reads, matched case-insensitively (``X.TIF`` and ``x.tif`` alike).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Photographs the DICOMweb datastore caches with their DICOM geometry (also read as images).
CACHED_IMAGE_SUFFIXES = (".nrrd", ".nii.gz", ".nii")
#: Stem endings that name a mask rather than a photograph (``ISIC_x_segmentation.png``, ``a_mask.png``).
MASK_TAILS = ("_segmentation", "_mask", "_lesion")
#: Folders below a data root that may hold masks, in the order they are searched.
MASK_DIRS = ("masks", "labels/final", "labels")
#: Where a MONAI Label datastore keeps finished labels, relative to the studies folder.
FINAL_LABEL_DIR = Path("labels") / "final"
MAX_ID_LENGTH = 128
#: Valid ids: ASCII letters and digits, then also space ( ) + _ . - ; no leading dot, space or dash.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ()+_.\-]*")


def image_suffix(name: str | Path) -> str | None:
    """The lower-case image extension of a file name (``.jpg``, ``.nii.gz``...), or None if it is none of ours."""
    lowered = str(name).lower()
    for suffix in sorted(IMAGE_SUFFIXES + CACHED_IMAGE_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return suffix
    return None


def is_hidden(path: Path) -> bool:
    """Hidden files and macOS AppleDouble metadata (``._x.jpg``): never photographs or masks."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """A visible file with one of :data:`IMAGE_SUFFIXES`, in any case."""
    return path.is_file() and not is_hidden(path) and path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """The photographs and masks directly inside ``folder`` (:func:`is_image_file`), sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def image_id(path: str | Path) -> str:
    """The id of an image file: its name without the image extension (``a.b.jpg`` -> ``a.b``)."""
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an image id (it becomes a file name and a datastore key), or None if it can.

    At most :data:`MAX_ID_LENGTH` characters from :data:`_SAFE_ID`, starting with a letter or digit, not
    ending in a space or dot, and with no image extension inside (MONAI Label cuts ids out of file names by
    replacing the extension, so ``a.jpg.b`` would come back as ``a.b``).
    """
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
    if not _SAFE_ID.fullmatch(value) or value.endswith((" ", ".")):
        return (
            "may only contain ASCII letters, digits, space and ( ) + _ . -, start with a letter or digit "
            "and not end with a space or dot"
        )
    lowered = value.lower()
    if any(s in lowered for s in IMAGE_SUFFIXES):
        return "contains an image extension"
    return None


def label_file_name(image_id: str) -> str:
    """The file name of a label in the datastore: always a 0/1 PNG named after the image id."""
    return f"{image_id}.png"


def discover_pairs(
    root: str | Path,
    masks: Path | None = None,
    mask_tails: Sequence[str] = MASK_TAILS,
    ignore_tails: Sequence[str] = (),
) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """Every photograph under ``root`` with its mask file or None, sorted by name; and the problems found.

    Photographs are in ``root/images/`` if it exists, else in ``root``. A mask is ``<id><tail>.png`` in any
    of the searched folders (``root`` and :data:`MASK_DIRS`, or only ``masks`` when given), or ``<id>.png``
    in a searched folder other than the photographs' own. Files whose stem ends with a mask tail or an
    ``ignore_tails`` entry are not photographs. A photograph with two masks is a problem and is left out.
    """
    root = Path(root)
    image_dir = root / "images" if (root / "images").is_dir() else root
    mask_dirs = [masks] if masks is not None else [d for d in (root, *(root / m for m in MASK_DIRS)) if d.is_dir()]
    index: dict[str, list[Path]] = {}
    for folder in mask_dirs:
        for p in image_files(folder):
            keys = [p.stem[: -len(t)] for t in mask_tails if p.stem.endswith(t)]
            if folder.resolve() != image_dir.resolve():
                keys.append(p.stem)
            for key in keys:
                if p not in index.setdefault(key, []):
                    index[key].append(p)
    not_photographs = tuple(mask_tails) + tuple(ignore_tails)
    pairs: list[tuple[Path, Path | None]] = []
    problems: list[str] = []
    for img in image_files(image_dir):
        if img.stem.endswith(not_photographs):
            continue
        found = [m for m in index.get(img.stem, []) if m != img]
        if len(found) > 1:
            problems.append(f"{img}: more than one mask: {', '.join(str(m) for m in found)}; skipped")
            continue
        pairs.append((img, found[0] if found else None))
    return pairs, problems


def find_pairs(root: str | Path) -> list[dict[str, str]]:
    """The photographs under ``root`` that have a mask, as ``{"id", "image", "label"}`` sorted by id.

    The layouts of :func:`discover_pairs`; problems (two masks for one photograph) are logged and skipped.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    pairs, problems = discover_pairs(root)
    for problem in problems:
        logger.warning(problem)
    return [{"id": image_id(img), "image": str(img), "label": str(mask)} for img, mask in pairs if mask is not None]
