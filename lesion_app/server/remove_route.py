"""``DELETE /datastore/`` (and ``/datastore/image``) take ``image=`` as every other route does, and ``id=`` as
MONAI Label's do (its only name for the photograph there, where a client naturally sent ``image=`` and got a 422).

Both names may be given only if they agree; neither is a 400 that says how to name the photograph. The removal
itself is MONAI Label's endpoint function (the datastore's :meth:`remove_image`: links and labels as it says).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends
from monailabel.config import RBAC_ADMIN, settings
from monailabel.endpoints import datastore as datastore_endpoint
from monailabel.endpoints.user.auth import RBAC, User

from lesion_app.server import checks
from lesion_app.server.route_order import put_in_front

logger = logging.getLogger(__name__)

MARK = "lesion_app_remove_route"
_ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))


def named_image(image: str | None, id: str | None) -> str:
    """The photograph a removal names by ``image=`` or ``id=``; 400 when neither or two different ones."""
    if image and id and image != id:
        raise checks.bad_request(f"image={image!r} and id={id!r} name two photographs: give one of them")
    if not (image or id):
        raise checks.bad_request("name the photograph to remove: ?image=<id> (or ?id=<id>)")
    return str(image or id)


def build_router() -> APIRouter:
    """MONAI Label's two removal routes, each also taking ``image=``."""
    router = APIRouter()
    base = f"{settings.MONAI_LABEL_API_STR}/datastore"

    @router.delete(f"{base}/image", summary=f"{RBAC_ADMIN}Remove Image and corresponding labels (?image=<id>)")
    @router.delete(f"{base}/", summary=f"{RBAC_ADMIN}Remove Image and corresponding labels", include_in_schema=False)
    async def remove_image(image: str | None = None, id: str | None = None, user: User = _ADMIN) -> Any:
        return datastore_endpoint.remove_image(named_image(image, id), user.username)

    return router


def install() -> bool:
    """Puts the routes in front of the running server's; False outside the server process."""
    if not put_in_front(build_router(), MARK):
        return False
    logger.info("DELETE /datastore/ takes ?image=<id> (or MONAI Label's ?id=)")
    return True
