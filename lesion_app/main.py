"""LesionApp: MONAI Label app for skin-lesion segmentation in dermoscopic photographs.

Serve it with ``monailabel start_server --app lesion_app --studies <folder> [--conf models unet,...]``.
Every option is a field of :class:`lesion_app.lib.settings.LesionSettings`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.batch_infer import BatchInferTask
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from lesion_app.lib import auth, upload_limit
from lesion_app.lib.activelearning import (
    DiceScoring,
    PowerUncertainty,
    Uncertainty,
    UncertaintyEstimator,
    UncertaintyScoring,
)
from lesion_app.lib.configs import CONFIGS, LesionTaskConfig
from lesion_app.lib.datastore import local_datastore
from lesion_app.lib.dicomweb import dicomweb_datastore
from lesion_app.lib.infers.lesion import LABELS
from lesion_app.lib.infers.uncertainty import UncertaintyInfer
from lesion_app.lib.schedule import RetrainScheduler, start_scheduler
from lesion_app.lib.settings import LesionSettings

logger = logging.getLogger(__name__)

auth.install()  # MONAI Label 0.8.5 refuses every token under PyJWT 2 (lesion_app/lib/auth.py says why)

__version__ = "0.1.0"


def is_upload(path: str) -> bool:
    """A file MONAI Label's infer endpoint wrote for this request's upload: ``<tempdir>/tmp*``."""
    p = Path(path).resolve()
    return p.parent == Path(tempfile.gettempdir()).resolve() and p.name.startswith("tmp") and p.is_file()


class CpuBatchInferTask(BatchInferTask):
    """MONAI Label's batch infer divides by the GPU count; on a CPU machine run on the CPU instead."""

    def __call__(self, request: dict[str, Any], datastore: Datastore, infer: Any) -> Any:
        if not torch.cuda.is_available():
            request = {**request, "multi_gpu": False, "device": "cpu"}
        return super().__call__(request, datastore, infer)


class LesionApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.settings = LesionSettings.from_conf(conf, app_dir)
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        self.models: dict[str, LesionTaskConfig] = {}
        self.scheduler: RetrainScheduler | None = None  # started in on_init_complete
        for name in self.settings.models:
            config = CONFIGS[name]()
            config.init(name, self.settings.model_dir, conf, None, settings=self.settings)
            self.models[name] = config
        logger.info(f"lesion_app models: {list(self.models)}; settings: {self.settings}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Lesion segmentation (dermoscopy)",
            description="U-Net and DeepLabV3 with spatial attention for skin lesions in dermoscopic photographs",
            version=__version__,
            labels=LABELS,
        )

    def on_init_complete(self) -> None:
        """Runs in the server process only (train subprocesses build the app too), so the schedule starts once."""
        super().on_init_complete()
        upload_limit.install(upload_limit.body_limit_bytes(self.settings.max_upload_mb))
        self.scheduler = start_scheduler(self.settings, self._trainers, self.datastore())

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Images are datastore ids or files uploaded with the request, never other paths on the server.

        MONAI Label uses any ``image`` that exists on disk as a path (and ``params`` may set it), which would
        let a caller segment, and learn about, arbitrary files on the server.
        """
        image = request.get("image")
        if isinstance(image, str) and os.path.exists(image) and not is_upload(image):
            raise HTTPException(status_code=400, detail="image must be an image id of the datastore (or an upload)")
        return super().infer(request, datastore)

    def init_datastore(self) -> Datastore:
        s = self.settings
        if self.studies.startswith(("http://", "https://")):
            self.studies = self.studies.rstrip("/").strip()
            return dicomweb_datastore(self.studies, s)
        return local_datastore(self.studies, s.max_image_pixels, s.max_upload_mb, s.read_only)

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {name: config.infer() for name, config in self.models.items()}
        infers["uncertainty"] = UncertaintyInfer(self._uncertainty_scoring().estimator, self._uncertainty_model())
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers = {name: config.trainer() for name, config in self.models.items()}
        return {name: task for name, task in trainers.items() if task is not None}

    def init_strategies(self) -> dict[str, Strategy]:
        scoring = self._uncertainty_scoring()
        return {
            "random": Random(),
            "first": First(),
            "uncertainty": Uncertainty(scoring),
            "power": PowerUncertainty(scoring, beta=self.settings.power_beta),
        }

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        # MONAI Label runs every method at start-up, after each training and after each next-sample request,
        # in a background process; uncertainty first: after a training only the first request is accepted.
        return {"uncertainty": self._uncertainty_scoring(), "dice": DiceScoring()}

    def async_scoring(self, method: str | None, params: dict | None = None) -> Any:
        """After a training (a separate process) MONAI Label asks the server for each method at
        ``/scoring/<method>``, which it refuses while any scoring runs (the start-up one, say), so the
        refresh was lost; ``/scoring/`` queues every method instead."""
        if method or self._server_mode or not self._scoring_methods:
            return super().async_scoring(method, params)
        return self._local_request("/scoring/", params, "Scoring")

    def _uncertainty_model(self) -> str:
        """The served model the uncertainty is measured on: the first of ``--conf models``."""
        return next(iter(self.models))

    def _uncertainty_scoring(self) -> UncertaintyScoring:
        """One estimator for the strategy, the scoring and the infer task: one copy of the networks."""
        if getattr(self, "_uncertainty", None) is None:
            config = self.models[self._uncertainty_model()]
            members = getattr(config, "members", None) or [config.path]
            estimator = UncertaintyEstimator(
                members, self.settings.roi, self.settings.uncertainty_method, self.settings.uncertainty_samples
            )
            self._uncertainty = UncertaintyScoring(estimator)
        return self._uncertainty

    def init_batch_infer(self) -> BatchInferTask:
        return CpuBatchInferTask()
