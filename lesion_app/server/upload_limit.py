"""Refuses an oversized request body as it arrives, before the server has stored it.

MONAI Label's endpoints take uploads as FastAPI ``UploadFile``s, which Starlette spools in full to a temporary
file before the endpoint runs, so the datastore's size check (:func:`lesion_app.server.checks.check_upload_size`)
comes after the disk has taken the whole body: a client could fill the server's temporary folder with one request.
:class:`BodyLimit` answers 413 at once to a request that declares a longer body (``Content-Length``), and stops
reading one that streams more than it may (chunked), replacing whatever the endpoint would have answered.

The limit is :func:`body_limit_bytes`: room for an image and its label in one request (``/infer`` takes both) plus
the form around them, so every file the datastore's own check would accept still arrives.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

FORM_ROOM_BYTES = 2**20


def body_limit_bytes(max_upload_mb: float) -> int:
    """Two files at ``--conf max_upload_mb`` and 1 MiB of form fields and multipart framing."""
    return 2 * int(max_upload_mb * 2**20) + FORM_ROOM_BYTES


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered with 413 and is never read to its end."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"declares {declared / 2**20:.1f} MB")
            return
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True  # the endpoint sees a client that went away; its answer is replaced below
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, f"streamed more than {self.max_bytes / 2**20:.1f} MB")

    async def _refuse(self, send: Send, found: str) -> None:
        detail = (
            f"the request body {found}; the limit is {self.max_bytes / 2**20:.1f} MB "
            "(an image and its label at --conf max_upload_mb each)"
        )
        logger.warning(f"refused an upload: {detail}")
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server itself answers a malformed length
    return None


def install(max_bytes: int) -> bool:
    """Puts :class:`BodyLimit` inside the running MONAI Label server's middleware (after CORS, so a browser reads
    the 413). MONAI Label builds its FastAPI app, and Starlette its middleware stack, before the app's ``--conf`` is
    known, so the stack is rebuilt with the limit; the next request goes through it. False outside the server."""
    server: Any = sys.modules.get("monailabel.app")
    fastapi_app = getattr(server, "app", None)
    if fastapi_app is None:
        return False
    fastapi_app.user_middleware = [m for m in fastapi_app.user_middleware if m.cls is not BodyLimit]
    fastapi_app.user_middleware.append(Middleware(BodyLimit, max_bytes=max_bytes))
    fastapi_app.middleware_stack = fastapi_app.build_middleware_stack()
    logger.info(f"request bodies over {max_bytes / 2**20:.1f} MB are refused as they arrive")
    return True
