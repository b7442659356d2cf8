"""MONAI Label 0.8.5 patched in one place: every behaviour of the stock server this app changes.

- :func:`install` (at import): bearer tokens checked with PyJWT 2 (:mod:`lesion_app.server.auth`).
- :class:`MONAILabelFixes`, mixed into ``LesionApp`` before ``MONAILabelApp`` (MONAI Label finds the app as the
  class in main.py whose direct bases include ``MONAILabelApp``):
  - infer refuses image paths on the server (only datastore ids and the request's own upload), and answers an
    unknown model with 404 and bad options (``params`` that is no JSON object, a threshold outside (0, 1), a
    result format the app does not write) with 400, where the stock server fails with 500;
  - scoring after a training is queued rather than refused while another scoring runs;
  - batch infer runs on the CPU of a machine without GPUs (MONAI Label's divides by the GPU count);
  - in the server process, oversized request bodies are refused as they arrive
    (:mod:`lesion_app.server.upload_limit`), inferences run in a worker thread, not on the event loop, after
    their ``params`` form field is checked (:mod:`lesion_app.server.infer_route`), and OHIF 3.13, its DICOMweb
    proxy and the worklist replace the wheel's OHIF (:mod:`lesion_app.server.viewer`);
  - a photograph handed out as the next sample gets the model's proposal stored on the DICOMweb server
    (:mod:`lesion_app.server.proposals`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.batch_infer import BatchInferTask

from lesion_app.server import auth, checks, infer_route, proposals, upload_limit, viewer

logger = logging.getLogger(__name__)


def install() -> None:
    """Patches that must be in place before the server handles a request (idempotent)."""
    auth.install()  # MONAI Label 0.8.5 refuses every token under PyJWT 2 (auth.py says why)


#: What an infer result says about its mask that the datastore keeps in the image's info (worklist, Slicer).
QUALITY_KEYS = ("predicted_iou", "review")


def remember_quality(request: dict[str, Any], result: dict[str, Any], datastore: Datastore) -> None:
    """Keeps the quality estimate of an automatic mask in the image's datastore info (with the model that made it);
    a failure to write it is logged, never the request's failure."""
    params = result.get("params") or {}
    image = request.get("image")
    if not isinstance(image, str) or not all(k in params for k in QUALITY_KEYS) or os.path.exists(image):
        return
    estimate = {**{k: params[k] for k in QUALITY_KEYS}, "quality_model": request["model"]}
    try:
        known = datastore.get_image_info(image)
        if all(known.get(k) == v for k, v in estimate.items()):
            return  # the same photograph asked again: no write of the shared datastore file
        datastore.update_image_info(image, estimate)
    except Exception as e:  # read-only or a changed datastore: the answer stands
        logger.warning(f"could not keep the quality estimate of {image}: {e}")


class CpuBatchInferTask(BatchInferTask):
    """MONAI Label's batch infer divides by the GPU count; on a CPU machine run on the CPU instead."""

    def __call__(self, request: dict[str, Any], datastore: Datastore, infer: Any) -> Any:
        if not torch.cuda.is_available():
            request = {**request, "multi_gpu": False, "device": "cpu"}
        return super().__call__(request, datastore, infer)


class MONAILabelFixes:
    """This project's fixes of :class:`MONAILabelApp`'s methods; ``max_upload_mb`` is set before ``__init__``."""

    max_upload_mb: float = 50.0
    _server_mode: bool
    _scoring_methods: dict[str, Any]

    def on_init_complete(self) -> None:
        """Runs in the server process only (train subprocesses build the app too)."""
        super().on_init_complete()  # type: ignore[misc]
        upload_limit.install(upload_limit.body_limit_bytes(self.max_upload_mb))
        infer_route.install()
        viewer.install(self)

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """The photograph handed out gets the model's proposal on the DICOMweb server (reused if it has one), so
        OHIF can load it for correction; the answer says which SEG (``proposal``), or why there is none."""
        result = super().next_sample(request)  # type: ignore[misc]
        if result and result.get("id"):
            result.update(proposals.offer(self, result["id"]))
        return result

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Images are datastore ids or files uploaded with the request, never other paths on the server.

        MONAI Label uses any ``image`` that exists on disk as a path (and ``params`` may set it), which would
        let a caller segment, and learn about, arbitrary files on the server. An unknown model is a 404 and a bad
        ``threshold`` or ``result_extension`` a 400 here, before any work (MONAI Label's own answer is a 500).
        """
        checks.check_infer_image(request.get("image"))
        if request.get("model") not in self._infers:  # type: ignore[attr-defined]
            known = ", ".join(sorted(self._infers))  # type: ignore[attr-defined]
            raise checks.not_found(f"no model {request.get('model')!r}: this server has {known}")
        checks.infer_options(request)
        result = super().infer(request, datastore)  # type: ignore[misc]
        remember_quality(request, result, datastore or self.datastore())  # type: ignore[attr-defined]
        return result

    def async_scoring(self, method: str | None, params: dict | None = None) -> Any:
        """After a training (a separate process) MONAI Label asks the server for each method at
        ``/scoring/<method>``, which it refuses while any scoring runs (the start-up one, say), so the
        refresh was lost; ``/scoring/`` queues every method instead."""
        if method or self._server_mode or not self._scoring_methods:
            return super().async_scoring(method, params)  # type: ignore[misc]
        return self._local_request("/scoring/", params, "Scoring")  # type: ignore[attr-defined]

    def init_batch_infer(self) -> BatchInferTask:
        return CpuBatchInferTask()
