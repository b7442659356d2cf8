"""A compact U-Net with optional spatial attention after every convolution block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from lesion_app.core.networks.spatial_attention import SpatialAttention


class _Block(nn.Sequential):
    """Two conv-norm-act layers (the first may downsample), then spatial attention when asked for."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str | tuple,
        attention: bool,
        kernel: int,
        strides: int = 1,
    ) -> None:
        super().__init__(
            Convolution(spatial_dims, in_channels, out_channels, strides=strides, kernel_size=3, norm=norm, act="relu"),
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=3, norm=norm, act="relu"),
        )
        if attention:
            self.add_module("attention", SpatialAttention(spatial_dims, kernel))


class ClickStem(nn.Module):
    """RITM's Conv1S (Sofiiuk et al., "Reviving Iterative Training with Mask Guidance for Interactive Segmentation",
    2022): the click maps (and previous mask) through their own 1x1 convolution, LeakyReLU and a strided 3x3
    convolution, times a learnable scale starting at 0.05, added to the RGB stem's first features; (N, C, h, w) ->
    (N, out_channels, h / 2, w / 2)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.maps = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, out_channels, kernel_size=3, stride=2, padding=1),
        )
        self.scale = nn.Parameter(torch.tensor(0.05))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.scale * self.maps(maps)


class LesionUNet(nn.Module):
    """Encoder-decoder U-Net (Ronneberger et al., 2015) with the paper's spatial attention.

    With ``attention=False`` this is the baseline of the paper's Table I; with ``attention=True`` the
    variant of its Table II. Every encoder level starts with a strided convolution, as in MONAI's
    ``UNet``, so no 3x3 convolution runs at full resolution: a transposed convolution brings the
    finest decoder level back to the input size. That keeps CPU training and inference fast; lesion
    borders are smooth enough that the half-resolution skip loses nothing measurable.
    Input sizes must be divisible by ``2 ** len(channels)``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels (3 for RGB).
        out_channels: output channels (1 lesion logit).
        channels: feature channels per resolution level, finest first.
        attention: add a spatial attention block after each encoder and decoder block.
        attention_kernel: kernel size of the attention convolution.
        dropout: dropout before the output convolution (enables Monte Carlo dropout uncertainty).
        norm: MONAI normalisation name for the convolution blocks.
        click_fusion: how the channels after the first three (a click model's click maps and previous mask) enter:
            ``"early"`` as more input channels of the first convolution, ``"conv1s"`` through a :class:`ClickStem`
            added after the first strided convolution (RGB alone goes through the first convolution).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        attention: bool = True,
        attention_kernel: int = 7,
        dropout: float = 0.1,
        norm: str | tuple = "batch",
        click_fusion: str = "early",
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("channels needs at least two levels.")
        if click_fusion not in ("early", "conv1s"):
            raise ValueError(f"click_fusion must be 'early' or 'conv1s', got {click_fusion!r}")
        #: the stem of the click channels (Conv1S), None when they enter the first convolution
        self.click_stem = ClickStem(in_channels - 3, channels[0]) if click_fusion == "conv1s" else None
        in_channels = 3 if self.click_stem is not None else in_channels
        self.depth = len(channels) - 1
        args = {"spatial_dims": spatial_dims, "norm": norm, "attention": attention, "kernel": attention_kernel}
        self.encoders = nn.ModuleList()
        prev = in_channels
        for ch in channels:
            self.encoders.append(_Block(in_channels=prev, out_channels=ch, strides=2, **args))
            prev = ch
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for fine, coarse in zip(reversed(channels[:-1]), reversed(channels[1:])):
            self.ups.append(UpSample(spatial_dims, coarse, fine, scale_factor=2, mode="deconv"))
            self.decoders.append(_Block(in_channels=2 * fine, out_channels=fine, **args))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = UpSample(spatial_dims, channels[0], out_channels, scale_factor=2, mode="deconv")
        #: how far (pixels at half the input size) :meth:`tail` looks around a position: the last decoder block's two
        #: 3x3 convolutions and its attention convolution; the output layer adds nothing (2x2, stride 2)
        self.tail_reach = 2 + (attention_kernel // 2 if attention else 0)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last decoder block: its input, (N, 2 * channels[0], h / 2, w / 2) (the upsampled
        coarser level beside the finest skip)."""
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level == 0 and self.click_stem is not None:
                maps, x = x[:, 3:], x[:, :3]
                for index, layer in enumerate(encoder):  # the click maps join after the first strided convolution
                    x = layer(x) + self.click_stem(maps) if index == 0 else layer(x)
            else:
                x = encoder(x)
            skips.append(x)
        x = features = skips.pop()
        for level, (up, decoder) in enumerate(zip(self.ups, self.decoders)):  # loops, not [-1]: TorchScript
            features = torch.cat([up(x), skips.pop()], dim=1)
            if level < self.depth - 1:
                x = decoder(features)
        return features

    def tail(self, features: torch.Tensor) -> torch.Tensor:
        """The logits (N, out_channels, h, w) from :meth:`trunk`'s features: the last decoder block and the output
        layer; an output pixel reads the features within :attr:`tail_reach` of its position."""
        x = features
        for level, decoder in enumerate(self.decoders):
            if level == self.depth - 1:
                x = decoder(features)
        return self.head(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.trunk(x))
