"""The browser side without a browser: OHIF's files under /ohif/, its configuration, the DICOMweb proxy (against a
stand-in DICOMweb server) and the worklist page."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException
from starlette.responses import Response, StreamingResponse

from lesion_app.server.viewer import worklist
from lesion_app.server.viewer.config import app_config
from lesion_app.server.viewer.dist import DEFAULT_DIST, ViewerFiles, content_type, dist_folder
from lesion_app.server.viewer.proxy import DicomWebProxy, checked_path
from tests.support.errors import refused

RUNTIME = 'var x=1;__webpack_require__.p = "/";var y=2;'


@pytest.fixture()
def dist(tmp_path: Path) -> Path:
    """A miniature of @ohif/app's dist/: the same hard-coded root paths, in the same kinds of file."""
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text(
        '<script>window.PUBLIC_URL="/";</script><link href="/app.bundle.css">'
        '<script src="/app-config.js"></script><script src="/app.bundle.abc.js"></script>'
        '<a href="//cdn.example.org/x">'
    )
    (d / "app.bundle.abc.js").write_text(RUNTIME + "load('/dicom-microscopy-viewer/x.js');")
    (d / "compute.bundle.def.js").write_text(RUNTIME)
    (d / "plain.bundle.js").write_text("console.log('/not/a/runtime')")
    (d / "app.bundle.css").write_text("@font-face{src:url(/a34f.woff2)}")
    (d / "manifest.json").write_text('{"icons": [{"src": "/assets/icon.png"}]}')
    (d / "x.wasm").write_bytes(b"\0asm")
    return d


def test_the_dist_is_served_under_the_prefix(dist: Path) -> None:
    files = ViewerFiles(dist, "/ohif")
    index = files.asset("").body.decode()
    assert 'window.PUBLIC_URL="/ohif/"' in index and 'src="/ohif/app.bundle.abc.js"' in index
    assert 'href="/ohif/app.bundle.css"' in index and 'href="//cdn.example.org/x"' in index
    bundle = files.asset("app.bundle.abc.js")
    assert '__webpack_require__.p = "/ohif/";' in bundle.body.decode() and bundle.media_type == "text/javascript"
    assert "'/ohif/dicom-microscopy-viewer/x.js'" in bundle.body.decode()
    assert '"/ohif/"' in files.asset("compute.bundle.def.js").body.decode()  # worker bundles too
    assert files.asset("plain.bundle.js").path == dist.resolve() / "plain.bundle.js"  # unchanged: from disk
    assert "url(/ohif/a34f.woff2)" in files.asset("app.bundle.css").body.decode()
    assert json.loads(files.asset("manifest.json").body)["icons"][0]["src"] == "/ohif/assets/icon.png"
    assert files.asset("x.wasm").media_type == "application/wasm"
    for route in ("segmentation", "viewer/orthanc", "index.html"):
        assert files.asset(route).body.decode() == index  # OHIF's routes get the single-page app
    (dist.parent / "secret.txt").write_text("outside the dist")
    assert files.asset("missing.js") is None and files.asset("../secret.txt") is None
    assert (dist / "index.html").read_text().count('"/"') == 1  # the files on disk are untouched


def test_a_missing_viewer_names_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="make viewers"):
        ViewerFiles(tmp_path / "nowhere").asset("")
    monkeypatch.delenv("LESION_OHIF_DIST", raising=False)
    assert dist_folder() == DEFAULT_DIST and DEFAULT_DIST.parts[-4:] == ("node_modules", "@ohif", "app", "dist")
    monkeypatch.setenv("LESION_OHIF_DIST", str(tmp_path))
    assert dist_folder() == tmp_path
    assert content_type("a.WASM") == "application/wasm" and content_type("x.png") == "image/png"


def test_app_config_points_ohif_at_the_servers_own_dicomweb_path() -> None:
    text = app_config("/ohif")
    assert 'window.location.origin + "/ohif/dicom-web"' in text
    config = json.loads(text.split("var config = ", 1)[1].split(";\n", 1)[0])
    assert config["routerBasename"] == "/ohif" and config["disableConfirmationPrompts"] is True
    (source,) = config["dataSources"]
    assert source["configuration"]["supportsStow"] is True and config["defaultDataSourceName"] == source["sourceName"]


def test_only_dicomweb_resources_pass_and_only_stow_writes() -> None:
    assert (
        checked_path("studies/1.2/series/3.4/instances/5.6/frames/1", "GET")
        == "studies/1.2/series/3.4/instances/5.6/frames/1"
    )
    assert checked_path("studies", "POST") == "studies" and checked_path("studies/1.2/", "POST") == "studies/1.2"
    for bad in ("tools/execute-script", "studies/../../system", "studies/%2e%2e", "", "studies//x", "instances/a b"):
        assert refused(lambda bad=bad: checked_path(bad, "GET"))[0] == 400, bad
    assert refused(lambda: checked_path("studies/1.2/series", "POST"))[0] == 405


