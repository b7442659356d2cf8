"""Reading and writing photographs and masks: one rule for every encoding, EXIF orientation, ITK geometry.

Every array here is rows first, (H, W) or (H, W, C), upright as photo viewers show the file (its EXIF
orientation applied), except where a function says it works on the *stored* pixel grid: the grid ITK and
3D Slicer read, which ignores EXIF.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

#: Files read through ITK: 3D Slicer's labels, and photographs the DICOMweb datastore caches with their geometry.
ITK_SUFFIXES = (".nrrd", ".nii", ".nii.gz")
#: Result files the infer tasks write: PNG for viewers and programs, NRRD/NIfTI for 3D Slicer.
RESULT_EXTENSIONS = (".png", ".nii.gz", ".nrrd")
#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112

#: Per EXIF orientation 2-8: the array operation that makes a stored (H, W[, C]) grid upright (as Pillow's
#: ``exif_transpose``) and its inverse. 2, 3, 4, 5 and 7 are their own inverse; 6 and 8 are quarter turns.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_STORED = {**_UPRIGHT, 6: _UPRIGHT[8], 8: _UPRIGHT[6]}


def is_itk_file(path: str | os.PathLike) -> bool:
    """Whether a file is read through ITK (NRRD, NIfTI) rather than Pillow, by its (any-case) extension."""
    return str(path).lower().endswith(ITK_SUFFIXES)


def to_8_bit(arr: np.ndarray) -> np.ndarray:
    """Integer pixels of any bit depth as 8-bit, by the one rule for every file type: the image's bit depth is
    the fewest bits that hold its maximum (at least 8), and the values are shifted down to 8 bits.

    So 12-bit values in a 16-bit container (0-4080, as raw converters export) become exactly the 8-bit version
    (0-255), and full-range 16-bit values lose their low byte, as Pillow does for 16-bit colour PNGs.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    values = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, None)
    bits = max(8, int(values.max()).bit_length()) if values.size else 8
    return np.clip(np.floor(values / 2 ** (bits - 8)), 0, 255).astype(np.uint8)


def _rawmode(img: Image.Image) -> str:
    """How the file stores its pixels (``RGB;16B`` for a 16-bit colour PNG), from Pillow's decoder tile."""
    if not getattr(img, "tile", None):
        return ""
    args = img.tile[0][3]
    return str(args[0] if isinstance(args, tuple) else args)


