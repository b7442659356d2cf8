"""How good a mask probably is, before anyone checks it: the predicted IoU of the served mask and a review flag.

Even the best lesion segmenters fail (IoU < 0.65) on some photographs; a clinician needs to know which masks to
look at twice. The estimate is a small linear model on features of the prediction itself, fitted on a selection
split carved from the training data (``lesion-quality fit``) and shipped beside the weights as
``quality_<model>.json``:

- ``disagreement``: 1 - mean pairwise IoU of the masks of the four flips (the app's uncertainty score);
- ``doubtful``: the share of the predicted lesion's pixels, and of the pixels around it, whose probability lies
  between 0.2 and 0.8 (a soft, wide border);
- ``mean_probability``: the mean probability inside the mask;
- ``area``: the mask's share of the photograph (small lesions fail most);
- ``border``: the share of the image border the mask touches (lesions cut by the field of view);
- ``components``: the number of 8-connected regions before the clean-up keeps one;
- ``solidity``: the mask's area over its convex hull's.

The IoU threshold of the review flag (``threshold``) is chosen on the same selection split, so that most failures
are flagged while few photographs are.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import convex_hull_image

from lesion_app.core.metrics import pairwise_iou
from lesion_app.io.files import atomic_write

FEATURES = ("disagreement", "doubtful", "mean_probability", "area", "border", "components", "solidity")
#: ISIC 2018's failure line: a mask below this IoU scores 0 in the challenge (Codella et al. 2019).
FAILURE_IOU = 0.65
#: The flips the estimate reads: the plain pass and the left-right flip (one extra pass per request; all four
#: cost three and added about 55 ms to a 38 ms U-Net request on 2 CPU threads).
QUALITY_FLIPS = 2


def convex_hull_area(mask: np.ndarray) -> int:
    """Pixels of the convex hull of a non-empty (h, w) boolean mask: scikit-image's ``convex_hull_image`` on the
    mask's bounding box, which holds the whole hull (the same count, in a fifth of the time for a lesion of a fifth
    of the photograph: it tests every pixel of the grid it is given)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(convex_hull_image(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]).sum())


def quality_features(flip_probs: torch.Tensor | np.ndarray) -> dict[str, float]:
    """The features of one prediction from its flip probabilities (k >= QUALITY_FLIPS, h, w) at the network's size,
    the plain pass first: the disagreement of the first :data:`QUALITY_FLIPS`, the rest of the plain pass (the mask
    served by default)."""
    probs = np.asarray(flip_probs, dtype=np.float32)[:QUALITY_FLIPS]
    mean = probs[0]
    mask = mean > 0.5
    area = int(mask.sum())
    pairs = np.triu_indices(len(probs), k=1)
    disagreement = float(1.0 - pairwise_iou(probs.reshape(len(probs), -1) > 0.5)[pairs].mean())
    around = ndimage.binary_dilation(mask, iterations=3) if area else mask
    soft = (mean > 0.2) & (mean < 0.8)
    _, components = ndimage.label(mask, structure=np.ones((3, 3), bool))
    edge = np.zeros_like(mask)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    hull = convex_hull_area(mask) if area else 0
    return {
        "disagreement": disagreement,
        "doubtful": float((soft & around).sum() / max(int(around.sum()), 1)),
        "mean_probability": float(mean[mask].mean()) if area else 0.0,
        "area": area / mask.size,
        "border": float((mask & edge).sum() / edge.sum()),
        "components": float(components),
        "solidity": area / hull if hull else 0.0,
    }


@dataclass(frozen=True)
class QualityModel:
    """A linear estimate of a mask's IoU from :func:`quality_features`, standardised (``mean``, ``scale``), clipped
    to [0, 1]; a mask whose predicted IoU is below ``threshold`` is flagged for review."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    fitted_on: str = ""

    def predicted_iou(self, features: dict[str, float]) -> float:
        """The predicted IoU in [0, 1] of the mask these features describe."""
        x = (np.array([features[f] for f in self.features]) - np.array(self.mean)) / np.array(self.scale)
        return float(np.clip(x @ np.array(self.weights) + self.bias, 0.0, 1.0))

    def assess(self, features: dict[str, float]) -> dict[str, float | bool]:
        """``predicted_iou`` and ``review`` (whether to look at the mask twice), for a result or the datastore."""
        predicted = self.predicted_iou(features)
        return {"predicted_iou": round(predicted, 4), "review": bool(predicted < self.threshold)}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the estimate as ``quality_<model>.json`` atomically (every field, readable by :meth:`load`)."""
        text = json.dumps(asdict(self), indent=1) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> QualityModel:
        """Reads a ``quality_<model>.json``; raises OSError or ValueError for a missing or foreign file."""
        data = json.loads(Path(path).read_text())
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def fit_quality(
    features: list[dict[str, float]], ious: np.ndarray, fitted_on: str, recall: float = 0.8, alpha: float = 1.0
) -> QualityModel:
    """The linear model (scikit-learn's ridge regression on standardised features) and its review threshold, from
    predictions whose true IoU is known: the threshold is the lowest predicted IoU that flags at least ``recall`` of
    the failures (IoU < :data:`FAILURE_IOU`), or :data:`FAILURE_IOU` itself when there is no failure to learn from.

    Raises:
        ValueError: fewer than two predictions.
    """
    from sklearn.linear_model import Ridge

    if len(features) < 2:
        raise ValueError("fitting the quality estimate needs at least two predictions")
    x = np.array([[f[name] for name in FEATURES] for f in features], dtype=np.float64)
    y = np.asarray(ious, dtype=np.float64)
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    ridge = Ridge(alpha=alpha).fit((x - mean) / scale, y)
    model = QualityModel(
        FEATURES, tuple(mean), tuple(scale), tuple(ridge.coef_), float(ridge.intercept_), FAILURE_IOU, fitted_on
    )
    failed = y < FAILURE_IOU
    if not failed.any():
        return model
    predicted = np.sort([model.predicted_iou(f) for f, bad in zip(features, failed) if bad])
    needed = predicted[int(np.ceil(recall * failed.sum())) - 1]
    return replace(model, threshold=float(needed) + 1e-6)
