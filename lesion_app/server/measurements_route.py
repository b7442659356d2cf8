"""``GET /measurements/{image}?tag=final``: the measurements of a stored label, put in front of MONAI Label's routes
at start-up (:func:`install`), as MONAI Label's own ``GET /datastore/label`` names a label by image and tag.

Any tag the datastore keeps (``final``, the model's ``original``, a tag of the user's); ``pixel_spacing_mm`` in the
query gives the spacing, else the photograph's DICOM calibration or ``--conf pixel_spacing_mm``
(:mod:`lesion_app.server.spacing`). A malformed image id or tag, or a bad spacing, is a 400; an image the datastore
does not have, or no label under that tag, a 404; a label whose photograph cannot be read a 422. Nothing is written.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from monailabel.config import RBAC_USER, settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag

from lesion_app.io.images import read_mask
from lesion_app.server import checks
from lesion_app.server.measuring import mask_measurements

logger = logging.getLogger(__name__)

#: Marks the route :func:`install` added, so a second call replaces it.
MARK = "lesion_app_measurements_route"
_USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))


def label_measurements(app: Any, image: str, tag: str, pixel_spacing_mm: str | None) -> dict[str, Any]:
    """The measurements of ``image``'s label under ``tag`` in the app's datastore, with which files were read.

    Raises:
        HTTPException: 400, 404 or 422 as the module says.
    """
    checks.check_reference(image)
    checks.check_tag(tag)
    datastore = app.datastore()
    image_path = datastore.get_image_uri(image)  # 404 for an unknown id (both datastores)
    if not image_path or not os.path.isfile(image_path):
        raise checks.not_found(f"the photograph of image {image!r} is not in the datastore")
    label_path = datastore.get_label_uri(image, tag)
    if not label_path or not os.path.isfile(label_path):
        raise checks.not_found(f"image {image!r} has no label tagged {tag!r}")
    try:
        mask = read_mask(label_path)
    except Exception as e:
        detail = f"the {tag!r} label of image {image!r} cannot be read ({type(e).__name__})"
        raise checks.unprocessable(detail) from None
    configured = getattr(getattr(app, "settings", None), "pixel_spacing_mm", None)
    values = mask_measurements(mask.astype("uint8"), image_path, pixel_spacing_mm, configured)
    return {"image": image, "tag": tag, "label": Path(label_path).name, "measurements": values}


def build_router(app: Any) -> APIRouter:
    """The one route, bound to the MONAI Label app (its datastore and settings)."""
    router = APIRouter()
    summary = f"{RBAC_USER}Measure a stored label (area, diameters, asymmetry, border, colour)"

    @router.get("/measurements/{image}", tags=["Datastore"], summary=summary)
    async def measure_label(
        image: str, tag: str = DefaultLabelTag.FINAL.value, pixel_spacing_mm: str | None = None, user: User = _USER
    ) -> dict[str, Any]:
        return await run_in_threadpool(label_measurements, app, image, tag, pixel_spacing_mm)

    for route in router.routes:
        setattr(route, MARK, True)
    return router


def install(app: Any) -> bool:
    """Puts the route in front of the running MONAI Label server's; False outside the server process."""
    fastapi_app = getattr(sys.modules.get("monailabel.app"), "app", None)
    if fastapi_app is None:
        return False
    routes = [r for r in fastapi_app.router.routes if not getattr(r, MARK, False)]
    fastapi_app.router.routes[:] = [*build_router(app).routes, *routes]
    logger.info("GET /measurements/<image>?tag=final measures stored labels")
    return True
