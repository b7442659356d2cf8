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

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lesion_app.core.checkpoint import ModelFiles
from lesion_app.core.metrics import pairwise_iou
from lesion_app.core.networks import LesionDeepLabV3, LesionUNet
from lesion_app.core.predictor import flip_probabilities, prepare
from lesion_app.core.transforms import restore_size

logger = logging.getLogger(__name__)

METHODS = ("dropout", "tta")
_EPS = 1e-7


def mask_disagreement(probs: np.ndarray, threshold: float = 0.5) -> float:
    """1 - mean pairwise IoU of the thresholded samples, ``probs`` shaped (S, ...); two empty masks agree."""
    masks = np.asarray(probs).reshape(len(probs), -1) > threshold
    if len(masks) < 2:
        return 0.0
    pairs = np.triu_indices(len(masks), k=1)
    return float(1.0 - pairwise_iou(masks)[pairs].mean())


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
    """The dropout layers of a network that drop something (p > 0)."""
    return [m for m in network.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def has_dropout(network: nn.Module) -> bool:
    """Whether Monte Carlo dropout can sample this network."""
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
        probs = flip_probabilities(network.eval(), x)[:, 0]
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


#: Image-info keys the uncertainty score is stored under (the datastore keeps them per image).
SCORE_KEY = "uncertainty"
ENTROPY_KEY = "uncertainty_entropy"
VERSION_KEY = "uncertainty_version"


@dataclass(frozen=True)
class Estimate:
    """One photograph's uncertainty: the (S, h, w) sampled probabilities at the network's size, the photograph's
    (H, W), the image scores, and which model files (names, newest mtime, version key) made them."""

    probs: np.ndarray  # (S, h, w) sampled probabilities at the network's input size
    original_size: tuple[int, int]
    scores: dict[str, float]
    models: list[str]
    model_mtime: float
    version: str

    def entropy_map(self) -> np.ndarray:
        """Per-pixel predictive entropy (bits) at the photograph's size."""
        h = restore_size(torch.as_tensor(pixel_entropy(self.probs))[None], self.original_size)
        return h[0].clamp(0.0, 1.0).numpy()

    def info(self) -> dict[str, Any]:
        """What the datastore keeps per image."""
        return {
            SCORE_KEY: round(self.scores["disagreement"], 6),
            ENTROPY_KEY: round(self.scores["entropy"], 6),
            "uncertainty_model": self.models[0] if len(self.models) == 1 else self.models,
            "uncertainty_model_mtime": self.model_mtime,
            VERSION_KEY: self.version,
            "uncertainty_ts": int(time.time()),
        }


class UncertaintyEstimator:
    """Samples the served model on one photograph, Monte Carlo dropout or flips, at the network's input size.

    ``members`` are the served model's candidate files, as the infer task gets them (one list per ensemble
    member; the newest file that loads is used, as for inference). The networks are this object's own
    copies: dropout stays switched on in them, which must never leak into the infer tasks' networks.
    """

    def __init__(
        self, members: Sequence[Sequence[str]], spatial_size: Sequence[int], method: str = "dropout", samples: int = 8
    ) -> None:
        self.members = [list(m) for m in members]
        self.spatial_size = tuple(spatial_size)
        self.method = method
        self.samples = samples
        self._models = ModelFiles(log_prefix="uncertainty: ")
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def _candidates(self, paths: Sequence[str]) -> list[tuple[str, float]]:
        return self._models.candidates(paths)

    def current(self) -> tuple[list[str], float, str]:
        """Model file names, the newest mtime among them and the version key, without loading anything."""
        chosen = [c[0] for m in self.members if (c := self._candidates(m))]
        names = [Path(p).name for p, _ in chosen]
        mtime = max((t for _, t in chosen), default=0.0)
        parts = "+".join(f"{Path(p).name}@{t:.3f}" for p, t in chosen)
        return names, mtime, f"{self.method}x{self.samples if self.method == 'dropout' else 4}:{parts}"

    def _network(self, paths: Sequence[str]) -> nn.Module:
        path, network = self._models.load(paths)
        if self.method == "dropout" and not has_dropout(network) and path not in self._warned:
            self._warned.add(path)
            logger.warning(f"uncertainty: {path} has no dropout; its samples will all agree (use tta)")
        return network

    def estimate(self, image_path: str) -> Estimate:
        """Samples the served model on one photograph (thread-safe); raises what reading the photograph raises."""
        prepared = prepare(image_path, self.spatial_size)
        image = prepared.image
        with self._lock:  # one sampling at a time: the networks are shared by the strategy, scoring and infer
            names, mtime, version = self.current()
            networks = [self._network(m) for m in self.members]
            probs = average_members([sample_probabilities(n, image, self.method, self.samples) for n in networks])
        probs_np = probs.numpy()
        return Estimate(probs_np, prepared.original_size, image_scores(probs_np), names, mtime, version)
