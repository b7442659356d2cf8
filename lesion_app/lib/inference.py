"""Prediction with the server's own transforms: ensembles, flip test-time augmentation, mask clean-up.

The pieces here (:class:`AveragingNetwork`, :class:`FlipInferer`, :func:`clean_mask`) are the ones the
server's infer tasks use too; :class:`Predictor` strings them together for the command-line programs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn

from lesion_app.lib.models import load_model
from lesion_app.lib.postprocess import clean_mask
from lesion_app.lib.transforms import ORIGINAL_SIZE_KEY, infer_transforms, restore_size

#: Flips averaged by test-time augmentation: none, left-right, up-down, both (dims of an (N, C, H, W) batch).
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
_EPS = 1e-6


def _as_logits(probs: torch.Tensor) -> torch.Tensor:
    """Averaged probabilities back to logits, so everything downstream still applies a sigmoid."""
    return torch.logit(probs.clamp(_EPS, 1.0 - _EPS))


class AveragingNetwork(nn.Module):
    """An ensemble that averages its members' probabilities and answers in logits, like one network."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](x)
        return _as_logits(torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0))


class FlipInferer(Inferer):
    """Test-time augmentation: the mean probability over the four flips of the input, as logits.

    The flips run as one batch, so on a CPU they cost less than four separate passes.
    """

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        n = inputs.shape[0]
        batch = torch.cat([inputs.flip(d) if d else inputs for d in FLIP_DIMS])
        probs = torch.sigmoid(network(batch, *args, **kwargs))
        unflipped = [p.flip(d) if d else p for p, d in zip(probs.split(n), FLIP_DIMS)]
        return _as_logits(torch.stack(unflipped).mean(0))


def make_inferer(tta: bool) -> Inferer:
    return FlipInferer() if tta else SimpleInferer()


class Predictor:
    """One or more model files (averaged), with optional flip TTA and mask clean-up, photograph in, mask out."""

    def __init__(
        self,
        model_paths: Sequence[str | Path],
        tta: bool = False,
        postprocess: bool = False,
        roi_size: Sequence[int] = (256, 256),
        threshold: float = 0.5,
    ) -> None:
        loaded = [load_model(p) for p in model_paths]
        self.network = AveragingNetwork([net for net, _ in loaded]).eval()
        self.metas = [meta for _, meta in loaded]
        self.tta, self.postprocess, self.threshold = tta, postprocess, threshold
        self.inferer = make_inferer(tta)
        self.transforms = infer_transforms(tuple(roi_size))

    @torch.inference_mode()
    def probabilities(self, image_path: str | Path) -> np.ndarray:
        """Lesion probability per pixel of the photograph, (H, W) float32 at its original size."""
        data = self.transforms({"image": str(image_path)})
        logits = self.inferer(torch.as_tensor(data["image"])[None].float(), self.network)[0]
        return restore_size(torch.sigmoid(logits), data[ORIGINAL_SIZE_KEY])[0].numpy()

    def mask_from(self, probabilities: np.ndarray) -> np.ndarray:
        mask = (probabilities > self.threshold).astype(np.uint8)
        return clean_mask(mask) if self.postprocess else mask

    def mask(self, image_path: str | Path) -> np.ndarray:
        """The (H, W) uint8 0/1 lesion mask, as the server would return it with the same options."""
        return self.mask_from(self.probabilities(image_path))


def predict_probabilities(network: nn.Module, image_path: str, roi_size: Sequence[int] = (256, 256)) -> np.ndarray:
    """One network, no augmentation: (H, W) float32 probabilities at the photograph's size."""
    data = infer_transforms(roi_size)({"image": image_path})
    with torch.inference_mode():
        logits = network(torch.as_tensor(data["image"])[None].float())[0]
    return restore_size(torch.sigmoid(logits), data[ORIGINAL_SIZE_KEY])[0].numpy()


def predict_mask(network: nn.Module, image_path: str, roi_size: Sequence[int] = (256, 256)) -> np.ndarray:
    """The (H, W) uint8 0/1 lesion mask, thresholded at 0.5 exactly as the server does by default."""
    return (predict_probabilities(network, image_path, roi_size) > 0.5).astype(np.uint8)
