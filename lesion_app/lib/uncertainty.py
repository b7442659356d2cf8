"""How uncertain the model is about one photograph: sampled lesion probabilities in, scores and a map out.

The samples come from Monte Carlo dropout (dropout layers left on at inference, every other layer as in
evaluation) or from the four flips of test-time augmentation. Two numbers per image:

- ``disagreement``: 1 - the mean IoU between every pair of the samples' masks (probability > 0.5). It is
  the active-learning score: 0 when every sample gives the same mask, 1 when no two overlap. It is in the
  unit the clinician corrects (how much of the lesion mask would change) and does not grow with the
  lesion's size or the photograph's. It measures the model's doubt (epistemic), not a blurry border that
  every sample draws the same way: such an image teaches the model little when labelled.
- ``entropy``: the mean per-pixel predictive entropy (bits) of the mean probability; it breaks ties
  between images whose samples agree and is the per-pixel map a viewer shows (bright where the border is
  doubtful), because a band around the border is easier to read than the thin line where samples disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lesion_app.lib.inference import FLIP_DIMS
from lesion_app.lib.networks import LesionDeepLabV3, LesionUNet

METHODS = ("dropout", "tta")
_EPS = 1e-7


def mask_disagreement(probs: np.ndarray, threshold: float = 0.5) -> float:
    """1 - mean pairwise IoU of the thresholded samples, ``probs`` shaped (S, ...); two empty masks agree."""
    masks = np.asarray(probs).reshape(len(probs), -1) > threshold
    if len(masks) < 2:
        return 0.0
    m = masks.astype(np.float64)
    inter = m @ m.T
    area = m.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)
    pairs = np.triu_indices(len(masks), k=1)
    return float(1.0 - iou[pairs].mean())


def pixel_entropy(probs: np.ndarray) -> np.ndarray:
    """Binary entropy in bits (0 to 1) of the mean probability over the samples (axis 0), per pixel."""
    p = np.clip(np.asarray(probs, dtype=np.float64).mean(0), _EPS, 1.0 - _EPS)
    h = -(p * np.log2(p) + (1.0 - p) * np.log2(1.0 - p))
    return np.where(h < 1e-5, 0.0, h).astype(np.float32)


def image_scores(probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The image-level scores of (S, H, W) samples: ``disagreement`` (the ranking score) and ``entropy``."""
    return {
        "disagreement": mask_disagreement(probs, threshold),
        "entropy": float(pixel_entropy(probs).mean()),
    }


def to_uint8(uncertainty: np.ndarray) -> np.ndarray:
    """A map in [0, 1] (bits of entropy) as 8-bit 0-255, what image viewers display without a window."""
    return np.round(np.clip(uncertainty, 0.0, 1.0) * 255.0).astype(np.uint8)


def enable_mc_dropout(network: nn.Module) -> nn.Module:
    """Evaluation mode except dropout, which stays on: batch norm must keep its running statistics."""
    network.eval()
    for module in network.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
    return network


def dropout_layers(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def has_dropout(network: nn.Module) -> bool:
    return bool(dropout_layers(network))


def _dropout_at_the_head(network: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Monte Carlo dropout that runs the network's trunk once: its only dropout layer fans out into samples.

    Valid because in our U-Net and DeepLabV3 everything after that layer (the classifier's last
    convolution and a resize) works on each sample alone; 8 samples then cost about one forward pass.
    """
    (layer,) = dropout_layers(network)

    def fan_out(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.dropout(args[0], module.p, training=True) for _ in range(samples)])

    handle = layer.register_forward_hook(fan_out)
    try:
        return network.eval()(x)
    finally:
        handle.remove()


@torch.inference_mode()
def sample_probabilities(
    network: nn.Module, image: torch.Tensor, method: str = "dropout", samples: int = 8
) -> torch.Tensor:
    """(S, H, W) lesion probabilities for one (3, H, W) image. Leaves the network in evaluation mode.

    ``dropout``: ``samples`` stochastic passes (at least 2); ``tta``: the four flips, undone (``samples`` is
    ignored: the flips are all there is).
    """
    if method not in METHODS:
        raise ValueError(f"unknown uncertainty method {method!r}; choose from {METHODS}")
    x = image[None].float()
    samples = max(2, samples)
    if method == "tta":
        batch = torch.cat([x.flip(d) if d else x for d in FLIP_DIMS])
        probs = torch.sigmoid(network.eval()(batch))
        probs = torch.cat([p.flip(d) if d else p for p, d in zip(probs.split(1), FLIP_DIMS)])
    elif isinstance(network, (LesionUNet, LesionDeepLabV3)) and len(dropout_layers(network)) == 1:
        probs = torch.sigmoid(_dropout_at_the_head(network, x, samples))
    else:
        try:
            probs = torch.sigmoid(enable_mc_dropout(network)(x.expand(samples, *x.shape[1:])))
        finally:
            network.eval()
    return probs[:, 0]


def average_members(member_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """An ensemble's samples: sample i of every member averaged, as the ensemble infer task averages."""
    return torch.stack(list(member_probs)).mean(0)
