"""CBAM-style spatial attention (Woo et al., 2018), as used by Thwin & Park for lesion segmentation."""

from __future__ import annotations

import torch
from monai.networks.layers import Conv
from torch import nn


class SpatialAttention(nn.Module):
    """Re-weights every position of a feature map by how salient it is across channels.

    The channel-wise mean and max are stacked, convolved to a single map, squashed by a sigmoid and
    multiplied into the input, so the block adds only ``2 * k**spatial_dims`` weights.

    Args:
        spatial_dims: number of spatial dimensions (2 for photographs).
        kernel_size: odd size of the convolution that turns the pooled maps into attention.
    """

    def __init__(self, spatial_dims: int = 2, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 1, *spatial) map in [0, 1]; exposed so that it can be inspected and drawn."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)
