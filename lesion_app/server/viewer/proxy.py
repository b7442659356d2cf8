"""The DICOMweb server (``--studies``) on the app's own origin, at ``/ohif/dicom-web/...``, for OHIF.

The browser talks to this server only: the DICOMweb server sends no CORS headers (Orthanc), need not be
reachable from the browser, and every request passes MONAI Label's access rules (the routes in :mod:`.routes`
require a token when ``MONAI_LABEL_AUTH_ENABLE`` is on). What is passed on:

- ``GET``/``HEAD`` on ``studies``, ``series`` and ``instances`` resources (QIDO-RS, WADO-RS) with their query
  strings, and ``POST`` on ``studies`` or ``studies/<uid>`` (STOW-RS: OHIF saving a SEG); nothing else, so the
  DICOMweb server's other endpoints (Orthanc's REST API) cannot be reached through it;
- the request's ``Accept`` and ``Content-Type``; never its ``Authorization`` (the app's token): the DICOMweb
  server gets MONAI Label's ``MONAI_LABEL_DICOMWEB_USERNAME``/``_PASSWORD`` instead, as the datastore does;
- the answer's status, body and ``Content-Type``/``ETag``/``Last-Modified``/``Content-Disposition``; bodies are
  streamed, except JSON, whose absolute URLs of the DICOMweb server (``BulkDataURI`` in metadata, the STOW
  answer's ``RetrieveURL``) are rewritten to this path, so the browser never sees the server's address.

A DICOMweb server that does not answer is 503; one that fails (5xx) is 502 (:mod:`lesion_app.server.checks`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from lesion_app.server import checks

REQUEST_HEADERS = ("accept", "content-type")
RESPONSE_HEADERS = ("content-type", "etag", "last-modified", "content-disposition")
RESOURCES = ("studies", "series", "instances")
#: One path segment: a UID, a resource name, ``frames/1,2``, ``bulk/7fe00010``, ``rendered``...
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,_-]*")


def checked_path(path: str, method: str) -> str:
    """The DICOMweb path a request may be passed on for: 400 for anything else, 405 for a write outside STOW."""
    parts = path.strip("/").split("/")
    if not parts or parts[0] not in RESOURCES or not all(SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise checks.bad_request(f"not a DICOMweb resource: {path[:200]!r}")
    if method == "POST" and not (parts[0] == "studies" and len(parts) <= 2):
        raise checks.not_allowed("only STOW-RS (POST studies[/<uid>]) writes through this path")
    return "/".join(parts)


class DicomWebProxy:
    """Passes checked requests on to ``upstream`` (e.g. ``http://127.0.0.1:8042/dicom-web``).

    Args:
        upstream: the DICOMweb root the app serves (``--studies``).
        public: this proxy's path on the app's origin (``/ohif/dicom-web``), for rewritten URLs.
        auth: (user, password) for the DICOMweb server, or None.
        timeout: seconds to wait for the DICOMweb server.
    """

    def __init__(self, upstream: str, public: str, auth: tuple[str, str] | None = None, timeout: float = 120.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.public = public.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        root = httpx.URL(self.upstream).path.rstrip("/")
        # Orthanc writes absolute URLs from its DicomWeb.Host setting or the request's Host: any origin, this root
        self._absolute = re.compile(rb'"https?://[^"/]+' + re.escape(root.encode()) + rb"/")
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(auth=self.auth, timeout=self.timeout)
        return self._client

    def rewrite(self, body: bytes) -> bytes:
        """JSON with the DICOMweb server's absolute URLs pointing at this proxy instead."""
        return self._absolute.sub(b'"' + self.public.encode() + b"/", body)

    async def forward(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: dict[str, str],
        body: bytes = b"",
    ) -> Response:
        """The DICOMweb server's answer to the request, as this server's response."""
        url = f"{self.upstream}/{checked_path(path, method)}"
        sent = {k: v for k, v in headers.items() if k.lower() in REQUEST_HEADERS}
        sent["accept-encoding"] = "identity"  # bodies pass through as they are
        request = self._http().build_request(method, url, params=list(query), headers=sent, content=body or None)
        try:
            answer = await self._http().send(request, stream=True)
        except httpx.TransportError as e:
            raise checks.unavailable(
                f"the DICOMweb server {self.upstream} does not answer ({type(e).__name__})"
            ) from None
        if answer.status_code >= 500:
            await answer.aclose()
            raise checks.bad_gateway(f"the DICOMweb server {self.upstream} failed ({answer.status_code})")
        out = {k: v for k, v in answer.headers.items() if k.lower() in RESPONSE_HEADERS}
        if method == "HEAD":
            await answer.aclose()
            return Response(status_code=answer.status_code, headers=out)
        if "json" in answer.headers.get("content-type", ""):
            try:
                content = await answer.aread()
            finally:
                await answer.aclose()
            return Response(self.rewrite(content), status_code=answer.status_code, headers=out)
        return StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code, headers=out, background=BackgroundTask(answer.aclose)
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
