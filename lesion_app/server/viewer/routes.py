"""The browser side's routes, put in front of MONAI Label's own at start-up (:func:`install`).

============================== ======================================================= =====================
route                          what                                                    token (auth on)
============================== ======================================================= =====================
``GET /ohif/...``              OHIF 3.13 (:mod:`.dist`), instead of the wheel's build   none: no data in it
``GET /ohif/app-config.js``    its configuration (:mod:`.config`)                       none
``GET|HEAD /ohif/dicom-web/…`` the ``--studies`` DICOMweb server (:mod:`.proxy`)        monailabel-user
``POST /ohif/dicom-web/…``     STOW-RS: OHIF saving a SEG                               monailabel-annotator
``GET /worklist[.json]``       the worklist (:mod:`.worklist`)                          monailabel-user
``POST /proposal/<image>``     store the model's proposal now (:mod:`..proposals`)      monailabel-annotator
``POST /lesion/label``         the lesion mode's save: the mask becomes the label        monailabel-annotator
``GET /lesion/photo``          one photograph's worklist row (the lesion mode's panel)   monailabel-user
``GET /lesion/open``           redirect to the lesion mode on a photograph               monailabel-user
============================== ======================================================= =====================

``POST /lesion/label?image=<id>`` takes what MONAI Label's ``PUT /datastore/label`` takes (the mask file as
``label``, ``params``) and saves through the same function, so a browser's save and 3D Slicer's are one path (the
datastore writes the SEG). Its annotator is the token's user with auth on, else ``params``' ``annotator``
(:func:`lesion_app.server.checks.annotator_name`); it is stored as the SEG's ContentCreatorName and in the label's
info.

Tokens are checked by MONAI Label's own dependency (``RBAC``), exactly as on its endpoints. The viewer's files
are the public npm package and carry no data, so they load without a token; everything that carries
photographs or labels needs one.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from monailabel.config import settings
from monailabel.endpoints import datastore as datastore_endpoint
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from lesion_app.server import checks, proposals
from lesion_app.server.dicomweb import LesionDicomWebDatastore
from lesion_app.server.dicomweb.datastore import dicomweb_login
from lesion_app.server.viewer import worklist
from lesion_app.server.viewer.config import app_config
from lesion_app.server.viewer.dist import SETUP_HINT, ViewerFiles, dist_folder
from lesion_app.server.viewer.proxy import DicomWebProxy

logger = logging.getLogger(__name__)

PREFIX = "/ohif"
NO_STORE = {"Cache-Control": "no-store"}
#: The lesion mode's save: the mask as a file, as MONAI Label's ``PUT /datastore/label`` takes it.
MASK_FILE = File(...)
#: Marks the routes :func:`install` added, so a second call replaces them.
MARK = "lesion_app_viewer"


def _dicomweb(app: Any) -> LesionDicomWebDatastore:
    datastore = app.datastore()
    if not isinstance(datastore, LesionDicomWebDatastore):
        raise checks.not_found(
            "OHIF's data and the worklist need a DICOMweb server as --studies; this one serves a folder"
        )
    return datastore


def build_router(app: Any, files: ViewerFiles, proxy: DicomWebProxy | None) -> APIRouter:
    """The routes, bound to the MONAI Label app, the viewer's files and the DICOMweb proxy (None: a folder)."""
    router = APIRouter()
    reader = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
    annotator = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
    models = list(getattr(app.settings, "models", ()) or ["unet"])
    config = app_config(PREFIX, segment_model=models[0]).encode()

    def need_proxy() -> DicomWebProxy:
        if proxy is None:
            _dicomweb(app)  # raises the 404 that says why
        assert proxy is not None
        return proxy

    async def forward(request: Request, path: str) -> Response:
        body = await request.body() if request.method == "POST" else b""
        headers = dict(request.headers)
        return await need_proxy().forward(request.method, path, request.query_params.multi_items(), headers, body)

    @router.api_route(PREFIX + "/dicom-web/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def dicomweb_read(request: Request, path: str, user: User = reader) -> Response:
        return await forward(request, path)

    @router.post(PREFIX + "/dicom-web/{path:path}", include_in_schema=False)
    async def dicomweb_store(request: Request, path: str, user: User = annotator) -> Response:
        answer = await forward(request, path)
        if answer.status_code < 300:  # a SEG saved in OHIF: the next listing sees it (and notes its arrival)
            _dicomweb(app).listing.invalidate()
            logger.info(f"{user.username or 'a user'} stored DICOM through /ohif/dicom-web ({answer.status_code})")
        return answer

    @router.get(PREFIX, include_in_schema=False)
    async def to_viewer(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{PREFIX}/{query}")

    @router.get(PREFIX + "/app-config.js", include_in_schema=False)
    async def viewer_config() -> Response:
        return Response(config, media_type="text/javascript", headers=NO_STORE)

    @router.api_route(PREFIX + "/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def viewer(path: str) -> Response:
        try:
            asset = await run_in_threadpool(files.asset, path)
        except FileNotFoundError as e:
            raise checks.unavailable(str(e)) from None
        if asset is None:
            raise checks.not_found(f"no file {path!r} in OHIF's build")
        page = asset.media_type.startswith("text/html")
        headers = NO_STORE if page else {"Cache-Control": "no-cache"}
        if asset.body is not None:
            return Response(asset.body, media_type=asset.media_type, headers=headers)
        return FileResponse(asset.path, media_type=asset.media_type, headers=headers)

    def worklist_rows(strategy: str, fresh: bool) -> tuple[list[worklist.Row], list[str]]:
        datastore = _dicomweb(app)
        task = app._strategies.get(strategy)
        if task is None:
            raise checks.bad_request(f"no strategy {strategy!r}; the app has {', '.join(sorted(app._strategies))}")
        unlabelled = datastore.get_unlabeled_images()
        pick = None if fresh else worklist.current_pick(datastore, strategy, unlabelled)
        if pick is None and unlabelled:
            pick = (task({"strategy": strategy}, datastore) or {}).get("id")
            if pick:
                datastore.get_image_uri(pick)  # in the datastore's bookkeeping, where the hand-out is noted
                worklist.record_pick(datastore, strategy, pick)
        if pick:
            proposals.offer(app, pick)
        return worklist.rows(datastore, PREFIX, pick), datastore.listing.problems()

    def auth_user(user: User) -> str:
        return (user.username or "") if settings.MONAI_LABEL_AUTH_ENABLE else ""

    @router.get("/worklist", response_class=HTMLResponse, summary="Photographs to label, with links into OHIF")
    def worklist_page(strategy: str = "random", pick: str = Query("", alias="next"), user: User = reader) -> Response:
        if not isinstance(app.datastore(), LesionDicomWebDatastore):
            return HTMLResponse(worklist.needs_dicomweb(str(app.studies)), headers=NO_STORE)
        found, problems = worklist_rows(strategy, pick == "new")
        return HTMLResponse(worklist.render(found, strategy, problems, auth_user(user)), headers=NO_STORE)

    @router.get("/worklist.json", summary="The worklist as JSON")
    def worklist_json(strategy: str = "random", pick: str = Query("", alias="next"), user: User = reader) -> dict:
        found, problems = worklist_rows(strategy, pick == "new")
        return worklist.as_json(found, strategy, problems)

    @router.post("/proposal/{image_id}", summary="Store the served model's proposal on the DICOMweb server as a SEG")
    def make_proposal(image_id: str, replace: bool = False, user: User = annotator) -> dict[str, Any]:
        _dicomweb(app)
        return proposals.ensure(app, image_id, replace=replace)

    def photo_row(image: str) -> worklist.Row:
        datastore = _dicomweb(app)
        checks.check_reference(image)
        row = next((r for r in worklist.rows(datastore, PREFIX, None) if r.image == image), None)
        if row is None:
            raise checks.not_found(f"no photograph {image!r} on the DICOMweb server")
        return row

    @router.get("/lesion/photo", summary="One photograph's worklist row: state, annotator, predicted IoU, review")
    def lesion_photo(image: str, user: User = reader) -> dict[str, Any]:
        row = photo_row(image)
        return {**worklist.as_json([row], "", [])["rows"][0], "auth_user": auth_user(user)}

    @router.get("/lesion/open", summary="The lesion mode on a photograph (a redirect)")
    def lesion_open(image: str, user: User = reader) -> Response:
        return RedirectResponse(photo_row(image).link, status_code=303, headers=NO_STORE)

    @router.post("/lesion/label", summary="Save a mask as the photograph's label (a SEG naming its annotator)")
    def lesion_label(
        background_tasks: BackgroundTasks,
        image: str,
        params: str = Form("{}"),
        label: UploadFile = MASK_FILE,
        user: User = annotator,
    ) -> dict[str, Any]:
        checks.json_object_field(params)
        name = auth_user(user) or checks.annotator_name(json.loads(params or "{}").get("annotator"), required=True)
        info = {"annotator": name, "client": "ohif lesion mode"}
        datastore_endpoint.save_label(background_tasks, image, json.dumps(info), DefaultLabelTag.FINAL, label, name)
        stored = app.datastore().get_label_info(image, DefaultLabelTag.FINAL)
        logger.info(f"{name} saved the label of {image} from the lesion mode")
        return {"image": image, "annotator": name, "label": stored.get("SeriesInstanceUID")}

    for route in router.routes:
        setattr(route, MARK, True)
    return router


def install(app: Any) -> bool:
    """Puts the routes in front of the running MONAI Label server's (its own ``/ohif`` serves the wheel's old
    OHIF). False outside the server process (training processes build the app too)."""
    server: Any = sys.modules.get("monailabel.app")
    fastapi_app = getattr(server, "app", None)
    if fastapi_app is None:
        return False
    files = ViewerFiles(dist_folder(), PREFIX)
    if not files.installed():  # optional: INFO, not an error (issue 25, 11)
        logger.info(f"OHIF is not installed at {files.dist}: /ohif/ answers 503 until you {SETUP_HINT}")
    datastore = app.datastore()
    proxy = None
    if isinstance(datastore, LesionDicomWebDatastore):
        proxy = DicomWebProxy(datastore.listing.base_url, PREFIX + "/dicom-web", dicomweb_login())
    routes = [r for r in fastapi_app.router.routes if not getattr(r, MARK, False)]
    fastapi_app.router.routes[:] = [*build_router(app, files, proxy).routes, *routes]
    if proxy is None:
        logger.info(
            "this server offers the API (/docs) and 3D Slicer on a folder; the browser viewer (OHIF, the worklist) "
            "needs a DICOMweb studies server (--studies http://...)"
        )
    else:
        ohif = f"OHIF at {PREFIX}/" if files.installed() else "OHIF once installed"
        logger.info(f"this server offers the API (/docs), 3D Slicer, {ohif} and the worklist at /worklist")
    return True
