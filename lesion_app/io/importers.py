"""Turning existing annotations into the MONAI Label datastore the app serves.

Groups that start annotating with this app rarely start from nothing: they have ISIC challenge downloads,
folders of photographs with masks, or LabelMe polygons. The importers put those into the local datastore
layout (``<id>.jpg`` directly in the studies folder, ``labels/final/<id>.png`` as 0/1 PNG at the
photograph's size), so that ``monailabel start_server --app lesion_app --studies DEST`` serves them as
finished labels to train on, and offers the photographs without a mask for annotation.

Rules that the app relies on: photographs are copied byte for byte (re-encoding a JPEG would change the
pixels the clinician annotated); masks are binarised as the app binarises labels and must have the
photograph's upright size; every file is written atomically, so a server watching the folder never reads
half a file; nothing is ever written into the source. Problems with one file are reported and that file
is skipped, so one bad JSON does not stop an import of two thousand photographs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from lesion_app.io import layout
from lesion_app.io.files import atomic_write
from lesion_app.io.images import read_mask as read_mask_file
from lesion_app.io.images import upright_size
from lesion_app.io.layout import IMAGE_SUFFIXES, MASK_TAILS, image_files

#: Mask name endings of ``lesion-import folder``; ``<stem>.png`` counts in a separate mask folder.
FOLDER_MASK_TAILS = MASK_TAILS
#: ISIC's ground truth is ``ISIC_x_segmentation.png``; ISIC 2017 inputs also hold ``ISIC_x_superpixels.png``,
#: which is neither a photograph nor a mask.
ISIC_MASK_TAILS = ("_segmentation",)
ISIC_IGNORE_TAILS = ("_superpixels",)
#: LabelMe labels that are not lesion unless ``--labels`` asks for them (compared case-insensitively).
DEFAULT_IGNORE_LABELS = (
    "_background_",
    "background",
    "skin",
    "normal",
    "hair",
    "ruler",
    "scale",
    "marker",
    "bubble",
    "artifact",
    "artefact",
    "ignore",
)
#: Shapes that enclose an area. "polyline"/"linestrip" are closed, since an annotator traces the border.
AREA_SHAPES = ("polygon", "polyline", "linestrip", "rectangle", "circle")
_PIL_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp"}


class AnnotationError(ValueError):
    """One file cannot be imported; the message says why. The other files are still imported."""


@dataclass
class ImportItem:
    """One photograph to import, with where its mask comes from (if anywhere).

    ``make_mask`` receives the photograph's upright (H, W) and returns the 0/1 uint8 mask, so that a mask
    drawn from polygons is drawn at the true size and a mask file is checked against it.
    """

    id: str
    origin: str
    image_path: Path | None = None
    image_bytes: bytes | None = None
    suffix: str = ".jpg"
    make_mask: Callable[[tuple[int, int], list[str]], np.ndarray] | None = None


@dataclass
class Report:
    """What an import did; ``errors`` and ``warnings`` are ready-to-print lines naming the file."""

    images: int = 0
    labels: int = 0
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts, as the program prints it last."""
        return (
            f"{self.images} images, {self.labels} labels imported, {len(self.skipped)} skipped, "
            f"{len(self.errors)} errors"
        )


def check_id(image_id: str, origin: str) -> str:
    """``image_id`` if it is a valid image id (:func:`lesion_app.io.layout.id_problem`), else an
    :class:`AnnotationError` naming ``origin``."""
    problem = layout.id_problem(image_id)
    if problem:
        raise AnnotationError(f"{origin}: {image_id!r} is not a safe image id ({problem})")
    return image_id


def read_image_size(source: Path | bytes, origin: str) -> tuple[int, int]:
    """Upright (H, W) of an image file or encoded bytes, decoding it fully so a truncated file is caught."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            return upright_size(img)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise AnnotationError(f"{origin}: cannot read the image: {e}") from e


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A mask file as 0/1 uint8, upright, binarised as the app binarises labels (0/1 or 0/255 alike)."""
    try:
        mask = read_mask_file(path).astype(np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise AnnotationError(f"{path}: cannot read the mask: {e}") from e
    if mask.shape != tuple(size):
        raise AnnotationError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {size[1]}x{size[0]}; skipped"
        )
    return mask


