"""Mask clean-up that encodes what a dermoscopic lesion is: one region, without holes.

MONAI's transforms (largest connected component, fill holes) behind the one predictor, so a mask from
``lesion-predict`` and one from the server agree pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import FillHoles, KeepLargestConnectedComponent
from scipy import ndimage

_KEEP_LARGEST = KeepLargestConnectedComponent(applied_labels=[1], connectivity=2)
_FILL_HOLES = FillHoles(applied_labels=[1], connectivity=1)


def clean_mask(
    mask: np.ndarray | torch.Tensor, keep: Sequence[tuple[int, int]] = (), holes: Sequence[tuple[int, int]] = ()
) -> np.ndarray:
    """The largest 8-connected lesion region of a (H, W) 0/1 mask, with its holes filled; uint8 0/1.

    ``keep``: (row, col) points (a clinician's positive clicks) whose regions stay too, whatever their size.
    ``holes``: (row, col) points (a clinician's negative clicks) whose holes stay open: a negative click inside
    the lesion cuts a hole that filling would otherwise close again.
    """
    original = np.asarray(mask, dtype=np.uint8)
    arr = torch.tensor(original)[None]  # a copy: MONAI's transforms work in place
    if not bool(arr.any()):
        return arr[0].numpy().astype(np.uint8)
    largest = np.asarray(_KEEP_LARGEST(arr)[0], dtype=np.uint8)
    if keep:
        labels, _ = ndimage.label(original, structure=np.ones((3, 3), bool))
        wanted = {labels[r, c] for r, c in keep if labels[r, c]}
        largest = (largest | np.isin(labels, list(wanted))).astype(np.uint8)
    filled = np.asarray(_FILL_HOLES(torch.tensor(largest)[None])[0], dtype=np.uint8)
    if holes:
        background, _ = ndimage.label(largest == 0)  # 4-connected, as FillHoles (connectivity 1) finds holes
        opened = {background[r, c] for r, c in holes if background[r, c]}
        filled[np.isin(background, list(opened))] = 0
    return filled
