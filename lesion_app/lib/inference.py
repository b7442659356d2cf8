"""Prediction outside the server (evaluation, benchmarks, tests), with the server's own transforms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lesion_app.lib.transforms import ORIGINAL_SIZE_KEY, infer_transforms, restore_size


@torch.inference_mode()
def predict_probabilities(network: nn.Module, image_path: str, roi_size: Sequence[int] = (256, 256)) -> np.ndarray:
    """Lesion probability per pixel of the photograph, (H, W) float32 at its original size."""
    data = infer_transforms(roi_size)({"image": image_path})
    logits = network(torch.as_tensor(data["image"])[None].float())[0]
    return restore_size(torch.sigmoid(logits), data[ORIGINAL_SIZE_KEY])[0].numpy()


def predict_mask(network: nn.Module, image_path: str, roi_size: Sequence[int] = (256, 256)) -> np.ndarray:
    """The (H, W) uint8 0/1 lesion mask, thresholded at 0.5 exactly as the server does."""
    return (predict_probabilities(network, image_path, roi_size) > 0.5).astype(np.uint8)
