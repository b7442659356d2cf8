"""Mask clean-up that encodes what a dermoscopic lesion is: one region, without holes.

The same MONAI transforms run in the server's post transforms and in the command-line programs, so a
mask from ``lesion-predict`` and one from the server agree pixel for pixel.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import FillHoles, FillHolesd, KeepLargestConnectedComponent, KeepLargestConnectedComponentd

_KEEP_LARGEST = KeepLargestConnectedComponent(applied_labels=[1], connectivity=2)
_FILL_HOLES = FillHoles(applied_labels=[1], connectivity=1)


def clean_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """The largest 8-connected lesion region of a (H, W) 0/1 mask, with its holes filled; uint8 0/1."""
    arr = torch.tensor(np.asarray(mask, dtype=np.uint8))[None]  # a copy: MONAI's transforms work in place
    if not bool(arr.any()):
        return arr[0].numpy().astype(np.uint8)
    arr = _FILL_HOLES(_KEEP_LARGEST(arr))
    return np.asarray(arr[0], dtype=np.uint8)


def clean_mask_transforms(key: str = "pred") -> list:
    """Dictionary versions for a post-transform chain whose ``key`` holds a (1, H, W) 0/1 mask."""
    return [
        KeepLargestConnectedComponentd(keys=key, applied_labels=[1], connectivity=2),
        FillHolesd(keys=key, applied_labels=[1], connectivity=1),
    ]
