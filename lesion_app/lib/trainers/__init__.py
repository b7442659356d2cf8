from lesion_app.lib.trainers.deeplabv3 import DeepLabV3Train
from lesion_app.lib.trainers.lesion import LesionTrainTask
from lesion_app.lib.trainers.unet import UNetTrain

__all__ = ["DeepLabV3Train", "LesionTrainTask", "UNetTrain"]
