"""Task config of the attention DeepLabV3."""

from lesion_app.lib.configs.lesion import LesionTaskConfig
from lesion_app.lib.infers.deeplabv3 import DeepLabV3Infer
from lesion_app.lib.trainers.deeplabv3 import DeepLabV3Train


class DeepLabV3Config(LesionTaskConfig):
    arch = "deeplabv3"
    description = "Lesion segmentation: DeepLabV3 (residual encoder + ASPP) with spatial attention, 256x256 input"
    infer_task = DeepLabV3Infer
    train_task = DeepLabV3Train