def _points(shape: dict[str, Any], index: int) -> list[tuple[float, float]]:
    try:
        return [(float(x), float(y)) for x, y in shape.get("points") or []]
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"shape {index} ({shape.get('label')!r}): points are not [x, y] pairs") from e


def _is_lesion(label: str, labels: Sequence[str] | None, ignore: Sequence[str]) -> bool:
    key = label.strip().lower()
    if labels:
        return key in {x.strip().lower() for x in labels}
    return key not in {x.strip().lower() for x in ignore}


def labelme_mask(
    data: dict[str, Any],
    image_size: tuple[int, int],
    labels: Sequence[str] | None = None,
    ignore: Sequence[str] = DEFAULT_IGNORE_LABELS,
    warnings: list[str] | None = None,
) -> np.ndarray:
    """The 0/1 uint8 lesion mask, shape ``image_size`` = (H, W), drawn from a LabelMe JSON's shapes.

    Points are (x, y) pixel coordinates, as LabelMe writes them; the mask is rows first like every mask in
    the app. Polygons and polylines are filled (a polyline is closed: annotators trace the border), as are
    rectangles and circles; shapes are drawn with PIL exactly as LabelMe's own ``shape_to_mask``, so the
    pixels agree with LabelMe's exports. Lesion shapes are those whose label is in ``labels``
    (case-insensitive) or, without ``labels``, not in ``ignore``; several are united. Points outside the
    image are clipped (a warning is added to ``warnings``). Raises :class:`AnnotationError` when the JSON's
    imageHeight/imageWidth disagree with ``image_size``, a shape has too few points, or no lesion shape is
    left.
    """
    warnings = [] if warnings is None else warnings
    h, w = image_size
    declared = (data.get("imageHeight"), data.get("imageWidth"))
    if all(v is not None for v in declared) and tuple(int(v) for v in declared) != (h, w):
        hint = " (the image has an EXIF rotation?)" if tuple(int(v) for v in declared) == (w, h) else ""
        raise AnnotationError(f"imageHeight x imageWidth is {declared[0]}x{declared[1]} but the image is {h}x{w}{hint}")
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise AnnotationError('no "shapes" list')
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    drawn = 0
    outside = 0
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise AnnotationError(f"shape {i} is not an object")
        label = str(shape.get("label", ""))
        if not _is_lesion(label, labels, ignore):
            continue
        kind = shape.get("shape_type") or "polygon"
        if kind not in AREA_SHAPES:
            warnings.append(f"shape {i} ({label!r}) is a {kind}, which encloses no area; ignored")
            continue
        xy = _points(shape, i)
        outside += sum(not (0 <= x <= w - 1 and 0 <= y <= h - 1) for x, y in xy)
        if kind in ("polygon", "polyline", "linestrip"):
            if len(xy) < 3:
                raise AnnotationError(f"shape {i} ({label!r}): a {kind} needs at least 3 points, got {len(xy)}")
            draw.polygon(xy, fill=1, outline=1)
        elif len(xy) != 2:
            raise AnnotationError(f"shape {i} ({label!r}): a {kind} needs 2 points, got {len(xy)}")
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = xy
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=1, outline=1)
        else:  # circle: centre and a point on the circle
            (cx, cy), (px, py) = xy
            r = math.hypot(px - cx, py - cy)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
        drawn += 1
    if not drawn:
        wanted = f"labelled {', '.join(labels)}" if labels else f"other than {', '.join(ignore)}"
        found = sorted({str(s.get("label", "")) for s in shapes if isinstance(s, dict)})
        raise AnnotationError(f"no lesion shape ({wanted}); labels found: {found or 'none'}")
    if outside:
        warnings.append(f"{outside} point(s) outside the {w}x{h} image; the mask is clipped to the image")
    return np.asarray(canvas, dtype=np.uint8).copy()


