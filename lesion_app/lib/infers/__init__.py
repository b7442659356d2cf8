from lesion_app.lib.infers.deeplabv3 import DeepLabV3Infer
from lesion_app.lib.infers.ensemble import EnsembleInfer
from lesion_app.lib.infers.lesion import LesionInferTask
from lesion_app.lib.infers.unet import UNetInfer

__all__ = ["DeepLabV3Infer", "EnsembleInfer", "LesionInferTask", "UNetInfer"]
