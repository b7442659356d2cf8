"""Task configs of the automatic models, one name per model across configs, infers and trainers.

``unet`` and ``deeplabv3`` are :class:`SegmentationConfig` with their own architecture; ``ensemble`` averages
both (:class:`EnsembleConfig`). The config of the first served model also provides the uncertainty map, the
``uncertainty`` and ``power`` strategies and the uncertainty scoring: one estimator, one copy of its networks.
"""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from lesion_app.core.uncertainty import UncertaintyEstimator
from lesion_app.lib.activelearning.power import PowerUncertainty
from lesion_app.lib.activelearning.uncertainty import Uncertainty
from lesion_app.lib.infers.deepedit import DeepEditInfer
from lesion_app.lib.infers.segmentation import CONF_SPACING, LABELS, SegmentationInfer
from lesion_app.lib.infers.uncertainty import UncertaintyInfer
from lesion_app.lib.scoring.uncertainty import UncertaintyScoring
from lesion_app.lib.settings import ENSEMBLE_MEMBERS, LesionSettings
from lesion_app.lib.trainers.segmentation import SegmentationTrain

DESCRIPTIONS = {
    "unet": "Lesion segmentation: U-Net with spatial attention (Thwin & Park), 256x256 input",
    "deeplabv3": "Lesion segmentation: DeepLabV3 (residual encoder + ASPP) with spatial attention, 256x256 input",
    "ensemble": "Lesion segmentation: average of the U-Net and DeepLabV3 with spatial attention (two passes; "
    "its IoU on ISIC and PH2 is no higher than DeepLabV3's alone)",
    "deepedit": "Lesion correction with clicks (DeepEdit-style): U-Net with spatial attention reading the photograph "
    "and guidance maps of positive and negative clicks; without clicks it segments automatically",
}


class SegmentationConfig(TaskConfig):
    """One automatic model: its candidate model files, its infer task and its train task.

    ``init`` takes the app's :class:`LesionSettings` as ``settings`` and ``uncertainty=True`` for the model
    whose uncertainty the app measures.
    """

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.settings: LesionSettings = kwargs["settings"]
        self.measures_uncertainty = bool(kwargs.get("uncertainty", False))
        self.labels = LABELS
        self.description = DESCRIPTIONS[name]
        self.path = self.candidates(name)
        self._scoring: UncertaintyScoring | None = None

    def candidates(self, model: str) -> list[str]:
        """A model's files, oldest first: the shipped weights, then the server's (the newest that loads serves)."""
        return [self.settings.pretrained_path(model), self.settings.published_path(model)]

    def members(self) -> list[list[str]]:
        """The candidate files of each network the model averages (one for a single model)."""
        return [self.candidates(self.name)]

    def infer_options(self) -> dict[str, Any]:
        """The infer task's defaults from the settings (a request may override them)."""
        return {
            "tta": self.settings.infer_tta,
            "postprocess": self.settings.infer_postprocess,
            CONF_SPACING: self.settings.pixel_spacing_mm,
        }

    def infer(self) -> dict[str, InferTask]:
        quality = self.settings.quality_path(self.name)
        tasks: dict[str, InferTask] = {
            self.name: SegmentationInfer(
                self.members(), self.settings.spatial, self.description, self.infer_options(), quality=quality
            )
        }
        if self.measures_uncertainty:
            tasks["uncertainty"] = UncertaintyInfer(self.uncertainty_scoring().estimator, self.name)
        return tasks

    def trainer(self) -> SegmentationTrain | None:
        return SegmentationTrain(self.name, self.settings, self.description)

    def uncertainty_scoring(self) -> UncertaintyScoring:
        """The one estimator behind the strategy, the scoring and the map: one copy of the networks."""
        if self._scoring is None:
            s = self.settings
            estimator = UncertaintyEstimator(self.members(), s.spatial, s.uncertainty_method, s.uncertainty_samples)
            self._scoring = UncertaintyScoring(estimator)
        return self._scoring

    def strategy(self) -> dict[str, Strategy] | None:
        if not self.measures_uncertainty:
            return None
        scoring = self.uncertainty_scoring()
        return {"uncertainty": Uncertainty(scoring), "power": PowerUncertainty(scoring, beta=self.settings.power_beta)}

    def scoring_method(self) -> dict[str, ScoringMethod] | None:
        return {"uncertainty": self.uncertainty_scoring()} if self.measures_uncertainty else None


class DeepEditConfig(SegmentationConfig):
    """The click model: its infer task reads 3D Slicer's clicks; it is trained with simulated clicks by the same
    train task (its model file says it is a click model)."""

    def infer(self) -> dict[str, InferTask]:
        options = {**self.infer_options(), **self.settings.click_options}
        return {self.name: DeepEditInfer(self.members(), self.settings.spatial, self.description, options)}

    def trainer(self) -> SegmentationTrain:
        return SegmentationTrain(self.name, self.settings, self.description, arch="unet")


class EnsembleConfig(SegmentationConfig):
    """The U-Net and the DeepLabV3 averaged, each in its newest version; it learns through its members."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.path = [p for member in self.members() for p in member]

    def members(self) -> list[list[str]]:
        return [self.candidates(m) for m in ENSEMBLE_MEMBERS]

    def trainer(self) -> None:
        return None
