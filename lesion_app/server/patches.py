"""MONAI Label 0.8.5 patched in one place: every behaviour of the stock server this app changes.

- :func:`install` (at import): bearer tokens checked with PyJWT 2 (:mod:`lesion_app.server.auth`); the datastore
  endpoints' JSON form fields (a saved label's ``params``, an info update's ``info``) checked, a 400 where the stock
  server fails with 500; an upload's id by the folder listing's rule (MONAI Label cut it at the first dot);
  ``POST /train/<model>`` checks the model (404) and its options (400) before it queues a run, where the stock
  server answers 200 and the run fails in its subprocess, and refuses (409) while a training of the model that
  this server did not start holds its lock (:mod:`lesion_app.lib.trainers.run_lock`);
  ``GET /datastore/`` answers its JSON without FastAPI's generic encoder (seconds at 10,000 photographs).
- :class:`MONAILabelFixes`, mixed into ``LesionApp`` before ``MONAILabelApp`` (MONAI Label finds the app as the
  class in main.py whose direct bases include ``MONAILabelApp``):
  - infer refuses image paths on the server (only datastore ids and the request's own upload), and answers an
    unknown model with 404 and bad options (``params`` that is no JSON object, no image, a threshold outside
    (0, 1), a result format the app does not write, a boolean option that is none) with 400, where the stock
    server fails with 500 or reads "maybe" as false;
  - an unknown active-learning strategy is a 404 (the stock server: 500);
  - a next sample whose strategy found scores missing or stale queues the uncertainty scoring (strategies answer
    from the scores at hand and never score inside the request);
  - a user's ``POST /scoring/<method>`` is queued (202 with its task), never refused because the app's own
    background scoring runs; inside the request (``run_sync``) it is a 429 with ``Retry-After``;
  - scoring after a training is queued rather than refused while another scoring runs, and a scoring method
    already waiting in the queue is not queued again (MONAI Label queues every method after each next sample);
  - batch infer runs on the CPU of a machine without GPUs (MONAI Label's divides by the GPU count);
  - in the server process, oversized request bodies are refused as they arrive
    (:mod:`lesion_app.server.upload_limit`), inferences run in a worker thread, not on the event loop, after
    their ``params`` form field is checked (:mod:`lesion_app.server.infer_route`), ``DELETE /datastore/`` takes
    ``image=`` (:mod:`lesion_app.server.remove_route`), ``/docs`` loads only local files
    (:mod:`lesion_app.server.api_docs`), and OHIF 3.13, its DICOMweb
    proxy and the worklist replace the wheel's OHIF (:mod:`lesion_app.server.viewer`);
  - a photograph handed out as the next sample gets the model's proposal stored on the DICOMweb server
    (:mod:`lesion_app.server.proposals`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from fastapi import Response
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.batch_infer import BatchInferTask
from monailabel.utils.async_tasks import utils as async_tasks

from lesion_app.io import layout
from lesion_app.lib.activelearning import picks
from lesion_app.lib.activelearning.uncertainty import PENDING_KEY
from lesion_app.lib.trainers.segmentation import train_options
from lesion_app.server import (
    api_docs,
    auth,
    checks,
    infer_route,
    lifetime,
    measurements_route,
    proposals,
    remove_route,
    upload_limit,
    viewer,
)

logger = logging.getLogger(__name__)


def install() -> None:
    """Patches that must be in place before the server handles a request (idempotent)."""
    auth.install()  # MONAI Label 0.8.5 refuses every token under PyJWT 2 (auth.py says why)
    check_json_fields()
    upload_ids_by_layout()
    check_train_requests()
    plain_json_listing()
    annotator_from_token()
    queue_scoring_requests()


#: MONAI Label's datastore endpoint functions that parse a JSON form field with ``json.loads`` (a 500 when it is no
#: JSON object), and the field: adding an image, saving a label, updating an image's or a label's info.
JSON_FIELDS = {"add_image": "params", "save_label": "params", "update_image_info": "info", "update_label_info": "info"}


def check_json_fields() -> None:
    """Each function of :data:`JSON_FIELDS` checks its field first (:func:`checks.json_object_field`: a 400)."""
    from monailabel.endpoints import datastore as endpoints

    for function_name, field in JSON_FIELDS.items():
        _replace_once(endpoints, function_name, lambda function, field=field: _checking(function, field))


def upload_ids_by_layout() -> None:
    """An upload without ``image=`` gets its id by the folder listing's rule (:func:`lesion_app.io.layout.image_id`:
    the name without its image extension), where MONAI Label cut the name at its first dot, so
    ``patient.2024.03.12.jpg`` and ``patient.2024.03.13.jpg`` both became ``patient`` (the second a 409).
    Photographs uploaded before keep their ids: their files were stored under them."""
    from monailabel.endpoints import datastore as endpoints

    def named(add_image: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(add_image)

        @functools.wraps(add_image)
        def by_layout(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            upload = bound.arguments.get("file")
            if not bound.arguments.get("image") and getattr(upload, "filename", None):
                bound.arguments["image"] = layout.image_id(os.path.basename(upload.filename))
            return add_image(*bound.args, **bound.kwargs)

        return by_layout

    _replace_once(endpoints, "add_image", named)


def check_train_requests() -> None:
    """``POST /train/<model>`` checks the model and its options before it queues the run (the app's
    :meth:`MONAILabelFixes.check_train_request`), where MONAI Label answers 200 and the run fails in its subprocess."""
    from monailabel.endpoints import train as endpoints
    from monailabel.interfaces.utils.app import app_instance

    def checked_run_model(run_model: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(run_model)
        def checked(model: str, params: dict | None = None, *args: Any, **kwargs: Any) -> Any:
            app_instance().check_train_request(model, params or {})
            return run_model(model, params, *args, **kwargs)

        return checked

    _replace_once(endpoints, "run_model", checked_run_model)


def plain_json_listing() -> None:
    """``GET /datastore/`` answers its JSON as it is: FastAPI's generic encoder walked every image's info first,
    0.6 s at 1,000 photographs and seconds at 10,000; ``?output=all`` is the datastore's own JSON text
    (``json_text``, pydantic's encoder) where it has one."""
    from monailabel.endpoints import datastore as endpoints
    from monailabel.interfaces.utils.app import app_instance

    def plain(listing: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(listing)
        def answered(output: Any = None) -> Response:
            as_text = getattr(app_instance().datastore(), "json_text", None)
            if output == endpoints.ResultType.all and callable(as_text):
                return Response(as_text(), media_type="application/json")
            return Response(json.dumps(listing(output), default=str), media_type="application/json")

        return answered

    _replace_once(endpoints, "datastore", plain)


#: Seconds a client is told to wait before asking again for a scoring run in the request (``run_sync``).
SCORING_RETRY_AFTER = 10


def queue_scoring_requests() -> None:
    """``POST /scoring/<method>`` queues the run and answers 202 with its task (id, status; listed at ``/scoring/``),
    where MONAI Label answered 429 "Scoring Task is Already Running" while the app's own background scoring ran and
    the request was lost. A run asked for inside the request (``run_sync``) cannot wait in a queue: while another
    runs it is a 429 saying so, with ``Retry-After``. An unknown method is a 404."""
    from monailabel.endpoints import scoring as endpoints
    from monailabel.interfaces.utils.app import app_instance

    def queued(run_method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(run_method)
        def run(method: str, params: dict | None = None, run_sync: bool | None = False) -> Any:
            app = app_instance()
            if method not in app._scoring_methods:
                raise checks.not_found(
                    f"no scoring method {method!r}: this server has {', '.join(app._scoring_methods)}"
                )
            if not run_sync:
                task = app.queue_scoring(method, params)
                return Response(json.dumps(task, default=list), status_code=202, media_type="application/json")
            if async_tasks.processes("scoring"):
                raise checks.busy(
                    "another scoring runs now; ask again later, or without run_sync to have this one queued",
                    SCORING_RETRY_AFTER,
                )
            return run_method(method, params, run_sync)

        return run

    _replace_once(endpoints, "run_method", queued)


def annotator_from_token() -> None:
    """With auth on, a next sample's annotator is the token's user, whatever the request body says."""
    from monailabel.config import settings
    from monailabel.endpoints import activelearning as endpoints

    def by_token(sample: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(sample)
        def sampled(strategy: str, params: dict | None = None, user: str | None = None) -> Any:
            if settings.MONAI_LABEL_AUTH_ENABLE and user:
                params = {**(params or {}), "annotator": user}
            return sample(strategy, params, user)

        return sampled

    _replace_once(endpoints, "sample", by_token)


def _replace_once(module: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """``module.name`` replaced by ``wrap(module.name)`` unless ``wrap`` already replaced it (idempotent; several
    wraps of one name stack). MONAI Label's routes call their endpoint functions by these module-level names, so
    replacing the names is enough."""
    original = getattr(module, name)
    done = getattr(original, "lesion_app_wraps", frozenset())
    if wrap.__qualname__ in done:
        return
    replacement = wrap(original)
    replacement.lesion_app_wraps = done | {wrap.__qualname__}  # type: ignore[attr-defined]
    setattr(module, name, replacement)


def _checking(function: Callable[..., Any], field: str) -> Callable[..., Any]:
    """``function`` that first checks its argument ``field`` with :func:`checks.json_object_field`."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(*args, **kwargs).arguments
        checks.json_object_field(arguments.get(field), field)
        return function(*args, **kwargs)

    return checked


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
        measurements_route.install(self)
        remove_route.install()
        api_docs.install()
        viewer.install(self)

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """The photograph handed out gets the model's proposal on the DICOMweb server (reused if it has one), so
        OHIF can load it for correction; the answer says which SEG (``proposal``), or why there is none. An unknown
        strategy is a 404 (MONAI Label's answer is a 500). With an ``annotator``, picks are reserved per annotator
        (:mod:`lesion_app.lib.activelearning.picks`)."""
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:  # type: ignore[attr-defined]
            known = ", ".join(sorted(self._strategies))  # type: ignore[attr-defined]
            raise checks.not_found(f"no strategy {strategy!r}: this server has {known}")
        annotator = checks.annotator_name(request.get("annotator"))
        request[picks.EXCLUDED_KEY] = set()
        if annotator is None:
            result = super().next_sample(request)  # type: ignore[misc]
        else:
            result = self._annotators_pick(annotator, request)
        if result and result.get(PENDING_KEY) and "uncertainty" in self._scoring_methods:
            self._queue_scoring(["uncertainty"], None)  # strategies answer from the scores at hand, never score
        if result and result.get("id"):
            result.update(proposals.offer(self, result["id"]))
        return result

    def _annotators_pick(self, annotator: str, request: dict[str, Any]) -> dict[str, Any]:
        """The annotator's reserved photograph while unsaved, else the strategy's pick among those not reserved for
        others nor skipped by them (nor the one being saved, ``after``), reserved for them (``reserved_for``,
        ``reserved_seconds`` in the answer)."""
        datastore = self.datastore()  # type: ignore[attr-defined]
        if not hasattr(self, "_picks"):
            self._picks = picks.Picks()
        given = {key: request.get(key) for key in ("skip", "after") if request.get(key) is not None}
        for key, image in given.items():
            checks.check_reference(image if isinstance(image, str) else "", key)
            datastore.get_image_uri(image)  # 404 for an unknown id
        if "skip" in given:
            self._picks.skip(annotator, given["skip"])
        if "after" in given:
            self._picks.release(annotator, given["after"])
        held = self._picks.held(annotator, set(datastore.get_unlabeled_images()))
        if held is not None:
            result = {"id": held, "path": datastore.get_image_uri(held)}
        else:
            request[picks.EXCLUDED_KEY] = self._picks.excluded(annotator) | set(given.values())
            result = super().next_sample(request)  # type: ignore[misc]
        if result and result.get("id"):
            seconds = self._picks.reserve(annotator, result["id"])
            result.update(reserved_for=annotator, reserved_seconds=seconds)
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

    def check_train_request(self, model: str, options: dict[str, Any]) -> None:
        """404 for a model this server does not train, 400 for options its trainer refuses
        (:func:`lesion_app.lib.trainers.segmentation.train_options`)."""
        trainer = self._trainers.get(model)  # type: ignore[attr-defined]
        if trainer is None:
            known = ", ".join(sorted(self._trainers))  # type: ignore[attr-defined]
            raise checks.not_found(f"no model {model!r} to train: this server trains {known}")
        try:
            train_options(trainer.config(), options)
        except ValueError as e:
            raise checks.bad_request(str(e)) from None
        running = trainer.running_run()
        if running and not async_tasks.processes("train"):  # not this server's run (MONAI Label answers that: 429)
            raise checks.conflict(
                f"a training of {model} that this server did not start is running (pid {running.get('pid')}); "
                "wait for it to end or stop it"
            )

    def async_scoring(self, method: str | None, params: dict | None = None) -> Any:
        """Every scoring method, queued once: MONAI Label queues all of them again after each training and each
        next sample, so a clinician's session piled up dozens of identical runs (5 s of CPU each); a method whose
        run is still waiting in the queue is not queued again (that run reads the datastore when it starts).

        After a training (a separate process) MONAI Label asks the server for each method at
        ``/scoring/<method>``, which it refuses while any scoring runs (the start-up one, say), so the
        refresh was lost; ``/scoring/`` queues every method instead."""
        if method or not self._scoring_methods:
            return super().async_scoring(method, params)  # type: ignore[misc]
        if not self._server_mode:
            return self._local_request("/scoring/", params, "Scoring")  # type: ignore[attr-defined]
        return self._queue_scoring(list(self._scoring_methods), params)

    def _queue_scoring(self, names: list[str], params: dict | None) -> dict[str, Any]:
        """Queues each scoring method unless a run of it already waits in the queue (that run reads the datastore
        when it starts): method -> its task, the waiting one or the new one."""
        if lifetime.stopping():
            return {}
        waiting = {t["request"].get("method"): t for t in async_tasks.tasks("scoring") if t["status"] == "SUBMITTED"}
        queued = {}
        for name in names:
            queued[name] = waiting.get(name) or super().async_scoring(name, params)  # type: ignore[misc]
        return queued

    def queue_scoring(self, method: str, params: dict | None = None) -> dict[str, Any]:
        """A user's scoring run, queued behind whatever scoring runs now (the app's own included): its task; a 503
        while the server stops."""
        if lifetime.stopping():
            raise checks.unavailable("the server is stopping: it starts no scoring")
        return self._queue_scoring([method], params)[method]

    def init_batch_infer(self) -> BatchInferTask:
        return CpuBatchInferTask()
