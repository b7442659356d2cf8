"""Train task of the attention U-Net."""

from lesion_app.lib.trainers.lesion import LesionTrainTask


class UNetTrain(LesionTrainTask):
    arch = "unet"
