from __future__ import annotations

import numpy as np
import pytest

from lesion_app.core.metrics import ISIC_JACCARD_THRESHOLD, bootstrap_ci, mean_scores, paired_difference, score


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


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = np.random.default_rng(3).uniform(0.5, 1.0, 200)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values)  # fixed seed
    assert high - low < bootstrap_ci(values[:20])[1] - bootstrap_ci(values[:20])[0]  # more images, tighter
    assert bootstrap_ci([0.7] * 10) == pytest.approx((0.7, 0.7))
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_paired_difference() -> None:
    a = np.linspace(0.6, 0.9, 50)
    same = paired_difference(a, a)
    assert same["mean"] == 0.0 and same["ci_low"] == 0.0 and same["ci_high"] == 0.0
    better = paired_difference(a + 0.02, a)
    assert better["mean"] == pytest.approx(0.02) and better["ci_low"] > 0
    with pytest.raises(ValueError):
        paired_difference(a, a[:10])
