"""Task configs by model name: the name is the same across configs/, infers/ and trainers/."""

from monailabel.interfaces.config import TaskConfig

from lesion_app.lib.configs.segmentation import DeepEditConfig, EnsembleConfig, SegmentationConfig

CONFIGS: dict[str, type[TaskConfig]] = {
    "unet": SegmentationConfig,
    "deeplabv3": SegmentationConfig,
    "ensemble": EnsembleConfig,
    "deepedit": DeepEditConfig,
}

__all__ = ["CONFIGS", "DeepEditConfig", "EnsembleConfig", "SegmentationConfig"]
