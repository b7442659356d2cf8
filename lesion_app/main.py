"""LesionApp: MONAI Label app for skin-lesion segmentation in dermoscopic photographs.

Serve it with ``monailabel start_server --app lesion_app --studies <folder> [--conf models unet,...]``.
Every option is a field of :class:`lesion_app.lib.settings.LesionSettings`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.batch_infer import BatchInferTask
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from lesion_app.lib.configs import CONFIGS, LesionTaskConfig
from lesion_app.lib.datastore import local_datastore
from lesion_app.lib.infers.lesion import LABELS
from lesion_app.lib.settings import LesionSettings

logger = logging.getLogger(__name__)

__version__ = "0.1.0"


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

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return local_datastore(self.studies)

    def init_infers(self) -> dict[str, InferTask]:
        return {name: config.infer() for name, config in self.models.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers = {name: config.trainer() for name, config in self.models.items()}
        return {name: task for name, task in trainers.items() if task is not None}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def init_batch_infer(self) -> BatchInferTask:
        return CpuBatchInferTask()
