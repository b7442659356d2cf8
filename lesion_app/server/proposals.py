"""The model's proposal for a photograph, stored on the DICOMweb server for the clinician to correct in OHIF.

A proposal is the served model's mask (the first of ``--conf models``), saved with MONAI Label's label tag
``original``; the DICOMweb datastore stores that as a SEG marked as the app's proposal
(:func:`lesion_app.io.seg.is_proposal`), which is never taken for a label. It is made:

- when a photograph is handed out as the next sample (``POST /activelearning/<strategy>``, the worklist's pick);
- on request: ``POST /proposal/<image id>`` (``?replace=true`` makes a new one even if one exists), or MONAI
  Label's ``POST /infer/<model>?image=<id>`` with ``params={"save_label": true}``.

An existing proposal is reused (a cached QIDO lookup), so handing a photograph out again costs nothing. With a
folder of photographs (no DICOMweb server) there is nothing to store and nothing is done.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from monailabel.interfaces.datastore import DefaultLabelTag

from lesion_app.server.dicomweb import LesionDicomWebDatastore

logger = logging.getLogger(__name__)

_making = threading.Lock()  # one proposal at a time: two requests for the same photograph make one SEG


def _dicomweb(app: Any) -> LesionDicomWebDatastore | None:
    datastore = app.datastore()
    return datastore if isinstance(datastore, LesionDicomWebDatastore) else None


def ensure(app: Any, image_id: str, replace: bool = False) -> dict[str, Any]:
    """The photograph's proposal SEG, made now if it has none (or ``replace``).

    Returns ``{"image", "proposal": SEG series UID or None, "made": bool, "detail": text}``. Raises the datastore's
    HTTP errors (404 unknown image, 403 read-only, 503 DICOMweb server down or the SEG not written).
    """
    datastore = _dicomweb(app)
    if datastore is None:
        return {"image": image_id, "proposal": None, "made": False, "detail": "proposals need a DICOMweb --studies"}
    datastore.get_image_uri(image_id)  # 400/404 for a bad or unknown id, before any inference
    with _making:
        existing = datastore.listing.proposals().get(image_id)
        if existing is not None and not replace:
            return {"image": image_id, "proposal": existing.series, "made": False, "detail": "exists"}
        model = app.settings.models[0]
        app.infer({"model": model, "image": image_id, "save_label": True, "label_tag": DefaultLabelTag.ORIGINAL})
        info = datastore.get_label_info(image_id, DefaultLabelTag.ORIGINAL)
    seg = info.get("SeriesInstanceUID")
    if seg is None:
        return {"image": image_id, "proposal": None, "made": False, "detail": f"{model} found no lesion"}
    logger.info(f"proposal for {image_id}: SEG {seg} by {model}")
    return {"image": image_id, "proposal": seg, "made": True, "detail": f"made by {model}"}


def offer(app: Any, image_id: str) -> dict[str, Any]:
    """:func:`ensure` for a photograph handed out as the next sample: never fails the hand-out; says what went
    wrong under ``proposal_error`` instead."""
    if _dicomweb(app) is None:
        return {}
    try:
        return {"proposal": ensure(app, image_id)["proposal"]}
    except Exception as e:
        detail = getattr(e, "detail", None) or f"{type(e).__name__}: {e}"
        logger.warning(f"no proposal for {image_id}: {detail}")
        return {"proposal": None, "proposal_error": str(detail)}
