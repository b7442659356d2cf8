"""Checks on what clients send before anything reaches the studies folder.

MONAI Label 0.8.5's local datastore trusts its input: an id with ``../`` writes outside the studies folder,
a garbage file replaces a final label, and malformed uploads end in HTTP 500. Every check here raises
:class:`fastapi.HTTPException` with a 4xx status and a message a user can act on; MONAI Label's datastore
and infer endpoints let it through unchanged. The functions are pure (no datastore state) so they are
unit-tested on their own.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import io
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastapi import HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError

from lesion_app.core.measurements import check_spacing
from lesion_app.io import files, layout
from lesion_app.io.images import (
    RESULT_EXTENSIONS,
    exif_orientation,
    itk_geometry,
    itk_header,
    open_image,
    stored_image_size,
    stored_to_upright,
    to_rgb,
)

#: Photographs the app reads (any case); stored with the lower-case extension.
logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = layout.IMAGE_SUFFIXES
#: Label files read with Pillow (lossless 2D formats).
PIL_LABEL_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp")
#: Label files 3D Slicer sends, read with ITK; they must hold one slice.
ITK_LABEL_EXTENSIONS = (".nrrd", ".nii.gz", ".nii")
LABEL_EXTENSIONS = PIL_LABEL_EXTENSIONS + ITK_LABEL_EXTENSIONS
MAX_ID_LENGTH = layout.MAX_ID_LENGTH
#: Label values accepted: the app's 0/1, or 0 and the top of an 8- or 16-bit container.
LABEL_ENCODINGS = ({0, 1}, {0, 255}, {0, 65535})


#: How a request may spell a boolean option (3D Slicer and curl send strings).
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def flag(value: Any, name: str = "option") -> bool:
    """A request option as a boolean: JSON true/false, 0 or 1, or the strings 3D Slicer and curl send ("true", "0").

    Raises:
        HTTPException: 400 naming ``name`` for anything else ("maybe", 5), which must not pass silently as one.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise bad_request(f"{name} must be true or false, got {value!r}")


