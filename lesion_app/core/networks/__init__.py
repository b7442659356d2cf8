"""The paper's segmentation networks, built from MONAI blocks plus our spatial attention, and their registry.

A model file stores an architecture name and keyword arguments (see :mod:`lesion_app.core.checkpoint`);
:func:`build_network` turns them back into the network.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lesion_app.core.networks.deeplabv3 import LesionDeepLabV3
from lesion_app.core.networks.spatial_attention import SpatialAttention
from lesion_app.core.networks.unet import LesionUNet

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": LesionUNet, "deeplabv3": LesionDeepLabV3}


def build_network(arch: str, **kwargs: Any) -> nn.Module:
    """A 2D network of the named architecture: RGB in, one lesion logit per pixel out, unless ``kwargs`` say
    otherwise (``in_channels`` 6 for the click-guided model).

    Raises:
        ValueError: ``arch`` is not in :data:`ARCHITECTURES`.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**{"spatial_dims": 2, "in_channels": 3, "out_channels": 1, **kwargs})


__all__ = ["ARCHITECTURES", "LesionDeepLabV3", "LesionUNet", "SpatialAttention", "build_network"]
