"""One shared test class that every architecture reuses (the segmentation_models.pytorch habit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesion_app.lib.models import build_network, load_model, save_model
from lesion_app.lib.networks import SpatialAttention


class NetworkContract:
    """What every lesion network must do; a subclass names the architecture and its input granularity."""

    arch: str = ""
    sizes: tuple[tuple[int, int], ...] = ((256, 256), (64, 96), (128, 64))

    def make(self, **kwargs):
        torch.manual_seed(0)
        return build_network(self.arch, **kwargs)

    @pytest.mark.parametrize("attention", [True, False])
    def test_output_shape_at_several_sizes(self, attention: bool) -> None:
        net = self.make(attention=attention).eval()
        with torch.inference_mode():
            for h, w in self.sizes:
                assert net(torch.rand(1, 3, h, w)).shape == (1, 1, h, w)

    @pytest.mark.parametrize("attention", [True, False])
    def test_trains_with_batch_of_one(self, attention: bool) -> None:
        net = self.make(attention=attention).train()
        out = net(torch.rand(1, 3, 64, 64))
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
        x = torch.rand(1, 3, 64, 64)
        path = tmp_path / "m.pt"
        save_model(path, net, self.arch, {"attention": True}, {"epoch": 3})
        loaded, meta = load_model(path)
        assert meta["epoch"] == 3
        with torch.inference_mode():
            # weights are stored in fp16: predictions agree to fp16 precision, masks agree
            assert torch.allclose(net(x), loaded(x), atol=5e-2)
            assert ((net(x) > 0) == (loaded(x) > 0)).float().mean() > 0.99

    def test_torchscript(self) -> None:
        net = self.make().eval()
        scripted = torch.jit.script(net)
        x = torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            assert torch.allclose(scripted(x), net(x), atol=1e-5)

    def test_dropout_makes_train_mode_stochastic(self) -> None:
        """Monte Carlo dropout (for uncertainty) needs outputs to differ between passes in train mode."""
        net = self.make(dropout=0.3).train()
        x = torch.rand(2, 3, 64, 64)
        assert not torch.allclose(net(x), net(x))


class TestUNet(NetworkContract):
    arch = "unet"


class TestDeepLabV3(NetworkContract):
    arch = "deeplabv3"


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("segformer")
