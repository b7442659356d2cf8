"""``POST /infer/<model>`` off the server's event loop, put in front of MONAI Label's own at start-up (:func:`install`).

MONAI Label 0.8.5's infer endpoint is an ``async`` function that runs the whole inference on the event loop, so
while one photograph is segmented (or a click's previous masks are replayed after a restart) the server answers
nothing else: not ``/info``, which 3D Slicer polls, not the datastore, not OHIF's files, not another clinician's
click. This route takes the same parameters, checks ``params`` (:func:`lesion_app.server.checks.json_object_field`:
a 400 where MONAI Label's parsing fails with a 500) and that the request names a photograph (a 400; MONAI Label's
is a 500), and calls the same ``run_inference`` in a worker thread, one inference at a time as before (the infer
tasks' caches of networks and previous masks are not made for concurrent use); the event loop stays free meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, UploadFile
from monailabel.config import RBAC_USER, settings
from monailabel.endpoints import infer as infer_endpoint
from monailabel.endpoints.infer import ResultType
from monailabel.endpoints.user.auth import RBAC, User

from lesion_app.server import checks
from lesion_app.server.route_order import put_in_front

logger = logging.getLogger(__name__)

#: Marks the route :func:`install` added, so a second call replaces it.
MARK = "lesion_app_infer_route"
#: One worker thread: one inference at a time, as MONAI Label ran them on its event loop, and always the same thread,
#: so torch's CPU thread team is made once (a new thread's first inference is slower).
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lesion-infer")
#: The parameters' defaults of MONAI Label's endpoint: no upload, and a signed-in user where auth is on.
_NO_FILE = File(None)
_USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))


def build_router() -> APIRouter:
    """The one route: MONAI Label's ``POST /infer/{model}`` (same parameters, same answers) run in a worker thread."""
    router = APIRouter()

    path = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"
    summary = f"{RBAC_USER}Run Inference for supported model (in a worker thread)"

    @router.post(path, tags=["Infer"], summary=summary, response_model=None)
    async def run_inference_in_a_thread(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = _NO_FILE,
        label: UploadFile = _NO_FILE,
        output: ResultType | None = None,
        user: User = _USER,
    ) -> Any:
        checks.json_object_field(params)
        if not (image or session_id or file):
            raise checks.bad_request(checks.NO_IMAGE)

        def run() -> Any:
            return infer_endpoint.run_inference(background_tasks, model, image, session_id, params, file, label, output)

        return await asyncio.get_running_loop().run_in_executor(_WORKER, run)

    return router


def install() -> bool:
    """Puts the route in front of the running MONAI Label server's; False outside the server process (training
    processes build the app too)."""
    if not put_in_front(build_router(), MARK):
        return False
    logger.info("POST /infer/<model> runs in a worker thread, one at a time")
    return True
