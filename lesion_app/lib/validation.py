"""Checks on what clients send before anything reaches the studies folder.

MONAI Label 0.8.5's local datastore trusts its input: an id with ``../`` writes outside the studies folder,
a garbage file replaces a final label, and malformed uploads end in HTTP 500. Every check here raises
:class:`fastapi.HTTPException` with a 4xx status and a message a user can act on; MONAI Label's datastore
and infer endpoints let it through unchanged. The functions are pure (no datastore state) so they are
unit-tested on their own.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastapi import HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError

from lesion_app.lib import models
from lesion_app.lib.transforms import is_itk_file, to_rgb

#: Photographs the app reads (any case); stored with the lower-case extension.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Label files read with Pillow (lossless 2D formats).
PIL_LABEL_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp")
#: Label files 3D Slicer sends, read with ITK; they must hold one slice.
ITK_LABEL_EXTENSIONS = (".nrrd", ".nii.gz", ".nii")
LABEL_EXTENSIONS = PIL_LABEL_EXTENSIONS + ITK_LABEL_EXTENSIONS
MAX_ID_LENGTH = 128
#: Ids the app creates: ASCII letters and digits, then also space ( ) + _ . - (no leading dot or space).
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ()+_.\-]*")
#: Label values accepted: the app's 0/1 or the common 0/255.
LABEL_ENCODINGS = ({0, 1}, {0, 255})
#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail=detail)


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
    """An id for a new image: also a safe character set, since it becomes a file name in the studies folder."""
    check_reference(value, what)
    if not _SAFE_ID.fullmatch(value) or value.endswith((" ", ".")):
        raise bad_request(
            f"{what} {_shown(value)} may only contain ASCII letters, digits, space and ( ) + _ . -, "
            "start with a letter or digit and not end with a space or dot"
        )
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


def _open(path: str | os.PathLike, what: str, max_pixels: int) -> Image.Image:
    """Opens an image and checks its header size before anything is decoded (a decompression bomb is a 413)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise _too_many_pixels(what, str(e), max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise bad_request(f"the {what} is not a readable image ({_cause(e)})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise _too_many_pixels(what, f"{width}x{height} = {width * height} pixels", max_pixels)
    if width < 1 or height < 1:
        img.close()
        raise bad_request(f"the {what} has no pixels ({width}x{height})")
    return img


def _too_many_pixels(what: str, found: str, max_pixels: int) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"the {what} is too large ({found}); the limit is {max_pixels} pixels (--conf max_image_pixels)",
    )


def _cause(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


#: The Pillow transpose that turns a stored pixel grid upright for each EXIF orientation (as ``exif_transpose``).
_TO_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Its inverse: from upright back to the stored grid (only the two quarter turns differ).
_TO_STORED = {**_TO_UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation (1-8) of a stored photograph; 1 when it has none or cannot be read."""
    try:
        with Image.open(path) as img:
            value = int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if value in _TO_UPRIGHT else 1


def _transposed(mask: np.ndarray, method: Image.Transpose | None) -> np.ndarray:
    if method is None:
        return mask
    return np.asarray(Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)), mode="L").transpose(method))


def stored_to_upright(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A (H, W) uint8 array on a photograph's stored pixel grid (as ITK and 3D Slicer read it), made upright."""
    return _transposed(mask, _TO_UPRIGHT.get(orientation))


def upright_to_stored(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A (H, W) uint8 array on the upright photograph (as the app reads it), put on its stored pixel grid."""
    return _transposed(mask, _TO_STORED.get(orientation))


def itk_header(path: str | os.PathLike) -> Any:
    """ITK's image IO for a file with only its header read (sizes, components, spacing, direction)."""
    import itk

    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise ValueError(f"no ITK reader recognises {Path(path).name}")
    io.SetFileName(str(path))
    io.ReadImageInformation()
    return io


def itk_geometry(path: str | os.PathLike) -> tuple[list[float], list[float], np.ndarray]:
    """Spacing, origin and direction of the first two axes of an image as ITK (and so 3D Slicer) reads it.

    Only the header is read. ITK takes the spacing of a JPEG from its JFIF density (300 dpi: 0.0847 mm);
    PNG and headerless JPEGs get unit spacing; origin is zero and direction the identity for photographs.
    """
    io = itk_header(path)
    n = min(2, int(io.GetNumberOfDimensions()))
    spacing = [float(io.GetSpacing(i)) for i in range(n)] + [1.0] * (2 - n)
    origin = [float(io.GetOrigin(i)) for i in range(n)] + [0.0] * (2 - n)
    direction = np.eye(2)
    for j in range(n):
        column = io.GetDirection(j)
        for i in range(n):
            direction[i, j] = float(column[i])
    return spacing, origin, direction


def _itk_plane_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of a one-slice ITK image from its header."""
    io = itk_header(path)
    dims = [int(io.GetDimensions(i)) for i in range(int(io.GetNumberOfDimensions()))]
    if len(dims) < 2 or any(d != 1 for d in dims[2:]):
        raise ValueError(f"{'x'.join(map(str, dims))} is not one 2D slice")
    return dims[1], dims[0]


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(H, W) as viewers and the app's loader show the image: after its EXIF orientation, without decoding."""
    width, height = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: Pillow's exif_transpose ignores it too
        orientation = 1
    return (width, height) if orientation in _SWAPPING_ORIENTATIONS else (height, width)


def check_image_file(path: str | os.PathLike, max_pixels: int) -> tuple[int, int]:
    """The upright (H, W) of a photograph that decodes completely and converts to RGB as the app reads it.

    Pillow's ``verify`` catches broken PNG chunks; only a full decode catches a truncated JPEG. Any mode
    (gray, RGBA, palette, 16-bit, CMYK) passes if :func:`to_rgb` converts it.
    """
    with _open(path, "image", max_pixels) as img:
        try:
            img.verify()
        except Exception as e:
            raise bad_request(f"the image is corrupt ({_cause(e)})") from None
    with _open(path, "image", max_pixels) as img:
        try:
            img.load()
            rgb = to_rgb(img)
        except Image.DecompressionBombError as e:
            raise _too_many_pixels("image", str(e), max_pixels) from None
        except Exception as e:
            raise bad_request(f"the image cannot be decoded, it may be truncated ({_cause(e)})") from None
        return rgb.height, rgb.width


def image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """The upright (H, W) of a stored photograph, from its header; 422 if it cannot be read."""
    if is_itk_file(path):  # a photograph the DICOMweb datastore cached with its DICOM geometry
        try:
            return _itk_plane_size(path)
        except Exception as e:
            raise HTTPException(
                status_code=422, detail=f"the stored image {Path(path).name} cannot be read ({_cause(e)})"
            ) from None
    try:
        with Image.open(path) as img:
            return upright_size(img)
    except Exception as e:
        raise HTTPException(
            status_code=422, detail=f"the stored image {Path(path).name} cannot be read ({_cause(e)})"
        ) from None


def _label_array_pil(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    with _open(path, "label", max_pixels) as img:
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
        arr = _transposed_any(arr, _TO_UPRIGHT.get(exif_orientation(image)))
    return arr


def _transposed_any(arr: np.ndarray, method: Image.Transpose | None) -> np.ndarray:
    """A Pillow transpose done with numpy, for label arrays of any dtype (values are checked later)."""
    ops = {
        Image.Transpose.FLIP_LEFT_RIGHT: lambda a: a[:, ::-1],
        Image.Transpose.FLIP_TOP_BOTTOM: lambda a: a[::-1],
        Image.Transpose.ROTATE_180: lambda a: a[::-1, ::-1],
        Image.Transpose.ROTATE_90: lambda a: np.rot90(a, 1),
        Image.Transpose.ROTATE_270: lambda a: np.rot90(a, -1),
        Image.Transpose.TRANSPOSE: lambda a: a.T,
        Image.Transpose.TRANSVERSE: lambda a: a[::-1, ::-1].T,
    }
    return arr if method is None else np.ascontiguousarray(ops[method](arr))


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
        raise bad_request(f"label values must be 0/1 or 0/255 (0 = skin, lesion = 1 or 255); found {shown}")
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


def atomic_write(dest: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Writes ``dest`` through :func:`lesion_app.lib.models.atomic_write` (temporary file, fsync, rename).

    A crash or a failing write leaves the old file untouched and no half-written one; a disk that cannot
    take the file is the server's condition, not the request's fault: 507 (full) or 503, with the reason.
    """

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    try:
        models.atomic_write(dest, to_file)
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        raise HTTPException(
            status_code=507 if full else 503,
            detail=f"cannot write {Path(dest).name} in the studies folder: {e.strerror or e}; nothing was changed",
        ) from e


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    def copy(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            while chunk := s.read(1 << 20):
                f.write(chunk)

    atomic_write(dest, copy)


def atomic_png(mask: np.ndarray, dest: str | os.PathLike) -> None:
    atomic_write(dest, lambda f: Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)), mode="L").save(f, "PNG"))


def unreadable_image(path: Any, e: BaseException) -> HTTPException:
    """422 for an image in the studies folder (or an infer upload) that cannot be decoded: not a server fault."""
    name = Path(path).name if isinstance(path, str | os.PathLike) else "the image"
    return HTTPException(status_code=422, detail=f"cannot read image {name}: {_cause(e)}")


def refuse_if_read_only(read_only: bool, action: str) -> None:
    """403 naming what was refused, for both datastores under ``--conf read_only true``."""
    if read_only:
        detail = f"the datastore is read-only (--conf read_only true): cannot {action}"
        raise HTTPException(status_code=403, detail=detail)
