"""Dice and uncertainty scoring and the uncertainty strategy on a small real datastore, without a server."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore
from PIL import Image

from apps.make_sample_data import draw_study
from lesion_app.core.checkpoint import network_spec, save_model
from lesion_app.core.metrics import dice
from lesion_app.core.networks import build_network
from lesion_app.core.uncertainty import SCORE_KEY, VERSION_KEY, UncertaintyEstimator
from lesion_app.io.images import read_mask
from lesion_app.lib.activelearning.power import PowerUncertainty
from lesion_app.lib.activelearning.uncertainty import Uncertainty
from lesion_app.lib.scoring.dice import DICE_KEY, DiceScoring
from lesion_app.lib.scoring.uncertainty import UncertaintyScoring
from lesion_app.server.datastore import IMAGE_PATTERNS


def save_png(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray(mask.astype(np.uint8)).save(path)
    return path


def test_dice_of_hand_made_masks() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True  # 50 pixels
    b[:, :4] = True  # 40 pixels, all inside a
    assert dice(a, b) == pytest.approx(2 * 40 / 90)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice(a, np.zeros((5, 5), bool))


def test_read_mask_accepts_0_1_and_0_255(tmp_path: Path) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[2:4, 3:6] = 1
    assert np.array_equal(read_mask(save_png(tmp_path / "a.png", m)), m.astype(bool))
    assert np.array_equal(read_mask(save_png(tmp_path / "b.png", m * 255)), m.astype(bool))


@pytest.fixture()
def store(tmp_path: Path) -> LocalDatastore:
    """Four drawn photographs; lesion_000 has a final label and an original, lesion_001 only a final one."""
    root = tmp_path / "studies"
    (root / "labels" / "final").mkdir(parents=True)
    (root / "labels" / "original").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(4):
        img, _ = draw_study(rng, (48, 64))
        Image.fromarray(img).save(root / f"lesion_{i:03d}.png")
    final = np.zeros((48, 64), np.uint8)
    final[10:30, 10:40] = 1  # 600 pixels
    original = np.zeros((48, 64), np.uint8)
    original[10:30, 10:30] = 1  # 400 pixels, all inside: Dice 800 / 1000
    save_png(root / "labels" / "final" / "lesion_000.png", final)
    save_png(root / "labels" / "original" / "lesion_000.png", original * 255)
    save_png(root / "labels" / "final" / "lesion_001.png", final)
    return LocalDatastore(str(root), extensions=list(IMAGE_PATTERNS), auto_reload=False)


def test_dice_scoring_stores_original_vs_final(store: LocalDatastore) -> None:
    result = DiceScoring()({}, store)
    assert result == {"lesion_000": pytest.approx(0.8)}
    assert store.get_image_info("lesion_000")[DICE_KEY] == pytest.approx(0.8)
    assert DICE_KEY not in store.get_image_info("lesion_001")


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "unet.pt"
    net = build_network("unet", channels=(8, 16, 32), dropout=0.3)
    save_model(path, net, network_spec("unet", {"channels": [8, 16, 32], "dropout": 0.3}), {"epoch": 1})
    return path


def test_uncertainty_scoring_and_strategy(store: LocalDatastore, model_file: Path, tmp_path: Path) -> None:
    estimator = UncertaintyEstimator([[str(tmp_path / "missing.pt"), str(model_file)]], (64, 64), "dropout", 4)
    scoring = UncertaintyScoring(estimator)
    summary = scoring({}, store)
    assert summary["total"] == 2 and summary["executed"] == 2 and summary["model"] == ["unet.pt"]
    for image_id in ("lesion_002", "lesion_003"):
        info = store.get_image_info(image_id)
        assert 0.0 <= info[SCORE_KEY] <= 1.0 and info["uncertainty_model_mtime"] == os.stat(model_file).st_mtime
    assert SCORE_KEY not in store.get_image_info("lesion_000")  # labelled: never scored, never offered
    assert scoring({}, store)["executed"] == 0  # up to date: nothing to do

    # a new model version (as a training publishes) makes every score stale; the strategy answers from the scores
    # at hand at once, says how many wait for the background scoring, and scores nothing itself
    stat = os.stat(model_file)
    os.utime(model_file, (stat.st_atime, stat.st_mtime + 10))
    assert sorted(scoring.stale(store, store.get_unlabeled_images())) == ["lesion_002", "lesion_003"]
    strategy = Uncertainty(scoring)
    picked = strategy({"strategy": "uncertainty"}, store)
    assert picked is not None and picked["id"] in ("lesion_002", "lesion_003") and picked["scores_pending"] == 2
    scores = {i: store.get_image_info(i)[SCORE_KEY] for i in ("lesion_002", "lesion_003")}
    assert picked[SCORE_KEY] == max(scores.values())
    assert all(store.get_image_info(i)[VERSION_KEY] != estimator.current()[2] for i in scores)
    assert scoring({}, store)["executed"] == 2 and strategy({}, store)["scores_pending"] == 0

    # everything labelled: no sample
    label = np.zeros((48, 64), np.uint8)
    for image_id in ("lesion_002", "lesion_003"):
        path = save_png(tmp_path / f"{image_id}.png", label)
        store.save_label(image_id, str(path), "final", {})
    assert strategy({"strategy": "uncertainty"}, store) is None


def test_power_strategy_draws_unlabelled_images_in_proportion_to_uncertainty(
    store: LocalDatastore, model_file: Path, tmp_path: Path
) -> None:
    estimator = UncertaintyEstimator([[str(model_file)]], (64, 64), "dropout", 4)
    scoring = UncertaintyScoring(estimator)
    strategy = PowerUncertainty(scoring, beta=1.0, seed=0)
    first = strategy({"strategy": "power"}, store)  # no score at hand: drawn alike, nothing scored here
    assert first["id"] in ("lesion_002", "lesion_003") and first["scores_pending"] == 2 and first["probability"] == 0.5
    scoring({}, store)  # the background scoring's run
    picked = strategy({"strategy": "power"}, store)
    assert picked is not None and picked["id"] in ("lesion_002", "lesion_003")
    info = store.get_image_info(picked["id"])
    assert picked[SCORE_KEY] == info[SCORE_KEY] and info[VERSION_KEY] == estimator.current()[2]
    assert 0.0 < picked["probability"] <= 1.0 and picked["beta"] == 1.0

    # the two unlabelled images with up-to-date scores 0.3 and 0.1 (as the scoring stores them)
    store.update_image_info("lesion_002", {SCORE_KEY: 0.3})
    store.update_image_info("lesion_003", {SCORE_KEY: 0.1})
    draws = [strategy({"strategy": "power"}, store)["id"] for _ in range(400)]
    assert set(draws) == {"lesion_002", "lesion_003"}  # never a labelled image, and not always the top one
    assert draws.count("lesion_002") / 400 == pytest.approx(0.75, abs=0.07)
    squared = [strategy({"strategy": "power", "beta": 2}, store)["id"] for _ in range(400)]
    assert squared.count("lesion_002") / 400 == pytest.approx(0.9, abs=0.05)
    one = strategy({"strategy": "power", "beta": 2}, store)
    assert one["probability"] == pytest.approx(0.9 if one["id"] == "lesion_002" else 0.1, abs=1e-4)

    # a request's own seed makes that draw reproducible; the server's seed its sequence of draws
    same = {strategy({"strategy": "power", "seed": 11}, store)["id"] for _ in range(10)}
    assert len(same) == 1
    again = PowerUncertainty(scoring, beta=1.0, seed=0)
    replay = PowerUncertainty(scoring, beta=1.0, seed=0)
    assert [again({}, store)["id"] for _ in range(20)] == [replay({}, store)["id"] for _ in range(20)]
    with pytest.raises(HTTPException, match="beta"):  # a request's: the server answers 400
        strategy({"strategy": "power", "beta": -1}, store)
    with pytest.raises(ValueError, match="beta"):
        PowerUncertainty(scoring, beta=-0.5)

    # a new model version: drawn at once from the scores at hand, which the background scoring has yet to redo
    stat = os.stat(model_file)
    os.utime(model_file, (stat.st_atime, stat.st_mtime + 10))
    picked = strategy({"strategy": "power"}, store)
    assert picked["scores_pending"] == 2 and picked[SCORE_KEY] in (0.3, 0.1)

    # one left unlabelled: always that one; none: no sample
    save_png(tmp_path / "l2.png", np.zeros((48, 64), np.uint8))
    store.save_label("lesion_002", str(tmp_path / "l2.png"), "final", {})
    assert {strategy({}, store)["id"] for _ in range(20)} == {"lesion_003"}
    store.save_label("lesion_003", str(tmp_path / "l2.png"), "final", {})
    assert strategy({"strategy": "power"}, store) is None
