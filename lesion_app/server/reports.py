"""The measurement report stored beside every final label's SEG on a DICOMweb server.

When the DICOMweb datastore has stored a label's SEG, :func:`store_report` measures the label
(:func:`lesion_app.server.spacing.measurements`: the photograph's colour, its DICOM calibration or no millimetres) and
stores a TID 1500 Measurement Report (:func:`lesion_app.io.sr.measurement_report`) in the photograph's study,
referencing the photograph and that SEG's lesion segment. A label saved twice has two SEGs and two reports, each
report referencing its own SEG. The report is the SEG's companion, not the label: when it cannot be written or
stored the label stays saved and the failure is logged and returned as ``report_error``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from lesion_app.io.sr import measurement_report
from lesion_app.server.spacing import measurements

logger = logging.getLogger(__name__)


def store_report(
    client: Any, image_path: str | os.PathLike, photo_dir: str | os.PathLike, mask: np.ndarray, seg: Dataset
) -> dict[str, Any]:
    """Measures ``mask`` (the label ``seg`` encodes) on the cached photograph ``image_path`` and stores the report
    with ``client`` (a DICOMweb client). Returns ``{"report": SR series UID}`` or ``{"report_error": why}``."""
    try:
        files = sorted(Path(photo_dir).glob("*.dcm"))
        photo = dcmread(str(files[0]), stop_before_pixels=True)
        values = measurements(np.asarray(mask, dtype=np.uint8), image_path, None, None)
        report = measurement_report(photo, seg, values)
        client.store_instances([report])
    except Exception as e:  # the SEG is stored: the label stands, the missing report is said
        logger.error(f"no measurement report for SEG {seg.SeriesInstanceUID}: {type(e).__name__}: {e}")
        return {"report_error": f"{type(e).__name__}: {str(e)[:200]}"}
    logger.info(f"stored measurement report {report.SeriesInstanceUID} for SEG {seg.SeriesInstanceUID}")
    return {"report": str(report.SeriesInstanceUID)}