def as_number(value: Any) -> float:
    """A request option read as a number (a number or a numeric string); NaN, which no range admits, for anything
    else, booleans included (JSON ``true`` is no 1 here)."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def bad_request(detail: str) -> HTTPException:
    """400: the request itself is malformed (ids, extensions, label contents)."""
    return HTTPException(status_code=400, detail=detail)


def not_found(detail: str) -> HTTPException:
    """404: the request names an image or label the datastore does not have."""
    return HTTPException(status_code=404, detail=detail)


def not_allowed(detail: str) -> HTTPException:
    """405: the datastore does not do this (e.g. deleting what lives on the DICOMweb server)."""
    return HTTPException(status_code=405, detail=detail)


def conflict(detail: str) -> HTTPException:
    """409: the image exists already."""
    return HTTPException(status_code=409, detail=detail)


def busy(detail: str, retry_after_seconds: int) -> HTTPException:
    """429 for a request the server cannot run now and that is not queued, with ``Retry-After`` (seconds)."""
    return HTTPException(status_code=429, detail=detail, headers={"Retry-After": str(int(retry_after_seconds))})


def too_large(detail: str) -> HTTPException:
    """413: more pixels or bytes than the limits allow."""
    return HTTPException(status_code=413, detail=detail)


def unprocessable(detail: str) -> HTTPException:
    """422: a stored image (not the request) cannot be read."""
    return HTTPException(status_code=422, detail=detail)


def bad_gateway(detail: str) -> HTTPException:
    """502: the DICOMweb server refused what the app sent it."""
    return HTTPException(status_code=502, detail=detail)


def unavailable(detail: str) -> HTTPException:
    """503: a service the app needs (DICOMweb server, identity provider, disk, the SEG writer) is not working."""
    return HTTPException(status_code=503, detail=detail)


def _shown(value: str, limit: int = 40) -> str:
    """An id as it may appear in a message: printable, short."""
    text = value.encode("unicode_escape").decode("ascii")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_reference(value: str, what: str = "image id") -> str:
    """The checks every id a request names must pass, known or not: a path trick is a 400, never a lookup."""
    if not value:
        raise bad_request(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise bad_request(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed")
    if "\x00" in value:
        raise bad_request(f"{what} {_shown(value)} contains a NUL character")
    if "/" in value or "\\" in value or value in (".", "..") or ".." in value or os.path.isabs(value):
        raise bad_request(f"{what} {_shown(value)} must be a plain name: no path separators, '..' or absolute paths")
    return value


def check_image_id(value: str, what: str = "image id") -> str:
    """An id for a new image: also the one id rule (:func:`lesion_app.io.layout.id_problem`), since it becomes a
    file name in the studies folder."""
    check_reference(value, what)
    problem = layout.id_problem(value)
    if problem:
        raise bad_request(f"{what} {_shown(value)} {problem}")
    return value


def check_tag(tag: str) -> str:
    """A label tag names a folder under labels/: the same rules as a new image id."""
    return check_image_id(tag, "label tag")


def _extension(filename: str, allowed: tuple[str, ...]) -> str | None:
    name = filename.lower()
    return next((ext for ext in sorted(allowed, key=len, reverse=True) if name.endswith(ext)), None)


def image_extension(filename: str) -> str:
    """The lower-case extension of an uploaded photograph; 400 for anything the app cannot read."""
    ext = _extension(filename, IMAGE_EXTENSIONS)
    if ext is None:
        found = "".join(Path(filename).suffixes[-1:]) or "none"
        raise bad_request(f"unsupported image extension {found!r}; accepted: {' '.join(IMAGE_EXTENSIONS)}")
    return ext


def label_extension(filename: str) -> str:
    """The lower-case extension of an uploaded label; lossy JPEG is refused (it blurs the 0/1 border)."""
    ext = _extension(filename, LABEL_EXTENSIONS)
    if ext is None:
        found = "".join(Path(filename).suffixes[-1:]) or "none"
        hint = " (JPEG is lossy: save labels as PNG)" if found.lower() in (".jpg", ".jpeg") else ""
        raise bad_request(f"unsupported label extension {found!r}{hint}; accepted: {' '.join(LABEL_EXTENSIONS)}")
    return ext


def check_upload_size(path: str | os.PathLike, max_bytes: int, what: str = "file") -> int:
    """400 for an empty upload, 413 for one above ``--conf max_upload_mb``."""
    size = os.path.getsize(path)
    if size == 0:
        raise bad_request(f"the uploaded {what} is empty")
    if size > max_bytes:
        raise HTTPException(
            status_code=413,
            detail=f"the uploaded {what} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB "
            "(--conf max_upload_mb)",
        )
    return size


#: What the app reads, for messages.
READABLE = "JPEG, PNG, TIFF or BMP photographs"


def _header(path: str | os.PathLike, what: str, max_pixels: int) -> Image.Image:
    """Opens an image lazily and checks its header size before anything is decoded (a decompression bomb is a
    413); the caller closes it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise _too_many_pixels(what, str(e), max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        logger.info(f"{what} is not a readable image: {type(e).__name__}: {e}")
        cause = "" if isinstance(e, UnidentifiedImageError) else f" ({_cause(e)})"  # Pillow's words say nothing more
        raise bad_request(f"the {what} is not a readable image: the app reads {READABLE}{cause}") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise _too_many_pixels(what, f"{width}x{height} = {width * height} pixels", max_pixels)
    if width < 1 or height < 1:
        img.close()
        raise bad_request(f"the {what} has no pixels ({width}x{height})")
    return img


def _decoded(path: str | os.PathLike, what: str, max_pixels: int) -> Image.Image:
    """The image as the app reads it (:func:`lesion_app.io.images.open_image`: one rule for every encoding), once
    its header passed :func:`_header`."""
    _header(path, what, max_pixels).close()
    try:
        return open_image(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:
        raise bad_request(f"the {what} cannot be decoded ({_cause(e)})") from None


def _too_many_pixels(what: str, found: str, max_pixels: int) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"the {what} is too large ({found}); the limit is {max_pixels} pixels (--conf max_image_pixels)",
    )


#: An absolute path in a library's message (a temporary upload, the studies folder): never shown to a client.
_PATH = re.compile(r"(?:[A-Za-z]:)?[/\\][^\s'\":]*")


def _cause(e: BaseException) -> str:
    """The first line of a library's error for a client: no server paths (each becomes "the file"), no class."""
    text = str(e).splitlines()[0] if str(e) else ""
    return _PATH.sub("the file", text)[:200] if text else "unreadable"


def check_image_file(path: str | os.PathLike, max_pixels: int, image_id: str = "") -> tuple[int, int]:
    """The upright (H, W) of a photograph that decodes completely and converts to RGB as the app reads it.

    Pillow's ``verify`` catches broken PNG chunks; only a full decode catches a truncated JPEG. Any mode
    (gray, RGBA, palette, 16-bit, CMYK) passes if :func:`to_rgb` converts it. Messages name ``image_id``.
    """
    what = f"image {image_id!r}" if image_id else "image"
    with _header(path, what, max_pixels) as img:
        try:
            img.verify()
        except Exception as e:
            raise bad_request(f"the {what} is corrupt ({_cause(e)})") from None
    with _decoded(path, what, max_pixels) as img:
        try:
            img.load()
            rgb = to_rgb(img)
        except Image.DecompressionBombError as e:
            raise _too_many_pixels(what, _cause(e), max_pixels) from None
        except Exception as e:
            raise bad_request(f"the {what} cannot be decoded, it may be truncated ({_cause(e)})") from None
        return rgb.height, rgb.width


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """The upright (H, W) of a stored photograph, from its header; 422 if it cannot be read."""
    try:
        return stored_image_size(path)
    except Exception as e:
        raise HTTPException(
            status_code=422, detail=f"the stored image {Path(path).name} cannot be read ({_cause(e)})"
        ) from None


def _label_array_pil(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    with _decoded(path, "label", max_pixels) as img:
        if getattr(img, "n_frames", 1) > 1:
            raise bad_request(f"the label has {img.n_frames} frames; it must be one 2D image")
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except Exception as e:
            raise bad_request(f"the label cannot be decoded, it may be truncated ({_cause(e)})") from None
        arr = np.asarray(img)
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        if not (colour == colour[..., :1]).all():
            raise bad_request(f"the label is a colour image ({img.mode}); it must be single-channel 0/1 or 0/255")
        arr = colour[..., 0]
    return arr


def _label_array_itk(path: str | os.PathLike, max_pixels: int, image: str | os.PathLike | None = None) -> np.ndarray:
    """A 3D Slicer label (NRRD, NIfTI, .seg.nrrd): one slice in ITK's (rows, columns) order.

    Its header is read first: it must hold one 2D slice (a (W, H) image, or (W, H, 1) as Slicer saves a
    single-slice volume) and, when ``image`` is given, run along the image's axes as ITK reads it (no flip,
    transpose or tilt: its array would not lie on the photograph). The slice is then turned upright by the
    image's EXIF orientation, which ITK and Slicer ignore.
    """
    import itk

    try:
        io = itk_header(path)
        ndim = int(io.GetNumberOfDimensions())
        dims = [int(io.GetDimensions(i)) for i in range(ndim)]
        components = int(io.GetNumberOfComponents())
        direction = np.array([io.GetDirection(j) for j in range(ndim)], dtype=float).T  # columns: axes
    except Exception as e:
        raise bad_request(f"the label is not a readable image ({_cause(e)})") from None
    pixels = int(np.prod(dims)) if dims else 0
    if pixels > max_pixels:
        raise _too_many_pixels("label", "x".join(map(str, dims)) + f" = {pixels} pixels", max_pixels)
    if components != 1 or ndim < 2 or any(d != 1 for d in dims[2:]):
        raise bad_request(
            f"the label is {'x'.join(map(str, dims))} with {components} component(s); it must be one 2D slice "
            "(width x height, or width x height x 1)"
        )
    if image is not None:
        try:
            _, _, expected = itk_geometry(image)
        except Exception:
            expected = np.eye(2)
        in_plane = direction[:2, :2]
        out_of_plane = direction[2:, :2]
        if not np.allclose(in_plane, expected, atol=1e-3) or not np.allclose(out_of_plane, 0, atol=1e-3):
            shown = np.array2string(direction[:, :2].T, precision=3, separator=", ").replace("\n", "")
            raise bad_request(
                f"the label's axes {shown} do not run along the image's (direction {expected.tolist()}): it is "
                "flipped, transposed or tilted; export it on the image's geometry (Slicer: reference volume)"
            )
    try:
        arr = np.asarray(itk.array_from_image(itk.imread(str(path))))
    except Exception as e:
        raise bad_request(f"the label cannot be decoded ({_cause(e)})") from None
    arr = arr.reshape(dims[1], dims[0])
    if image is not None:
        arr = stored_to_upright(arr, exif_orientation(image))
    return arr


def read_label(
    path: str | os.PathLike, ext: str, max_pixels: int, image: str | os.PathLike | None = None
) -> np.ndarray:
    """A label upload as a (H, W) array, upright as the app's loader reads it; 400 if it is not one 2D slice.

    ``image`` (the stored photograph) lets NRRD/NIfTI labels be checked against its ITK geometry and turned
    upright by its EXIF orientation (they come on the stored pixel grid, as 3D Slicer shows it).
    """
    if ext in ITK_LABEL_EXTENSIONS:
        return _label_array_itk(path, max_pixels, image)
    return _label_array_pil(path, max_pixels)


def check_label_values(label: np.ndarray) -> np.ndarray:
    """The label as 0/1 uint8; 400 unless its values are {0, 1} or {0, 255} (all zero: 'no lesion', allowed)."""
    values = np.unique(label)
    found = {float(v) for v in values}
    if not any(found <= enc for enc in LABEL_ENCODINGS):
        shown = ", ".join(f"{v:g}" for v in sorted(found)[:10]) + (", ..." if len(found) > 10 else "")
        raise bad_request(f"label values must be 0/1 or 0/255 (or 0/65535 in 16 bits; 0 = skin); found {shown}")
    return (label > 0).astype(np.uint8)


def check_label_size(label_hw: tuple[int, int], image_hw: tuple[int, int], image_id: str) -> None:
    """400 naming both sizes (width x height, as viewers show them) when a label does not cover its image."""
    if tuple(label_hw) != tuple(image_hw):
        hint = (
            " (rows and columns are swapped: the label is transposed)"
            if tuple(label_hw) == tuple(image_hw)[::-1]
            else ""
        )
        raise bad_request(
            f"label is {label_hw[1]}x{label_hw[0]} (width x height) but image {image_id!r} is "
            f"{image_hw[1]}x{image_hw[0]} after its EXIF orientation{hint}"
        )


def checked_label(
    label_filename: str, image_path: str, image_id: str, max_bytes: int, max_pixels: int
) -> tuple[str, np.ndarray]:
    """An uploaded label's extension and its 0/1 mask, upright, checked against its photograph (4xx if bad):
    what every datastore does before it stores a label."""
    ext = label_extension(os.path.basename(label_filename))
    check_upload_size(label_filename, max_bytes, "label")
    label = read_label(label_filename, ext, max_pixels, image=image_path)
    check_label_size(label.shape, image_size(image_path), image_id)
    return ext, check_label_values(label)


def label_problem(label_path: str, image_path: str, image_id: str, max_pixels: int) -> str | None:
    """Why a label file found on disk fails the checks an uploaded one passes (what :func:`checked_label` would
    answer with 400), or None when it passes."""
    try:
        ext = label_extension(os.path.basename(label_path))
        label = read_label(label_path, ext, max_pixels, image=image_path)
        check_label_size(label.shape, image_size(image_path), image_id)
        check_label_values(label)
    except HTTPException as e:
        return str(e.detail)
    return None


@contextlib.contextmanager
def _disk_errors(dest: str | os.PathLike) -> Iterator[None]:
    """A disk that cannot take a file is the server's condition, not the request's fault: 507 (full) or 503."""
    try:
        yield
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        raise HTTPException(
            status_code=507 if full else 503,
            detail=f"cannot write {Path(dest).name} in the studies folder: {e.strerror or e}; nothing was changed",
        ) from e


def stored(dest: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Writes ``dest`` atomically (:func:`lesion_app.io.files.atomic_write_stream`); 507 or 503 with the reason
    when the disk cannot take it. A crash or a failing write leaves the old file untouched and no half-written one.
    """
    with _disk_errors(dest):
        files.atomic_write_stream(dest, write)


def stored_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copies ``src`` to ``dest`` byte for byte, atomically; 507 or 503 as :func:`stored`."""
    with _disk_errors(dest):
        files.atomic_copy(src, dest)


def stored_png(mask: np.ndarray, dest: str | os.PathLike) -> None:
    """A (H, W) 0/1 mask as a single-channel PNG, atomically; 507/503 as :func:`stored`."""
    stored(dest, lambda f: Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)), mode="L").save(f, "PNG"))


