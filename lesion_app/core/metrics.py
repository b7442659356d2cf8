"""Per-image segmentation metrics, with conventions fixed for empty masks.

Conventions (the ISIC 2018 challenge's): IoU and Dice are 1 when prediction and truth are both
empty and 0 when exactly one is; sensitivity is 1 when the truth is empty, specificity 1 when the
truth covers the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: ISIC 2018 Task 1 scored each image's IoU as 0 below this value.
ISIC_JACCARD_THRESHOLD = 0.65


@dataclass(frozen=True)
class Scores:
    """One image's scores, each in [0, 1]: IoU (Jaccard), Dice, pixel accuracy, sensitivity, specificity."""

    iou: float
    dice: float
    accuracy: float
    sensitivity: float
    specificity: float

    @property
    def thresholded_iou(self) -> float:
        """ISIC 2018 Task 1's score: the IoU, or 0 below :data:`ISIC_JACCARD_THRESHOLD` (Codella et al. 2019)."""
        return self.iou if self.iou >= ISIC_JACCARD_THRESHOLD else 0.0

    def as_dict(self) -> dict[str, float]:
        """Every score by name, the thresholded IoU included."""
        return {**asdict(self), "thresholded_iou": self.thresholded_iou}


def _ratio(num: int, den: int, empty: float) -> float:
    return float(num) / float(den) if den else empty


def score(pred: np.ndarray, truth: np.ndarray) -> Scores:
    """Scores of one binary prediction against one binary truth of the same shape."""
    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = pred.size - tp - fp - fn
    return Scores(
        iou=_ratio(tp, tp + fp + fn, 1.0),
        dice=_ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        accuracy=_ratio(tp + tn, pred.size, 1.0),
        sensitivity=_ratio(tp, tp + fn, 1.0),
        specificity=_ratio(tn, tn + fp, 1.0),
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU (Jaccard) of two masks of the same shape; two empty masks agree perfectly (1.0)."""
    return score(a, b).iou


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks of the same shape; two empty masks agree perfectly (1.0)."""
    return score(a, b).dice


def pairwise_iou(masks: np.ndarray) -> np.ndarray:
    """(S, S) IoU between every pair of S masks given as (S, ...) booleans, by one matrix product;
    two empty masks agree (1.0)."""
    m = np.asarray(masks).reshape(len(masks), -1).astype(np.float64)
    inter = m @ m.T
    area = m.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)


def mean_scores(scores: list[Scores]) -> dict[str, float]:
    """Means over images (every image weighs the same, as in ISIC's scoring)."""
    if not scores:
        raise ValueError("no scores to average")
    rows = [s.as_dict() for s in scores]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over images.

    Resampling images (not pixels) is what says how much a mean over a few hundred photographs can be
    trusted; a fixed seed makes the interval reproducible.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``a - b`` over the same images, with its bootstrap interval: does A beat B on these images?"""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.shape != np.asarray(b).shape:
        raise ValueError("paired scores must come from the same images")
    low, high = bootstrap_ci(diff, confidence, resamples, seed)
    return {"mean": float(diff.mean()), "ci_low": low, "ci_high": high}
