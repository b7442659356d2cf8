"""Task config of the ensemble: the U-Net and the DeepLabV3 averaged, each in its newest version."""

from __future__ import annotations

from typing import Any

from lesion_app.lib.configs.lesion import LesionTaskConfig
from lesion_app.lib.infers.ensemble import EnsembleInfer

#: The models the ensemble averages; each is trained on its own (the ensemble has no train task).
MEMBERS = ("unet", "deeplabv3")


class EnsembleConfig(LesionTaskConfig):
    arch = "unet"
    description = "Lesion segmentation: average of the U-Net and DeepLabV3 with spatial attention (most accurate)"
    infer_task = EnsembleInfer

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.members = [[self.settings.pretrained_path(m), self.settings.published_path(m)] for m in MEMBERS]
        self.path = [p for member in self.members for p in member]

    def infer(self) -> EnsembleInfer:
        return EnsembleInfer(
            self.path, self.network, self.settings.roi, self.description, self.infer_options(), members=self.members
        )

    def trainer(self) -> None:
        return None
