"""Backpropagating refinement (f-BRS) on the U-Net's last decoder block: the split it needs, the locality its
windows rely on, and what it does to the clicked pixels."""

from __future__ import annotations

import pytest
import torch

from lesion_app.core.brs import BRS_REACH, refinable, refined_logits
from lesion_app.core.checkpoint import load_model
from lesion_app.core.clicks import ClickConfig, click_input, nearest_squared_distance
from lesion_app.core.networks import build_network
from lesion_app.core.predictor import prepare
from lesion_app.lib.settings import shipped_model
from tests.support.paths import SAMPLE_DATA


def click_unet(attention: bool = True) -> torch.nn.Module:
    """A seeded U-Net reading six channels, as the click model does, in eval mode."""
    torch.manual_seed(0)
    return build_network("unet", in_channels=6, attention=attention).eval()


def image() -> torch.Tensor:
    return torch.rand((1, 6, 64, 64), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("attention", [True, False])
def test_the_trunk_and_the_tail_make_the_forward_pass(attention: bool) -> None:
    net = click_unet(attention)
    x = torch.rand(2, 6, 64, 96)
    with torch.inference_mode():
        features = net.trunk(x)
        assert features.shape == (2, 32, 32, 48)
        assert torch.allclose(net.tail(features), net(x), atol=1e-6)


@pytest.mark.parametrize("attention", [True, False])
def test_an_output_pixel_reads_only_the_features_within_the_tail_reach(attention: bool) -> None:
    net = click_unet(attention)
    reach = net.tail_reach
    assert reach == (5 if attention else 2)
    with torch.inference_mode():
        features = net.trunk(image())
        rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        far = torch.maximum((rows - 16).abs(), (cols - 16).abs()) > reach
        changed_far = torch.where(far, torch.randn_like(features) * 5, features)
        changed_near = features.clone()
        changed_near[..., 16 + reach, 16] += 5.0
        here = net.tail(features)[..., 32:34, 32:34]  # the output pixels of feature position (16, 16)
        assert torch.allclose(net.tail(changed_far)[..., 32:34, 32:34], here, atol=1e-5)
        assert (net.tail(changed_near)[..., 32:34, 32:34] - here).abs().max() > 1e-5


def test_a_click_beside_the_lesion_that_the_network_ignores_is_followed_after_refinement() -> None:
    """The shipped click model on a sample photograph: a positive click 10 px outside the automatic mask (on its
    centre row) that the network alone does not follow, then a negative one 10 px inside its edge; far from the
    clicks the mask is the network's own."""
    network, meta = load_model(shipped_model("deepedit"))
    cfg, x = ClickConfig.of(meta), prepare(SAMPLE_DATA / "lesion_000.jpg").batch
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.inference_mode():
        automatic = network(click_input(x, [[]], [[]], cfg))[0, 0] > 0
    rows, cols = torch.nonzero(automatic, as_tuple=True)
    row = int(rows.float().mean())
    right = int(cols[rows == row].max())
    for fg, bg, at, label in (
        ([(row, right + 10)], [], (row, right + 10), 1),
        ([], [(row, right - 10)], (row, right - 10), 0),
    ):
        inputs = click_input(x, [fg], [bg], cfg)
        with torch.inference_mode():
            alone = float(torch.sigmoid(network(inputs))[0, 0][at])
        refined = float(torch.sigmoid(refined_logits(network, inputs, fg, bg, 10))[0, 0][at])
        assert abs(alone - label) > 0.5, "the network follows the click alone: the test shows nothing"
        assert abs(refined - label) < abs(alone - label) - 0.3
        far = nearest_squared_distance([*fg, *bg], (256, 256)) > (5 * BRS_REACH) ** 2
        with torch.inference_mode():
            plain = network(inputs)[0, 0]
        assert far.sum() > 1000
        assert torch.allclose(refined_logits(network, inputs, fg, bg, 10)[0, 0][far], plain[far], atol=1e-3)
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())
    assert all(p.grad is None for p in network.parameters())


def test_no_clicks_no_iterations_or_clicks_already_followed_give_the_plain_pass() -> None:
    net, x = click_unet(), image()
    with torch.inference_mode():
        plain = net(x)
        assert torch.equal(refined_logits(net, x, [], [], 10), plain)
        assert torch.equal(refined_logits(net, x, [(20, 20)], [], 0), plain)
        net.head.deconv.bias.fill_(8.0)  # sure of lesion everywhere: a positive click is already followed
        sure = net(x)
        assert torch.allclose(refined_logits(net, x, [(20, 20), (40, 50)], [], 10), sure)


def test_refinement_runs_under_inference_mode_and_refuses_what_it_cannot_refine() -> None:
    net, x = click_unet(), image()
    with torch.inference_mode():
        assert refined_logits(net, x, [(10, 10)], [(50, 50)], 3).shape == (1, 1, 64, 64)
    deeplab = build_network("deeplabv3", in_channels=6).eval()
    assert refinable(net) and not refinable(deeplab)
    with pytest.raises(ValueError, match="cannot be refined"):
        refined_logits(deeplab, x, [(10, 10)], [], 3)
    with pytest.raises(ValueError, match="one image at a time"):
        refined_logits(net, torch.cat([x, x]), [(10, 10)], [], 3)
