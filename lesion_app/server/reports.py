"""The measurement report stored beside every final label's SEG on a DICOMweb server.

When the DICOMweb datastore has stored a label's SEG, :func:`store_report` measures the label
(:func:`lesion_app.server.measuring.mask_measurements`: the photograph's colour, its DICOM calibration or no
millimetres) and stores a TID 1500 Measurement Report (:func:`lesion_app.io.sr.measurement_report`) in the photograph's
study, referencing the photograph and that SEG's lesion segment. A label saved twice has two SEGs and two reports, each
report referencing its own SEG. A SEG another client stored on the server itself (OHIF saves through the DICOMweb proxy)
gets its report when the app first reads it as the photograph's label (:func:`ensure_report`: the worklist, training,
``GET /measurements``), unless a report in the study already references it. The report is the SEG's companion, not the
label: when it cannot be written or stored the label stays saved and the failure is logged and returned as
``report_error``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from lesion_app.io.sr import measurement_report, reported_instances
from lesion_app.server.measuring import mask_measurements

logger = logging.getLogger(__name__)


def label_measurements(mask: np.ndarray, image_path: str | os.PathLike) -> dict[str, Any]:
    """A stored label's measurements as its label info keeps them (the worklist shows area and maximum diameter):
    the photograph's colour and DICOM calibration, no request or ``--conf`` spacing. Empty (logged) when the
    photograph cannot be measured: the label stands without them."""
    try:
        return mask_measurements(np.asarray(mask, dtype=np.uint8), image_path, None, None)
    except Exception as e:  # an unreadable cached photograph, a mask of another size
        logger.error(f"cannot measure the label on {Path(image_path).name}: {type(e).__name__}: {e}")
        return {}


def store_report(
    client: Any, image_path: str | os.PathLike, photo_dir: str | os.PathLike, mask: np.ndarray, seg: Dataset
) -> dict[str, Any]:
    """Measures ``mask`` (the label ``seg`` encodes) on the cached photograph ``image_path`` and stores the report
    with ``client`` (a DICOMweb client). Returns ``{"report": SR series UID, "measurements": ...}`` or
    ``{"report_error": why}``."""
    try:
        files = sorted(Path(photo_dir).glob("*.dcm"))
        photo = dcmread(str(files[0]), stop_before_pixels=True)
        values = mask_measurements(np.asarray(mask, dtype=np.uint8), image_path, None, None)
        report = measurement_report(photo, seg, values)
        client.store_instances([report])
    except Exception as e:  # the SEG is stored: the label stands, the missing report is said
        logger.error(f"no measurement report for SEG {seg.SeriesInstanceUID}: {type(e).__name__}: {e}")
        return {"report_error": f"{type(e).__name__}: {str(e)[:200]}"}
    logger.info(f"stored measurement report {report.SeriesInstanceUID} for SEG {seg.SeriesInstanceUID}")
    return {"report": str(report.SeriesInstanceUID), "measurements": values}


def has_report(client: Any, study: str, seg: Dataset) -> bool:
    """Whether a report in ``study`` on the server already lists ``seg`` among its evidence."""
    for series in client.search_for_series(study, search_filters={"Modality": "SR"}):
        uid = series.get("0020000E", {}).get("Value", [""])[0]
        for item in client.retrieve_series_metadata(study, uid):
            if str(seg.SOPInstanceUID) in reported_instances(Dataset.from_json(item)):
                return True
    return False


def ensure_report(
    client: Any, image_path: str | os.PathLike, photo_dir: str | os.PathLike, mask: np.ndarray, seg: Dataset
) -> dict[str, Any]:
    """:func:`store_report` for a SEG the app did not store itself, unless the study already has its report."""
    try:
        if has_report(client, str(seg.StudyInstanceUID), seg):
            return {}
    except Exception as e:  # the search failed: no report now, the label stands
        return {"report_error": f"{type(e).__name__}: {str(e)[:200]}"}
    return store_report(client, image_path, photo_dir, mask, seg)
