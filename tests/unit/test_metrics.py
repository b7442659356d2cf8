from __future__ import annotations

import numpy as np
import pytest

from lesion_app.lib.metrics import ISIC_JACCARD_THRESHOLD, mean_scores, score


def test_hand_computed_case() -> None:
    truth = np.zeros((4, 5), bool)
    truth[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros((4, 5), bool)
    pred[1:3, 2:5] = True  # 6 pixels, 4 shared
    s = score(pred, truth)
    assert s.iou == pytest.approx(4 / 8)
    assert s.dice == pytest.approx(8 / 12)
    assert s.accuracy == pytest.approx((20 - 4) / 20)
    assert s.sensitivity == pytest.approx(4 / 6)
    assert s.specificity == pytest.approx(12 / 14)
    assert s.thresholded_iou == 0.0  # 0.5 < 0.65


def test_perfect_and_empty_conventions() -> None:
    truth = np.eye(6, dtype=bool)
    assert score(truth, truth).iou == 1.0 and score(truth, truth).thresholded_iou == 1.0
    empty = np.zeros((6, 6), bool)
    both_empty = score(empty, empty)
    assert both_empty.iou == 1.0 and both_empty.dice == 1.0 and both_empty.sensitivity == 1.0
    assert score(empty, truth).iou == 0.0 and score(empty, truth).sensitivity == 0.0
    assert score(truth, empty).iou == 0.0 and score(truth, empty).specificity == pytest.approx(30 / 36)


def test_threshold_boundary_and_means() -> None:
    truth = np.zeros((1, 100), bool)
    truth[0, :100] = True
    pred = np.zeros((1, 100), bool)
    pred[0, :65] = True  # IoU exactly 0.65 counts
    assert score(pred, truth).thresholded_iou == pytest.approx(ISIC_JACCARD_THRESHOLD)
    pred[0, 64] = False
    assert score(pred, truth).thresholded_iou == 0.0
    means = mean_scores([score(truth, truth), score(pred, truth)])
    assert means["iou"] == pytest.approx((1.0 + 0.64) / 2)
    with pytest.raises(ValueError):
        score(pred, truth.T)