def open_image(path: str | os.PathLike) -> Image.Image:
    """An image file as a Pillow image, every encoding read by one rule.

    Pillow keeps only the high byte of 16-bit colour PNGs and TIFFs, which turns 12-bit photographs (0-4080 in
    16 bits) almost black; those are decoded in full with SimpleITK, brought to 8 bits by :func:`to_8_bit` and
    made upright by their EXIF orientation. Every other file is returned as Pillow opens it (lazily, EXIF kept),
    for :func:`to_rgb` or :func:`to_gray`.

    Raises:
        OSError, ValueError: the file is not an image Pillow (or SimpleITK, for 16-bit colour) can read.
    """
    img = Image.open(path)
    rawmode = _rawmode(img)
    if img.mode not in ("RGB", "RGBA") or ";16" not in rawmode:
        return img
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:
        orientation = 1
    img.close()
    import SimpleITK as sitk

    arr = to_8_bit(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    arr = stored_to_upright(arr, orientation if orientation in _UPRIGHT else 1)
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGBA" if arr.shape[-1] == 4 else "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, upright as its EXIF orientation says (as viewers show it).

    High bit depths (16-bit grey, 32-bit integer or float) go to 8 bits by :func:`to_8_bit`; transparency is
    composited on white. Open files with :func:`open_image`, which also reads 16-bit colour in full.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(to_8_bit(np.asarray(img)), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def to_gray(img: Image.Image) -> Image.Image:
    """A label image as single-channel, upright like its photograph (16-bit labels: nonzero is lesion)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((arr > 0).astype(np.uint8), mode="L")
    return img.convert("L")


def binarize(label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Lesion = 1 whatever the encoding: 0/1, 0/255, or a soft or anti-aliased 8-bit mask.

    Values above half the maximum count as lesion (above 0.5 for masks whose maximum is at most 1).
    Returns float32 (numpy) or float (torch) 0/1 of the same shape.
    """
    size = label.numel() if isinstance(label, torch.Tensor) else label.size
    top = float(label.max()) if size else 0.0
    threshold = top / 2.0 if top > 1.0 else 0.5
    out = label > threshold
    return out.float() if isinstance(out, torch.Tensor) else out.astype(np.float32)


def read_itk_slice(path: str | os.PathLike) -> np.ndarray:
    """The one 2D slice of an ITK file as (H, W) or (H, W, C), rows first; a single-slice volume is squeezed.

    Raises:
        ValueError: the file holds more than one slice.
    """
    import itk

    image = itk.imread(str(path))
    arr = np.asarray(itk.array_from_image(image))
    components = int(image.GetNumberOfComponentsPerPixel())
    spatial = arr.shape[:-1] if components > 1 else arr.shape
    if len(spatial) < 2 or any(d != 1 for d in spatial[:-2]):
        raise ValueError(f"{Path(path).name} holds {'x'.join(map(str, spatial))} pixels, not one 2D slice")
    h, w = spatial[-2:]
    return arr.reshape(h, w, components) if components > 1 else arr.reshape(h, w)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file as a (H, W) boolean lesion mask, upright: PNG/TIFF/BMP 0/1 or 0/255, or 3D Slicer's
    NRRD/NIfTI (one slice, stored grid). The one reader of label files outside the training pipeline."""
    if is_itk_file(path):
        arr = np.squeeze(read_itk_slice(path))
    else:
        with open_image(path) as img:
            arr = np.asarray(to_gray(img))
    return binarize(arr).astype(bool)


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation (1-8) of a stored photograph; 1 when it has none or cannot be read."""
    try:
        with Image.open(path) as img:
            value = int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:
        return 1
    return value if value in _UPRIGHT else 1


def stored_to_upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """A (H, W[, C]) array on a photograph's stored pixel grid (as ITK and 3D Slicer read it), made upright."""
    op = _UPRIGHT.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def upright_to_stored(arr: np.ndarray, orientation: int) -> np.ndarray:
    """A (H, W[, C]) array on the upright photograph (as the app reads it), put on its stored pixel grid."""
    op = _STORED.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def stored_point_to_upright(
    row: float, col: float, orientation: int, stored_shape: tuple[int, int]
) -> tuple[float, float]:
    """A (row, col) on a photograph's stored pixel grid (as ITK and 3D Slicer index it) on the upright photograph
    (as the app reads it), for EXIF orientation 1-8: the point-wise counterpart of :func:`stored_to_upright`."""
    h, w = stored_shape
    moves = {
        2: (row, w - 1 - col),
        3: (h - 1 - row, w - 1 - col),
        4: (h - 1 - row, col),
        5: (col, row),
        6: (col, h - 1 - row),
        7: (w - 1 - col, h - 1 - row),
        8: (w - 1 - col, row),
    }
    return moves.get(orientation, (row, col))


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(H, W) as viewers and the app's loader show an open image: after its EXIF orientation, without decoding.

    A broken EXIF block counts as no orientation, as Pillow's ``exif_transpose`` treats it.
    """
    width, height = img.size
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        orientation = 1
    return (width, height) if orientation in SWAPPING_ORIENTATIONS else (height, width)


def itk_header(path: str | os.PathLike) -> Any:
    """ITK's image IO for a file with only its header read (sizes, components, spacing, direction).

    Raises:
        ValueError: no ITK reader recognises the file.
    """
    import itk

    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise ValueError(f"no ITK reader recognises {Path(path).name}")
    io.SetFileName(str(path))
    io.ReadImageInformation()
    return io


def itk_geometry(path: str | os.PathLike) -> tuple[list[float], list[float], np.ndarray]:
    """Spacing (mm), origin (mm) and 2x2 direction of the first two axes of an image as ITK (and so 3D
    Slicer) reads it.

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


def itk_plane_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of a one-slice ITK image, from its header.

    Raises:
        ValueError: the file is not one 2D slice (or ITK cannot read it).
    """
    io = itk_header(path)
    dims = [int(io.GetDimensions(i)) for i in range(int(io.GetNumberOfDimensions()))]
    if len(dims) < 2 or any(d != 1 for d in dims[2:]):
        raise ValueError(f"{'x'.join(map(str, dims))} is not one 2D slice")
    return dims[1], dims[0]


def stored_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """The upright (H, W) of a photograph file (Pillow formats or a one-slice NRRD/NIfTI), from its header.

    Raises:
        OSError, ValueError: the file cannot be read.
    """
    if is_itk_file(path):  # a photograph the DICOMweb datastore cached with its DICOM geometry
        return itk_plane_size(path)
    with Image.open(path) as img:
        return upright_size(img)


def write_mask(mask: np.ndarray, extension: str, source: str | os.PathLike | None = None) -> str:
    """Writes a (H, W) 0/1 mask (upright) to a new temporary file and returns its path.

    PNG is written by Pillow, upright, so it overlays the photograph as photo viewers show it. NIfTI and
    NRRD (what 3D Slicer asks for) go through ITK on the grid ITK, and so Slicer, reads ``source`` on: its
    stored pixel order (EXIF orientation undone) and its spacing, origin and direction (a JPEG's JFIF density
    gives a spacing other than 1), so the mask lands on the lesion in Slicer.

    Raises:
        ValueError: ``extension`` is not one of :data:`RESULT_EXTENSIONS`.
    """
    if extension not in RESULT_EXTENSIONS:
        raise ValueError(f"result_extension must be one of {RESULT_EXTENSIONS}, got {extension!r}")
    fd, path = tempfile.mkstemp(suffix=extension, prefix="lesion_")
    os.close(fd)
    mask = np.ascontiguousarray(mask.astype(np.uint8))
    if extension == ".png":
        Image.fromarray(mask, mode="L").save(path)
        return path

    import itk

    spacing, origin, direction = [1.0, 1.0], [0.0, 0.0], np.eye(2)
    if source is not None and os.path.isfile(source):
        mask = upright_to_stored(mask, exif_orientation(source))
        try:
            spacing, origin, direction = itk_geometry(source)
        except Exception as e:  # ITK cannot read it: Slicer could not either; keep ITK's defaults
            logger.warning(f"no ITK geometry for {Path(source).name} ({e}); writing unit spacing, zero origin")
    image = itk.image_from_array(np.ascontiguousarray(mask))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction, dtype=np.float64)))
    itk.imwrite(image, path, compression=True)
    return path