def pair_items(pairs: Iterable[tuple[Path, Path | None]], report: Report) -> list[ImportItem]:
    """Import items for photographs with mask files; unsafe ids become errors in ``report``."""
    items = []
    for image, mask in pairs:
        try:
            image_id = check_id(image.stem, str(image))
        except AnnotationError as e:
            report.errors.append(str(e))
            continue
        make = None if mask is None else (lambda size, _w, m=mask: read_mask(m, size))
        items.append(ImportItem(image_id, str(image), image_path=image, suffix=image.suffix.lower(), make_mask=make))
    return items


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _decode_image_data(text: Any) -> tuple[bytes, str]:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError) as e:
        raise AnnotationError(f"imageData is not valid base64: {e}") from e
    try:
        with Image.open(io.BytesIO(raw)) as img:
            fmt = img.format
    except (OSError, UnidentifiedImageError) as e:
        raise AnnotationError(f"imageData is not an image: {e}") from e
    if fmt not in _PIL_FORMAT_SUFFIX:
        raise AnnotationError(f"imageData is a {fmt} image; the app reads {', '.join(_PIL_FORMAT_SUFFIX)}")
    return raw, _PIL_FORMAT_SUFFIX[fmt]


def labelme_item(
    json_path: Path,
    source: Path,
    labels: Sequence[str] | None = None,
    ignore: Sequence[str] = DEFAULT_IGNORE_LABELS,
) -> ImportItem:
    """The import item of one LabelMe JSON, or :class:`AnnotationError` naming the file.

    The photograph is the file ``imagePath`` names (relative to the JSON's folder, as LabelMe writes it,
    Windows separators included) and must stay inside ``source``; when it is absent, the embedded
    ``imageData`` is written instead. The id is the photograph's stem, or the JSON's without a photograph.
    """
    origin = str(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{origin}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise AnnotationError(f"{origin}: not a LabelMe file (the JSON is not an object)")
    image_path: Path | None = None
    name = data.get("imagePath")
    if name:
        relative = str(name).replace("\\", "/")
        candidate = json_path.parent / relative
        if Path(relative).is_absolute() or not _inside(candidate, source):
            raise AnnotationError(
                f"{origin}: imagePath {name!r} points outside {source}; give the folder that holds both the "
                "JSON files and the images as SOURCE"
            )
        if candidate.is_file():
            image_path = candidate
    image_bytes = None
    if image_path is None:
        if not data.get("imageData"):
            raise AnnotationError(f"{origin}: image {name!r} not found (and no imageData embedded)")
        try:
            image_bytes, suffix = _decode_image_data(data["imageData"])
        except AnnotationError as e:
            raise AnnotationError(f"{origin}: {e}") from e
    else:
        suffix = image_path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise AnnotationError(f"{origin}: {image_path.name} is not an image the app reads ({IMAGE_SUFFIXES})")
    stem = Path(str(name).replace("\\", "/")).stem if name else json_path.stem
    image_id = check_id(stem, origin)

    def make(size: tuple[int, int], warnings: list[str]) -> np.ndarray:
        try:
            return labelme_mask(data, size, labels, ignore, warnings)
        except AnnotationError as e:
            raise AnnotationError(f"{origin}: {e}") from e

    return ImportItem(image_id, origin, image_path=image_path, image_bytes=image_bytes, suffix=suffix, make_mask=make)


def labelme_items(
    source: Path,
    report: Report,
    labels: Sequence[str] | None = None,
    ignore: Sequence[str] = DEFAULT_IGNORE_LABELS,
    with_unlabelled: bool = True,
) -> list[ImportItem]:
    """Items for every ``*.json`` under ``source`` (recursively), plus photographs no JSON names.

    A JSON that cannot be used is an error in ``report``; the photograph it names is then not imported as
    unlabelled either (fix the JSON and import again).
    """
    items: list[ImportItem] = []
    claimed: set[Path] = set()
    for json_path in sorted(p for p in source.rglob("*.json") if not any(x.startswith(".") for x in p.parts)):
        name = None
        with contextlib.suppress(Exception):  # labelme_item below reports what is wrong with the file
            name = json.loads(json_path.read_text(encoding="utf-8")).get("imagePath")
        if name:
            claimed.add((json_path.parent / str(name).replace("\\", "/")).resolve())
        try:
            items.append(labelme_item(json_path, source, labels, ignore))
        except AnnotationError as e:
            report.errors.append(str(e))
    if with_unlabelled:
        for p in sorted(source.rglob("*")):
            if (
                p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(x.startswith(".") for x in p.relative_to(source).parts)
                and not p.stem.endswith(FOLDER_MASK_TAILS)
                and p.resolve() not in claimed
            ):
                items.extend(pair_items([(p, None)], report))
    return items


def _same_bytes(a: Path, b: Path | bytes) -> bool:
    if isinstance(b, bytes):
        return a.stat().st_size == len(b) and a.read_bytes() == b
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _write_png(path: Path, mask: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(mask.astype(np.uint8), mode="L").save(tmp, format="PNG"))


def import_items(
    items: Sequence[ImportItem],
    dest: Path,
    report: Report | None = None,
    overwrite: bool = False,
    labelled_only: bool = False,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Writes each item into the datastore ``dest``: the photograph copied byte for byte, the mask as 0/1 PNG.

    Per id: an existing photograph with other bytes (or another extension) in ``dest`` means the id is taken,
    so the item is skipped unless ``overwrite``; an identical one is kept and its missing label still
    written. An existing label is kept unless ``overwrite``. Items without a mask are left out with
    ``labelled_only``. One item's error is recorded in the report and the next item is imported.
    """
    report = report if report is not None else Report()
    existing: dict[str, list[Path]] = {}
    if dest.is_dir():
        for p in image_files(dest):
            existing.setdefault(p.stem, []).append(p)
    seen: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        if progress is not None and n % 100 == 0:
            progress(n, len(items))
        if item.id in seen:
            report.errors.append(f"{item.origin}: id {item.id!r} is also imported from {seen[item.id]}; skipped")
            continue
        seen[item.id] = item.origin
        if item.make_mask is None and labelled_only:
            continue
        try:
            _import_one(item, dest, existing.get(item.id, []), report, overwrite, dry_run)
        except AnnotationError as e:
            report.errors.append(str(e))
        except OSError as e:
            report.errors.append(f"{item.origin}: cannot write into {dest}: {e}")
    return report


def _import_one(item: ImportItem, dest: Path, existing: list[Path], report: Report, overwrite: bool, dry_run: bool):
    source: Path | bytes = item.image_path if item.image_path is not None else item.image_bytes  # type: ignore[assignment]
    size = read_image_size(source, item.origin)
    warnings: list[str] = []
    mask = item.make_mask(size, warnings) if item.make_mask is not None else None
    report.warnings.extend(f"{item.origin}: {w}" for w in warnings)
    target = dest / f"{item.id}{item.suffix}"
    label = dest / layout.FINAL_LABEL_DIR / layout.label_file_name(item.id)
    identical = len(existing) == 1 and existing[0] == target and _same_bytes(target, source)
    write_image = True
    if existing and not overwrite:
        if not identical:
            names = ", ".join(p.name for p in existing)
            report.skipped.append(f"{item.origin}: {names} already in {dest} with other content (use --overwrite)")
            return
        report.skipped.append(f"{item.origin}: {target.name} already in {dest} (identical)")
        write_image = False
    write_label = mask is not None
    if write_label and label.exists() and not overwrite:
        report.skipped.append(f"{item.origin}: {label} already exists (use --overwrite)")
        write_label = False
    if mask is None and overwrite and existing and not identical and label.exists():
        report.warnings.append(f"{item.origin}: replaced the photograph of {item.id}; its old label {label} is kept")
    if dry_run:
        report.images += write_image
        report.labels += write_label
        return
    if write_image:
        if isinstance(source, bytes):
            atomic_write(target, lambda tmp: Path(tmp).write_bytes(source))
        else:
            atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
        for old in existing:
            if old != target:
                old.unlink()
        report.images += 1
    if write_label:
        _write_png(label, mask)
        report.labels += 1
