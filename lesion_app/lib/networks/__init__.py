"""Segmentation networks of the paper, built from MONAI blocks plus our spatial attention."""

from lesion_app.lib.networks.deeplabv3 import LesionDeepLabV3
from lesion_app.lib.networks.spatial_attention import SpatialAttention
from lesion_app.lib.networks.unet import LesionUNet

__all__ = ["LesionDeepLabV3", "LesionUNet", "SpatialAttention"]
