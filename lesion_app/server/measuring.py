"""A mask's measurements as the server gives them: in infer results, on the measurements route and in the DICOM SR
(issue 28), with the photograph's colour and the spacing :mod:`lesion_app.server.spacing` resolves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lesion_app.core.measurements import measure, photograph_rgb
from lesion_app.server import checks
from lesion_app.server.spacing import resolve_spacing


def mask_measurements(
    mask: np.ndarray, image_path: str | os.PathLike, requested: Any, configured: Any, rgb: np.ndarray | None = None
) -> dict[str, Any]:
    """A (H, W) 0/1 mask's measurements (:func:`lesion_app.core.measurements.measure`) with the photograph's colour
    and spacing, and ``spacing_source``.

    Args:
        mask: (H, W) 0/1 at the photograph's upright size.
        image_path: the photograph (its DICOM calibration; its colour unless ``rgb`` is given).
        requested: the request's ``pixel_spacing_mm`` (mm per pixel) or None.
        configured: ``--conf pixel_spacing_mm`` or None.
        rgb: the photograph already decoded, (H, W, 3) uint8 (an infer request's, so it is not read twice).

    Raises:
        HTTPException: 400 for a bad requested spacing; 422 when the photograph cannot be read or is not the mask's
        size.
    """
    spacing, source = resolve_spacing(requested, image_path, configured)
    if rgb is None:
        try:
            rgb = photograph_rgb(image_path)
        except Exception as e:
            raise checks.unreadable_image(image_path, e) from None
    if rgb.shape[:2] != mask.shape:
        name = Path(image_path).name
        raise checks.unprocessable(
            f"the mask is {mask.shape[1]}x{mask.shape[0]} but image {name} is "
            f"{rgb.shape[1]}x{rgb.shape[0]} (width x height)"
        )
    return {**measure(mask, spacing, rgb), "spacing_source": source}
