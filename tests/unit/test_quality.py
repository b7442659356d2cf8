"""The quality estimate: features of hand-made predictions, the fit and its review threshold, the AUROC and the
size tertiles of the evaluation program, and the selection split it is fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apps.quality import by_size, flag_report
from lesion_app.core.data import SELECTION_SEED, split
from lesion_app.core.quality import (
    FAILURE_IOU,
    FEATURES,
    QualityModel,
    convex_hull_area,
    fit_quality,
    quality_features,
)


def flips_of(mask: np.ndarray, shifts: tuple[int, ...] = (0, 0, 0, 0), soft: float = 0.95) -> np.ndarray:
    """Four 'flip' probability maps: the mask shifted right by each shift, lesion at ``soft``, skin at 1 - soft."""
    return np.stack([np.where(np.roll(mask, s, axis=1), soft, 1 - soft) for s in shifts]).astype(np.float32)


def square(size: int = 64, top: int = 16, side: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, top : top + side] = True
    return mask


def test_features_of_a_confident_compact_prediction() -> None:
    f = quality_features(flips_of(square()))
    assert set(f) == set(FEATURES)
    assert f["disagreement"] == 0.0 and f["components"] == 1.0 and f["border"] == 0.0
    assert f["area"] == pytest.approx(32 * 32 / 64**2) and f["solidity"] == pytest.approx(1.0)
    assert f["mean_probability"] == pytest.approx(0.95) and f["doubtful"] == 0.0


def test_features_of_a_doubtful_scattered_prediction() -> None:
    mask = square()
    mask[0:6, 50:64] = True  # a second region, on the image border
    f = quality_features(flips_of(mask, shifts=(0, 3, -3, 6), soft=0.7))
    assert f["disagreement"] > 0.1 and f["components"] == 2.0 and f["border"] > 0.0
    assert f["doubtful"] > 0.5 and f["mean_probability"] < 0.75


@pytest.mark.parametrize("seed", range(6))
def test_the_hull_on_the_bounding_box_counts_what_the_whole_grid_does(seed: int) -> None:
    from skimage.morphology import convex_hull_image

    rng = np.random.default_rng(seed)
    mask = np.zeros((64, 80), bool)
    for _ in range(3):  # blobs anywhere, touching the edges too
        r, c = rng.integers(0, 64), rng.integers(0, 80)
        mask[max(0, r - 6) : r + 7, max(0, c - 9) : c + 10] = True
    assert convex_hull_area(mask) == int(convex_hull_image(mask).sum())
    assert convex_hull_area(np.eye(5, dtype=bool)) == int(convex_hull_image(np.eye(5, dtype=bool)).sum())


def test_an_empty_prediction_has_features_too() -> None:
    f = quality_features(np.zeros((4, 32, 32), np.float32))
    assert f["area"] == 0.0 and f["components"] == 0.0 and f["solidity"] == 0.0


def test_the_fit_learns_which_way_a_feature_points_and_flags_the_failures() -> None:
    rng = np.random.default_rng(0)
    disagreement = rng.uniform(0, 0.5, 200)
    ious = np.clip(0.95 - 1.2 * disagreement + rng.normal(0, 0.03, 200), 0, 1)
    features = [{name: 0.0 for name in FEATURES} | {"disagreement": float(d)} for d in disagreement]
    model = fit_quality(features, ious, "hand-made", recall=0.8)
    assert model.weights[FEATURES.index("disagreement")] < 0
    predicted = np.array([model.predicted_iou(f) for f in features])
    assert np.corrcoef(predicted, ious)[0, 1] > 0.9
    failed = ious < FAILURE_IOU
    assert (predicted[failed] < model.threshold).mean() >= 0.8  # the threshold flags 80% of the failures
    assert model.assess(features[0]) == {
        "predicted_iou": pytest.approx(predicted[0], abs=1e-4),
        "review": bool(predicted[0] < model.threshold),
    }
    without_failures = fit_quality(features[:5], np.full(5, 0.9), "no failures")
    assert without_failures.threshold == FAILURE_IOU
    with pytest.raises(ValueError, match="at least two"):
        fit_quality(features[:1], ious[:1], "one")


def test_the_model_file_round_trips(tmp_path: Path) -> None:
    model = QualityModel(FEATURES, (0.0,) * 7, (1.0,) * 7, (0.1,) * 7, 0.5, 0.7, "test")
    model.save(tmp_path / "q.json")
    assert QualityModel.load(tmp_path / "q.json") == model
    assert json.loads((tmp_path / "q.json").read_text())["threshold"] == 0.7


def test_the_report_counts_auroc_recall_precision_and_sizes() -> None:
    model = QualityModel(("disagreement",), (0.0,), (1.0,), (-1.0,), 1.0, 0.7, "test")
    rows = [
        {"iou": 0.9, "disagreement": 0.1, "lesion_share": 0.05},  # predicted 0.9
        {"iou": 0.5, "disagreement": 0.5, "lesion_share": 0.2},  # predicted 0.5: a flagged failure
        {"iou": 0.6, "disagreement": 0.2, "lesion_share": 0.4},  # predicted 0.8: a missed failure
        {"iou": 0.8, "disagreement": 0.4, "lesion_share": 0.6},  # predicted 0.6: flagged, not a failure
    ]
    report = flag_report(rows, model)
    assert report["failures"] == 2 and report["auroc"] == pytest.approx(0.75)
    assert report["recall"].startswith("0.500") and report["precision"].startswith("0.500")
    assert report["flagged"].startswith("0.500")
    lines = by_size(rows + [dict(r, lesion_share=r["lesion_share"] + 0.01) for r in rows])
    assert len(lines) == 4 and lines[-1].startswith("| all | 8 |")


def test_the_selection_split_is_carved_from_the_training_part_and_stable() -> None:
    pairs = [{"id": f"ISIC_{i:07d}"} for i in range(500)]
    train, val = split(pairs, 0.2)
    _, selection = split(train, 0.15, SELECTION_SEED)
    ids = lambda items: {p["id"] for p in items}  # noqa: E731
    assert not ids(selection) & ids(val) and ids(selection) <= ids(train) and len(selection) == 60
    again = split(split(list(reversed(pairs)), 0.2)[0], 0.15, SELECTION_SEED)[1]
    assert ids(again) == ids(selection)  # the same ids whatever order the files are listed in
    assert sorted(ids(selection))[:3] == ["ISIC_0000004", "ISIC_0000025", "ISIC_0000031"]  # pinned across machines