def unreadable_image(path: Any, e: BaseException) -> HTTPException:
    """422 for an image in the studies folder (or an infer upload) that cannot be decoded: not a server fault. It
    names the studies folder's file or "the uploaded file", never a server path or the reader's own words."""
    if isinstance(path, str | os.PathLike) and not is_upload(str(path)):
        name = Path(path).name
    else:
        name = "the uploaded file"
    logger.warning(f"cannot read image {path}: {type(e).__name__}: {e}")
    return HTTPException(
        status_code=422, detail=f"cannot read {name}: it is not a readable image: the app reads {READABLE}"
    )


def click_points(value: Any, name: str, stored_hw: tuple[int, int]) -> list[tuple[float, float]]:
    """The clicks of a request as (row, col) on the photograph's stored pixel grid; 400 for anything else.

    3D Slicer's MONAI Label module sends ``foreground`` and ``background`` as lists of ``[i, j, k]`` points in the
    single-slice volume it made of the photograph: i the column, j the row of its stored grid (EXIF not applied),
    k the slice, always 0 here; ``[i, j]`` is accepted too. A JSON string of such a list is read as the list.
    """
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad_request(f"{name} is not a list of [i, j, k] points: {value[:80]!r}") from None
    h, w = stored_hw
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a list of [i, j, k] points, got {type(value).__name__}")
    points = []
    for point in value:
        numbers = isinstance(point, list | tuple) and len(point) in (2, 3)
        numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
        if not numbers or not all(np.isfinite(point)):
            raise bad_request(f"{name} must be a list of [i, j, k] points (column, row, slice); got {point!r}")
        i, j = float(point[0]), float(point[1])
        k = float(point[2]) if len(point) == 3 else 0.0
        if round(k) != 0:
            raise bad_request(f"{name} point {list(point)} lies on slice {k:g}; the photograph is one slice (0)")
        if not (-0.5 <= i < w - 0.5 and -0.5 <= j < h - 0.5):
            raise bad_request(f"{name} point {list(point)} lies outside the photograph ({w}x{h}, columns x rows)")
        points.append((min(max(round(j), 0), h - 1), min(max(round(i), 0), w - 1)))
    return points


