"""The uncertainty computation on hand-made samples: known inputs, known scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion_app.core.networks import build_network
from lesion_app.core.uncertainty import (
    image_scores,
    mask_disagreement,
    pixel_entropy,
    sample_probabilities,
    to_uint8,
)


def disc(shift: int = 0) -> np.ndarray:
    p = np.full((32, 32), 0.1, np.float32)
    p[8:24, 8 + shift : 24 + shift] = 0.9
    return p


def test_identical_samples_have_no_disagreement() -> None:
    probs = np.stack([disc()] * 6)
    assert mask_disagreement(probs) == 0.0
    assert image_scores(probs)["disagreement"] == 0.0


def test_half_disagreeing_samples() -> None:
    a, b = np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32)
    a[:4], b[4:] = 1.0, 1.0  # disjoint masks
    # two of each: 6 pairs, 2 agree (IoU 1), 4 are disjoint (IoU 0) -> 1 - 2/6
    assert mask_disagreement(np.stack([a, a, b, b])) == pytest.approx(2 / 3)
    assert mask_disagreement(np.stack([a, b])) == pytest.approx(1.0)
    # half overlap: IoU 1/3 for a pair
    c = np.zeros((8, 8), np.float32)
    c[2:6] = 1.0
    assert mask_disagreement(np.stack([a, c])) == pytest.approx(1 - 1 / 3)


def test_empty_masks_agree() -> None:
    assert mask_disagreement(np.zeros((3, 8, 8))) == 0.0
    assert mask_disagreement(np.zeros((1, 8, 8))) == 0.0


def test_pixel_entropy_in_bits() -> None:
    certain = np.stack([np.zeros((4, 4)), np.zeros((4, 4))])
    assert np.all(pixel_entropy(certain) == 0.0)
    split = np.stack([np.zeros((4, 4)), np.ones((4, 4))])  # mean 0.5: one bit everywhere
    assert np.allclose(pixel_entropy(split), 1.0, atol=1e-5)
    assert image_scores(split)["entropy"] == pytest.approx(1.0, abs=1e-5)
    assert image_scores(split)["disagreement"] == pytest.approx(1.0)  # empty vs full: IoU 0


def test_to_uint8_scale() -> None:
    out = to_uint8(np.array([0.0, 0.5, 1.0, 1.5, -1.0]))
    assert out.dtype == np.uint8 and out.tolist() == [0, 128, 255, 255, 0]


@pytest.mark.parametrize("arch", ["unet", "deeplabv3"])
def test_dropout_samples_vary_and_leave_the_network_in_eval(arch: str) -> None:
    torch.manual_seed(0)
    net = build_network(arch, channels=(8, 16, 32), dropout=0.5) if arch == "unet" else build_network(arch)
    net.eval()
    x = torch.rand(3, 64, 64)
    probs = sample_probabilities(net, x, "dropout", samples=5)
    assert probs.shape == (5, 64, 64)
    assert not torch.allclose(probs[0], probs[1])
    assert not net.training and not any(m.training for m in net.modules())
    with torch.inference_mode():
        plain = torch.sigmoid(net(x[None]))[0, 0]
    assert torch.allclose(probs.mean(0), plain, atol=0.15)  # dropout samples centre on the plain prediction


def test_without_dropout_samples_agree_and_tta_gives_four() -> None:
    net = build_network("unet", channels=(8, 16, 32), dropout=0.0).eval()
    x = torch.rand(3, 64, 64)
    probs = sample_probabilities(net, x, "dropout", samples=4)
    assert torch.allclose(probs[0], probs[3])
    assert mask_disagreement(probs.numpy()) == 0.0
    flips = sample_probabilities(net, x, "tta", samples=8)
    assert flips.shape == (4, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(flips[0], torch.sigmoid(net(x[None]))[0, 0], atol=1e-5)
    with pytest.raises(ValueError, match="unknown uncertainty method"):
        sample_probabilities(net, x, "bayes")