def stand_in(handler: Callable[[httpx.Request], httpx.Response]) -> DicomWebProxy:
    proxy = DicomWebProxy("http://127.0.0.1:8042/dicom-web", "/ohif/dicom-web")
    proxy._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return proxy


def forwarded(proxy: DicomWebProxy, path: str, query: list | None = None, headers: dict | None = None):
    """(response, body) of one request through the proxy."""

    async def go() -> tuple[Response, bytes]:
        response = await proxy.forward("GET", path, query or [], headers or {})
        if isinstance(response, StreamingResponse):
            body = b"".join([chunk async for chunk in response.body_iterator])
            await response.background()
        else:
            body = response.body
        await proxy.close()
        return response, body

    return asyncio.run(go())


def test_the_proxy_passes_requests_on_and_rewrites_absolute_urls() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/metadata"):
            uri = "http://127.0.0.1:8042/dicom-web/studies/1/series/2/instances/3/bulk/7fe00010"
            meta = [{"7FE00010": {"vr": "OB", "BulkDataURI": uri}}]
            return httpx.Response(200, json=meta, headers={"content-type": "application/dicom+json"})
        headers = {"content-type": "multipart/related; boundary=b", "x-orthanc": "1"}
        return httpx.Response(200, stream=httpx.ByteStream(b"--b\r\npixels\r\n--b--"), headers=headers)

    headers = {"Accept": "application/dicom+json", "Authorization": "Bearer the-apps-token", "Cookie": "c"}
    query = [("includefield", "a"), ("includefield", "b")]
    _, body = forwarded(stand_in(handler), "studies/1/series/2/metadata", query, headers)
    uri = json.loads(body)[0]["7FE00010"]["BulkDataURI"]
    assert uri == "/ohif/dicom-web/studies/1/series/2/instances/3/bulk/7fe00010"
    sent = seen[-1]
    assert str(sent.url) == "http://127.0.0.1:8042/dicom-web/studies/1/series/2/metadata?includefield=a&includefield=b"
    assert sent.headers["accept"] == "application/dicom+json"
    assert "authorization" not in sent.headers and "cookie" not in sent.headers  # the app's token stays here
    frames, body = forwarded(stand_in(handler), "studies/1/series/2/instances/3/frames/1")
    assert body == b"--b\r\npixels\r\n--b--" and "x-orthanc" not in frames.headers
    assert frames.headers["content-type"] == "multipart/related; boundary=b"


def test_a_failing_or_absent_dicomweb_server_is_502_or_503() -> None:
    with pytest.raises(HTTPException) as e:
        forwarded(stand_in(lambda request: httpx.Response(500, text="boom")), "studies")
    assert e.value.status_code == 502

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(HTTPException) as e:
        forwarded(stand_in(down), "studies")
    assert e.value.status_code == 503 and "does not answer" in e.value.detail
    missing = stand_in(lambda request: httpx.Response(404, json={}))
    assert forwarded(missing, "studies/9")[0].status_code == 404  # passed on as it is


def test_the_worklist_page_links_each_photograph_into_the_lesion_mode_and_ohif() -> None:
    rows = [
        worklist.Row(
            "1.2",
            "9.1",
            "lesion_002.jpg",
            worklist.PROPOSAL_READY,
            0.4,
            worklist.lesion_link("/ohif", "9.1", "1.2"),
            worklist.ohif_link("/ohif", "9.1", "1.2", "5.5"),
            next=True,
            proposal="5.5",
            predicted_iou=0.58,
            review=True,
        ),
        worklist.Row(
            "1.3",
            "9.2",
            "<b>odd</b>.jpg",
            worklist.NO_LABEL,
            None,
            worklist.lesion_link("/ohif", "9.2", "1.3"),
            worklist.ohif_link("/ohif", "9.2", "1.3", None),
            notes=["its frames are 10x10"],
        ),
    ]
    assert rows[0].link == "/ohif/lesion?StudyInstanceUIDs=9.1&SeriesInstanceUIDs=1.2"
    assert (
        rows[0].segmentation_link
        == "/ohif/segmentation?StudyInstanceUIDs=9.1&SeriesInstanceUIDs=1.2,5.5&hangingProtocolId=@ohif/seg"
    )
    assert rows[1].segmentation_link == "/ohif/segmentation?StudyInstanceUIDs=9.2"
    page = worklist.render(rows, "random", ["SEG 7.7 referring to no photograph here: ..."])
    assert page.index("lesion_002.jpg") < page.index("odd") and "<b>odd</b>" not in page
    assert 'class="open" href="/ohif/lesion?StudyInstanceUIDs=9.1&amp;SeriesInstanceUIDs=1.2"' in page
    assert 'href="/ohif/segmentation?StudyInstanceUIDs=9.1&amp;SeriesInstanceUIDs=1.2,5.5' in page
    assert "proposal ready" in page and "0.400" in page and "its frames are 10x10" in page and "SEG 7.7" in page
    assert '0.58 <b class="review">review</b>' in page and page.count('class="review"') == 1  # only the flagged one
    data = worklist.as_json(rows, "random", [])
    assert data["next"] == "1.2" and data["rows"][1]["state"] == "no label"
