"""BodyLimit in front of a FastAPI upload endpoint like MONAI Label's: small uploads pass, large ones never arrive."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, File, UploadFile

from lesion_app.server import upload_limit
from lesion_app.server.upload_limit import BodyLimit, body_limit_bytes

LIMIT = 64 * 1024


def upload_app(stored: list[int]) -> FastAPI:
    app = FastAPI()

    @app.put("/datastore/")
    async def add(file: Annotated[UploadFile, File()]) -> dict[str, int]:
        stored.append(len(await file.read()))
        return {"size": stored[-1]}

    app.add_middleware(BodyLimit, max_bytes=LIMIT)
    return app


def put(app: FastAPI, **kwargs: object) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lesion") as client:
            return await client.put("/datastore/", **kwargs)  # type: ignore[arg-type]

    return asyncio.run(call())


def multipart(size: int, boundary: str = "b0undary") -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'.encode()
    return head + b"\x89" * size + f"\r\n--{boundary}--\r\n".encode()


def test_an_upload_under_the_limit_reaches_the_endpoint() -> None:
    stored: list[int] = []
    r = put(upload_app(stored), files={"file": ("x.png", b"\x89" * (LIMIT // 2))})
    assert r.status_code == 200 and r.json() == {"size": LIMIT // 2}
    assert stored == [LIMIT // 2]


def test_a_declared_length_over_the_limit_is_413_and_the_endpoint_never_runs() -> None:
    stored: list[int] = []
    r = put(upload_app(stored), files={"file": ("x.png", b"\x89" * (2 * LIMIT))})
    assert r.status_code == 413
    assert "max_upload_mb" in r.json()["detail"] and "declares" in r.json()["detail"]
    assert stored == []


@pytest.mark.parametrize("size, status", [(LIMIT // 2, 200), (3 * LIMIT, 413)])
def test_a_chunked_body_is_counted_as_it_streams(size: int, status: int) -> None:
    """No Content-Length: the body is cut off where it passes the limit and the endpoint's answer is replaced."""
    stored: list[int] = []
    body = multipart(size)
    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for i in range(0, len(body), 4096):
            chunks_sent += 1
            yield body[i : i + 4096]

    r = put(upload_app(stored), content=stream(), headers={"content-type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == status, r.text
    assert stored == ([size] if status == 200 else [])
    if status == 413:
        assert "streamed more than" in r.json()["detail"]
        assert chunks_sent < len(body) / 4096, "the rest of the body was never read"


def test_the_limit_leaves_room_for_an_image_and_its_label() -> None:
    assert body_limit_bytes(1) == 3 * 2**20
    assert body_limit_bytes(0.5) > 2 * int(0.5 * 2**20)


def test_install_outside_the_server_changes_nothing() -> None:
    if "monailabel.app" in sys.modules:
        pytest.skip("MONAI Label's server module is loaded in this process")
    assert upload_limit.install(LIMIT) is False
