from __future__ import annotations

import pytest
import torch

from lesion_app.core.networks import SpatialAttention


def test_map_is_in_unit_interval_and_multiplies_the_input() -> None:
    block = SpatialAttention(spatial_dims=2, kernel_size=7)
    x = torch.randn(2, 8, 16, 20)
    attention = block.attention_map(x)
    assert attention.shape == (2, 1, 16, 20)
    assert float(attention.min()) >= 0.0 and float(attention.max()) <= 1.0
    assert torch.allclose(block(x), x * attention)


def test_map_follows_channel_mean_and_max() -> None:
    """With hand-set weights (mean and max both weighted 1, a 1x1 kernel) the map is sigmoid(mean + max)."""
    block = SpatialAttention(spatial_dims=2, kernel_size=1)
    with torch.no_grad():
        block.conv.weight.fill_(1.0)
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # 2 channels, 1x2 image
    expected = torch.sigmoid(torch.tensor([[[[2.0 + 3.0, -1.0 + 0.0]]]]))
    assert torch.allclose(block.attention_map(x), expected)


def test_three_dimensional_and_even_kernel() -> None:
    assert SpatialAttention(spatial_dims=3, kernel_size=3)(torch.rand(1, 4, 5, 6, 7)).shape == (1, 4, 5, 6, 7)
    with pytest.raises(ValueError):
        SpatialAttention(kernel_size=4)
