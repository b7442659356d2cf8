"""Train task of the attention DeepLabV3."""

from lesion_app.lib.trainers.lesion import LesionTrainTask


class DeepLabV3Train(LesionTrainTask):
    arch = "deeplabv3"
