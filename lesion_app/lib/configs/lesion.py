"""What the models' task configs share: paths, network, infer and train tasks from the settings."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig

from lesion_app.lib.infers.lesion import LABELS, LesionInferTask
from lesion_app.lib.models import build_network
from lesion_app.lib.settings import LesionSettings
from lesion_app.lib.trainers.lesion import LesionTrainTask


class LesionTaskConfig(TaskConfig):
    arch = "unet"
    description = ""
    infer_task: type[LesionInferTask] = LesionInferTask
    train_task: type[LesionTrainTask] = LesionTrainTask

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.settings: LesionSettings = kwargs["settings"]
        self.labels = LABELS
        # MONAI Label serves the last path that exists: a model the server trained beats the shipped one.
        self.path = [self.settings.pretrained_path(name), self.settings.published_path(name)]
        self.network = build_network(self.arch)

    def infer_options(self) -> dict[str, object]:
        return {"tta": self.settings.infer_tta, "postprocess": self.settings.infer_postprocess}

    def infer(self) -> LesionInferTask:
        return self.infer_task(self.path, self.network, self.settings.roi, self.description, self.infer_options())

    def trainer(self) -> LesionTrainTask | None:
        return self.train_task(self.name, self.settings, self.description)
