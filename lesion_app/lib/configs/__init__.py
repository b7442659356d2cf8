"""Task configs by model name: the name is the same across configs/, infers/ and trainers/."""

from lesion_app.lib.configs.deeplabv3 import DeepLabV3Config
from lesion_app.lib.configs.ensemble import EnsembleConfig
from lesion_app.lib.configs.lesion import LesionTaskConfig
from lesion_app.lib.configs.unet import UNetConfig

CONFIGS: dict[str, type[LesionTaskConfig]] = {
    "unet": UNetConfig,
    "deeplabv3": DeepLabV3Config,
    "ensemble": EnsembleConfig,
}

__all__ = ["CONFIGS", "DeepLabV3Config", "EnsembleConfig", "LesionTaskConfig", "UNetConfig"]
