"""What every lesion network must do: shapes at several sizes, training with a batch of one, the attention switch,
the model-file round trip, TorchScript and Monte Carlo dropout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lesion_app.core.checkpoint import load_model, network_spec, save_model
from lesion_app.core.networks import SpatialAttention, build_network


class NetworkContract:
    """What every lesion network must do; a subclass names the architecture and its input granularity."""

    arch: str = ""
    in_channels: int = 3
    sizes: tuple[tuple[int, int], ...] = ((256, 256), (64, 96), (128, 64))

    def make(self, **kwargs: Any) -> torch.nn.Module:
        """The network under test, seeded."""
        torch.manual_seed(0)
        return build_network(self.arch, **{"in_channels": self.in_channels, **kwargs})

    def batch(self, n: int, h: int, w: int) -> torch.Tensor:
        return torch.rand(n, self.in_channels, h, w)

    @pytest.mark.parametrize("attention", [True, False])
    def test_output_shape_at_several_sizes(self, attention: bool) -> None:
        net = self.make(attention=attention).eval()
        with torch.inference_mode():
            for h, w in self.sizes:
                assert net(self.batch(1, h, w)).shape == (1, 1, h, w)

    @pytest.mark.parametrize("attention", [True, False])
    def test_trains_with_batch_of_one(self, attention: bool) -> None:
        net = self.make(attention=attention).train()
        out = net(self.batch(1, 64, 64))
        out.mean().backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    def test_attention_switch_adds_spatial_attention(self) -> None:
        def count(net: torch.nn.Module) -> int:
            return sum(isinstance(m, SpatialAttention) for m in net.modules())

        assert count(self.make(attention=True)) >= 1
        assert count(self.make(attention=False)) == 0

    def test_save_and_load_round_trip(self, tmp_path: Path) -> None:
        net = self.make().eval()
        x = self.batch(1, 64, 64)
        path = tmp_path / "m.pt"
        save_model(
            path, net, network_spec(self.arch, {"attention": True, "in_channels": self.in_channels}), {"epoch": 3}
        )
        loaded, meta = load_model(path)
        assert meta["epoch"] == 3
        with torch.inference_mode():
            # weights are stored in fp16: predictions agree to fp16 precision, masks agree
            assert torch.allclose(net(x), loaded(x), atol=5e-2)
            assert ((net(x) > 0) == (loaded(x) > 0)).float().mean() > 0.99

    def test_torchscript(self) -> None:
        net = self.make().eval()
        scripted = torch.jit.script(net)
        x = self.batch(1, 64, 64)
        with torch.inference_mode():
            assert torch.allclose(scripted(x), net(x), atol=1e-5)

    def test_dropout_makes_train_mode_stochastic(self) -> None:
        """Monte Carlo dropout (for uncertainty) needs outputs to differ between passes in train mode."""
        net = self.make(dropout=0.3).train()
        x = self.batch(2, 64, 64)
        assert not torch.allclose(net(x), net(x))
