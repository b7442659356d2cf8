"""The API pages at ``/docs`` from local files: a clinic's offline server has readable API docs.

MONAI Label serves FastAPI's ReDoc page, which loads its script from a public CDN (and Google's fonts): without
internet ``/docs`` was blank, and with it every visit told third parties about the clinic's server. Here the page
loads ReDoc's standalone script and the favicon from the app's own origin, taken from the ``fastapi-offline``
package (which ships the Swagger UI and ReDoc builds), without web fonts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import FileResponse, HTMLResponse

from lesion_app.server import checks
from lesion_app.server.route_order import put_in_front, server_app

logger = logging.getLogger(__name__)

MARK = "lesion_app_api_docs"
#: The page's own files, served from the package's folder; nothing else is.
ASSETS = {"redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
PREFIX = "/docs/static"


def build_router(title: str, openapi_url: str) -> APIRouter:
    """``GET /docs`` (the ReDoc page) and ``GET /docs/static/<file>`` (its script and icon)."""
    router = APIRouter()

    @router.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        )

    @router.get(PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise checks.not_found(f"no file {name!r} here")
        return FileResponse(ASSET_DIR / name, media_type=ASSETS[name])

    return router


def install() -> bool:
    """Puts the routes in front of the running server's (MONAI Label's own ``/docs`` loads from a CDN)."""
    fastapi_app: Any = server_app()
    if fastapi_app is None:
        return False
    put_in_front(build_router(fastapi_app.title, fastapi_app.openapi_url or "/openapi.json"), MARK)
    logger.info("API pages at /docs, from local files")
    return True
