"""Mask clean-up that encodes what a dermoscopic lesion is: one region, without holes.

What MONAI's ``KeepLargestConnectedComponent`` (8-connected) and ``FillHoles`` (holes: background not 4-connected
to the image's edge) do, computed from one labelling each with SciPy: 8 ms instead of MONAI's 36 ms on a 512x512
mask, which every infer request and every click pays; ``tests/unit/test_postprocess.py`` checks that both agree
pixel for pixel on the data's own masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)


def clean_mask(
    mask: np.ndarray | torch.Tensor, keep: Sequence[tuple[int, int]] = (), holes: Sequence[tuple[int, int]] = ()
) -> np.ndarray:
    """The largest 8-connected lesion region of a (H, W) 0/1 mask, with its holes filled; uint8 0/1, a new array.

    ``keep``: (row, col) points (a clinician's positive clicks) whose regions stay too, whatever their size.
    ``holes``: (row, col) points (a clinician's negative clicks) whose holes stay open: a negative click inside
    the lesion cuts a hole that filling would otherwise close again. Ties between regions of the largest size go to
    the first in row-major order.
    """
    original = np.asarray(mask, dtype=np.uint8) > 0
    if not original.any():
        return np.zeros(original.shape, np.uint8)
    regions, _ = ndimage.label(original, structure=_EIGHT)
    wanted = {int(np.argmax(np.bincount(regions.ravel())[1:])) + 1}
    wanted |= {int(regions[r, c]) for r, c in keep if regions[r, c]}
    lesion = np.isin(regions, list(wanted))
    background, _ = ndimage.label(~lesion)  # 4-connected: a hole is background that does not reach the edge
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = set(np.unique(edge).tolist()) | {int(background[r, c]) for r, c in holes}  # clicked holes stay open
    outside.discard(0)  # 0: the lesion itself
    return (~np.isin(background, list(outside))).astype(np.uint8)
