"""A compact DeepLabV3 (Chen et al., 2017) with optional spatial attention before the classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, SimpleASPP
from monai.networks.layers import Conv, Pool
from torch import nn

from lesion_app.core.networks.spatial_attention import SpatialAttention


class _ImagePooling(nn.Module):
    """ASPP's global-context branch.

    It has no normalisation on purpose: after global pooling every map is 1x1, and BatchNorm on a
    batch of one such map cannot be trained (a last batch of 1 would crash the epoch).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.relu(self.conv(self.pool(x))), size=x.shape[2:], mode="nearest")


class LesionDeepLabV3(nn.Module):
    """Residual encoder with dilated last stages, ASPP, spatial attention and a light classifier.

    The encoder halves the resolution three times (output stride 8) and keeps it in the dilated
    stages, so the ASPP sees 32x32 features of a 256x256 photograph. The logits are upsampled
    bilinearly to the input size. ``attention=False`` gives the paper's Table I baseline.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels (3 for RGB).
        out_channels: output channels (1 lesion logit).
        channels: stem, two strided residual stages, then the dilated stages.
        dilations: dilation of each dilated stage (one per entry of ``channels`` after the third).
        aspp_channels: channels of each ASPP branch.
        aspp_dilations: dilations of the four ASPP convolutions (kernel sizes 1, 3, 3, 3).
        attention: refine the ASPP features with spatial attention before the classifier.
        attention_kernel: kernel size of the attention convolution.
        dropout: dropout in the classifier (enables Monte Carlo dropout uncertainty).
        norm: MONAI normalisation name for the encoder and ASPP.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 48, 96, 160, 192),
        dilations: Sequence[int] = (2, 4),
        aspp_channels: int = 48,
        aspp_dilations: Sequence[int] = (1, 3, 6, 9),
        attention: bool = True,
        attention_kernel: int = 7,
        dropout: float = 0.1,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if len(channels) != 3 + len(dilations):
            raise ValueError("channels must have three entries more than dilations (stem and two strided stages).")
        conv = {"spatial_dims": spatial_dims, "norm": norm, "act": "relu"}
        stem, *stages = channels
        self.stem = nn.Sequential(
            Convolution(in_channels=in_channels, out_channels=stem, strides=2, kernel_size=3, **conv),
            Convolution(in_channels=stem, out_channels=stem, kernel_size=3, **conv),
        )
        layers = []
        prev = stem
        for i, ch in enumerate(stages):
            strided = i < 2
            layers.append(
                ResidualUnit(
                    in_channels=prev,
                    out_channels=ch,
                    strides=2 if strided else 1,
                    dilation=1 if strided else dilations[i - 2],
                    subunits=2,
                    **conv,
                )
            )
            prev = ch
        self.encoder = nn.Sequential(*layers)
        self.aspp = SimpleASPP(
            spatial_dims, prev, aspp_channels, dilations=aspp_dilations, norm_type=norm, acti_type="relu"
        )
        self.image_pooling = _ImagePooling(spatial_dims, prev, aspp_channels)
        fused = aspp_channels * (len(aspp_dilations) + 1)
        self.project = Convolution(in_channels=fused, out_channels=2 * aspp_channels, kernel_size=1, **conv)
        self.attention = SpatialAttention(spatial_dims, attention_kernel) if attention else nn.Identity()
        self.classifier = nn.Sequential(
            Convolution(in_channels=2 * aspp_channels, out_channels=aspp_channels, kernel_size=3, **conv),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            Convolution(spatial_dims, aspp_channels, out_channels, kernel_size=1, conv_only=True),
        )
        self._mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        features = self.encoder(self.stem(x))
        features = self.project(torch.cat([self.aspp(features), self.image_pooling(features)], dim=1))
        logits = self.classifier(self.attention(features))
        return F.interpolate(logits, size=size, mode=self._mode, align_corners=False)
