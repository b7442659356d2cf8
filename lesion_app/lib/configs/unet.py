"""Task config of the attention U-Net."""

from lesion_app.lib.configs.lesion import LesionTaskConfig
from lesion_app.lib.infers.unet import UNetInfer
from lesion_app.lib.trainers.unet import UNetTrain


class UNetConfig(LesionTaskConfig):
    arch = "unet"
    description = "Lesion segmentation: U-Net with spatial attention (Thwin & Park), 256x256 input"
    infer_task = UNetInfer
    train_task = UNetTrain
