"""Where a photograph's pixel spacing comes from.

The spacing (mm per pixel) is, first to last: the request's ``pixel_spacing_mm``; the calibration of the DICOM
instance a DICOMweb photograph came from (PixelSpacing, else ImagerPixelSpacing, never the import's 1 mm placeholder:
:func:`lesion_app.io.dicom.calibrated_spacing_mm`); ``--conf pixel_spacing_mm``; else unknown, and then the
measurements are in pixels only. ``spacing_source`` in the measurements says which (``request``, ``dicom``,
``conf``, ``unknown``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydicom import dcmread

from lesion_app.io.dicom import calibrated_spacing_mm
from lesion_app.io.images import is_itk_file
from lesion_app.server import checks

logger = logging.getLogger(__name__)


def source_instance(image_path: str | os.PathLike) -> Path | None:
    """The DICOM file a DICOMweb photograph was cached from: the datastore keeps ``<series>.nrrd`` beside the
    series' folder ``<series>/`` of one ``.dcm``; None for any other photograph."""
    path = Path(image_path)
    if not is_itk_file(path) or not path.name.endswith(".nrrd"):
        return None
    folder = path.with_name(path.name[: -len(".nrrd")])
    found = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    return found[0] if len(found) == 1 else None


def dicom_spacing(image_path: str | os.PathLike) -> float | None:
    """The calibrated spacing of a DICOMweb photograph (mm per pixel), None when it has none or is no DICOM."""
    source = source_instance(image_path)
    if source is None:
        return None
    try:
        return calibrated_spacing_mm(dcmread(str(source), stop_before_pixels=True))
    except Exception as e:  # an unreadable cache file: measure in pixels, say so in the log
        logger.warning(f"cannot read the spacing of {source.parent.name}: {type(e).__name__}")
        return None


def resolve_spacing(requested: Any, image_path: str | os.PathLike, configured: Any = None) -> tuple[float | None, str]:
    """(mm per pixel or None, where it came from) for a photograph, by the order of this module's docstring.

    Raises:
        HTTPException: 400 when the request gives a spacing that is not a positive number (zero, negative, text).
    """
    spacing = checks.requested_spacing(requested)
    if spacing is not None:
        return spacing, "request"
    found = dicom_spacing(image_path)
    if found:
        return found, "dicom"
    if configured:
        return float(configured), "conf"
    return None, "unknown"
