"""Routes of the app put in front of the running MONAI Label server's own (which FastAPI would match first)."""

from __future__ import annotations

import sys
from typing import Any

from fastapi import APIRouter


def put_in_front(router: APIRouter, mark: str) -> bool:
    """The running server's routes with ``router``'s first (any earlier copy, marked ``mark``, replaced); False
    outside the server process (training and scoring processes build the app too)."""
    fastapi_app: Any = getattr(sys.modules.get("monailabel.app"), "app", None)
    if fastapi_app is None:
        return False
    for route in router.routes:
        setattr(route, mark, True)
    routes = [r for r in fastapi_app.router.routes if not getattr(r, mark, False)]
    fastapi_app.router.routes[:] = [*router.routes, *routes]
    return True


def server_app() -> Any:
    """The running server's FastAPI application, or None outside the server process."""
    return getattr(sys.modules.get("monailabel.app"), "app", None)