PNG_DATA_PREFIX = "data:image/png;base64,"
#: PNG modes a sent mask may have: 1-bit, 8-bit grey, and what a browser's canvas writes.
MASK_PNG_MODES = ("1", "L", "LA", "RGB", "RGBA")


def png_mask(value: Any, name: str, stored_hw: tuple[int, int]) -> np.ndarray:
    """A mask a client sends as a base64 PNG (optionally as a ``data:image/png;base64,`` URL) on the photograph's
    stored pixel grid ``stored_hw`` (rows, columns; EXIF not applied): (H, W) bool.

    8-bit grey or 1-bit: any nonzero pixel is lesion. 8-bit RGB, RGBA or grey with alpha (what a browser's canvas
    gives): a pixel is lesion where a colour channel is nonzero and, with alpha, the pixel is not transparent.
    400 naming ``name`` for anything else: not text, not base64, not a PNG, another mode (palette, 16-bit) or size
    (the size is read from the header before anything is decoded)."""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a base64 PNG, got {type(value).__name__}")
    text = value.strip()
    text = text[len(PNG_DATA_PREFIX) :] if text.startswith(PNG_DATA_PREFIX) else text
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{name} is not base64 data: {value[:40]!r}") from None
    h, w = stored_hw
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as img:
            if img.size != (w, h):
                raise bad_request(
                    f"{name} is {img.size[0]}x{img.size[1]} but the photograph's stored grid is {w}x{h} "
                    "(columns x rows, before its EXIF orientation)"
                )
            if img.mode not in MASK_PNG_MODES:
                raise bad_request(f"{name} is a {img.mode} PNG; it must be 1-bit or 8-bit grey, RGB or RGBA")
            img.load()
            pixels = np.asarray(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise bad_request(f"{name} is not a readable PNG ({_cause(e)})") from None
    if pixels.ndim == 2:
        return pixels > 0
    colour, alpha = (pixels[..., :-1], pixels[..., -1]) if img.mode in ("LA", "RGBA") else (pixels, None)
    lesion = colour.max(axis=-1) > 0
    return lesion if alpha is None else lesion & (alpha > 0)


def json_object_field(value: Any, name: str = "params") -> None:
    """400 unless a request's form field ``name`` (infer's and a saved label's ``params``, an info update's
    ``info``) is empty or a JSON object: MONAI Label's endpoints read it with ``json.loads`` and use it as a dict, a
    500 for anything else."""
    if value in (None, ""):
        return
    try:
        parsed = json.loads(value) if isinstance(value, str | bytes) else value
    except ValueError as e:
        raise bad_request(f"{name} is not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise bad_request(f"{name} must be a JSON object of options, got {type(parsed).__name__}")


#: What an infer request without a photograph is told.
NO_IMAGE = "no image: name an image id (?image=<id>), a session (?session_id=) or upload the photograph as file"
#: The boolean options of an infer request.
INFER_FLAGS = ("tta", "postprocess", "save_label")


#: The request option (infer params, the measurements route's query) that gives the pixel spacing, mm per pixel.
SPACING_OPTION = "pixel_spacing_mm"


def infer_options(request: dict[str, Any]) -> None:
    """400 for an infer request without an image, a ``threshold`` that is not a number between 0 and 1 (exclusive),
    a ``result_extension`` the app does not write (:data:`lesion_app.io.images.RESULT_EXTENSIONS`), a boolean
    option (:data:`INFER_FLAGS`) that :func:`flag` does not read as one or a ``pixel_spacing_mm`` that is not a
    positive number (before any network runs); the boolean options become ``bool`` in ``request`` (MONAI Label tests
    ``save_label`` for truth, and the string "false" is true)."""
    if not request.get("image"):
        raise bad_request(NO_IMAGE)
    for name in INFER_FLAGS:
        if name in request:
            request[name] = flag(request[name], name)
    threshold = request.get("threshold", 0.5)
    if not 0.0 < as_number(threshold) < 1.0:
        raise bad_request(f"threshold must be a number between 0 and 1, got {threshold!r}")
    extension = request.get("result_extension") or ".png"
    if extension not in RESULT_EXTENSIONS:
        raise bad_request(f"result_extension must be one of {', '.join(RESULT_EXTENSIONS)}, got {extension!r}")
    requested_spacing(request.get(SPACING_OPTION))


def requested_spacing(value: Any) -> float | None:
    """A request's ``pixel_spacing_mm`` as mm per pixel, None when absent or empty.

    Raises:
        HTTPException: 400 for zero, a negative, a non-finite or a non-number.
    """
    if value in (None, ""):
        return None
    try:
        return check_spacing(value)
    except ValueError as e:
        raise bad_request(f"{SPACING_OPTION}: {e}") from None


def is_upload(path: str) -> bool:
    """A file MONAI Label's infer endpoint wrote for this request's upload: ``<tempdir>/tmp*``."""
    p = Path(path).resolve()
    return p.parent == Path(tempfile.gettempdir()).resolve() and p.name.startswith("tmp") and p.is_file()


def check_infer_image(image: Any) -> None:
    """400 when an infer request names a file on the server that is not its own upload (ids pass)."""
    if isinstance(image, str) and os.path.exists(image) and not is_upload(image):
        raise bad_request("image must be an image id of the datastore (or an upload)")


#: The longest annotator name a next-sample request may give.
MAX_ANNOTATOR_LENGTH = 100


def annotator_name(value: Any, required: bool = False) -> str | None:
    """A next-sample request's or a saved label's ``annotator`` (None when absent and not ``required``): a name of 1
    to 100 printable characters without a backslash (DICOM's value separator: it becomes a SEG's ContentCreatorName).

    Raises:
        HTTPException: 400 naming the value, for anything else.
    """
    if value is None and required:
        raise bad_request("no annotator: give your name in the worklist (it is stored with the label)")
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_ANNOTATOR_LENGTH
        or not value.isprintable()
        or "\\" in value
    ):
        raise bad_request(
            f"annotator must be a name of 1 to {MAX_ANNOTATOR_LENGTH} printable characters without a backslash, "
            f"got {_shown(str(value))!r}"
        )
    return value.strip()


def refuse_if_read_only(read_only: bool, action: str) -> None:
    """403 naming what was refused, for both datastores under ``--conf read_only true``."""
    if read_only:
        detail = f"the datastore is read-only (--conf read_only true): cannot {action}"
        raise HTTPException(status_code=403, detail=detail)
