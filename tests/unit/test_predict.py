"""lesion-predict: file formats, error handling, and agreement of our metrics with the official ISIC scorer.

The official scorer is the ISIC challenge's own package (``isic-challenge-scoring``); scoring the same
files with it and with :func:`lesion_app.core.metrics.score` shows that the numbers ``lesion-evaluate``
reports are the challenge's numbers, conventions for empty masks included.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.predict import main
from lesion_app.core.metrics import ISIC_JACCARD_THRESHOLD, Scores, mean_scores, score
from lesion_app.io.images import read_mask
from tests.support.files import snapshot

isic_scoring = pytest.importorskip("isic_challenge_scoring")
from isic_challenge_scoring.load_image import iter_image_pairs  # noqa: E402

#: Two full-field-of-view photographs (512x384; one small lesion) and two 512x512 centre crops.
REAL_IDS = ("ISIC_0000000", "ISIC_0000001", "ISIC_0000058", "ISIC_0000170")
#: The official scorer's per-image columns and ours.
OFFICIAL_TO_OURS = {
    "jaccard": "iou",
    "threshold_jaccard": "thresholded_iou",
    "dice": "dice",
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}
TOLERANCE = 1e-6


def official_per_image(truth_dir: Path, pred_dir: Path) -> dict[str, dict[str, float]]:
    """Per-image metrics from the official package's own pairing, loading and scoring code.

    ``SegmentationScore`` keeps only the macro average, so each image is scored alone: its average over
    one image is that image's score.
    """
    return {
        pair.image_id: {k: float(v) for k, v in isic_scoring.SegmentationScore([pair]).macro_average.items()}
        for pair in iter_image_pairs(truth_dir, pred_dir)
    }


def ours_per_image(truth_dir: Path, pred_dir: Path) -> dict[str, Scores]:
    """The same files through ``lesion-evaluate``'s reader and our metrics."""
    out = {}
    for truth in sorted(truth_dir.glob("ISIC_*_segmentation.png")):
        image_id = truth.name.removesuffix("_segmentation.png")
        out[image_id] = score(read_mask(str(pred_dir / truth.name)), read_mask(str(truth)))
    return out


def assert_agree(truth_dir: Path, pred_dir: Path) -> dict[str, dict[str, float]]:
    official = official_per_image(truth_dir, pred_dir)
    ours = ours_per_image(truth_dir, pred_dir)
    assert sorted(official) == sorted(ours)
    for image_id, theirs in official.items():
        mine = ours[image_id].as_dict()
        for their_key, our_key in OFFICIAL_TO_OURS.items():
            assert abs(theirs[their_key] - mine[our_key]) <= TOLERANCE, (image_id, their_key, theirs, mine)
    return official


def write_isic_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(path)


@pytest.fixture
def photos(tmp_path: Path, sample_data: Path) -> Path:
    """Two synthetic photographs, one of them an odd-sized, non-square PNG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sample_data / "lesion_000.jpg", folder / "lesion_000.jpg")
    with Image.open(sample_data / "lesion_001.jpg") as img:
        img.crop((20, 10, 321, 267)).save(folder / "odd.png")  # 301 wide, 257 high
    with Image.open(folder / "odd.png") as odd:
        assert odd.size == (301, 257)
    return folder


def test_png_format_writes_01_masks_at_the_image_size(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (photos / "lesion_000_segmentation.png").write_bytes((photos / "odd.png").read_bytes())  # a mask, not a photo
    before = snapshot(photos)
    out = tmp_path / "out" / "nested"
    assert main([str(photos), str(out), "--threads", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lesion_000.png", "odd.png"]
    for name, photo in (("lesion_000.png", "lesion_000.jpg"), ("odd.png", "odd.png")):
        with Image.open(out / name) as mask, Image.open(photos / photo) as img:
            assert mask.mode == "L" and mask.size == img.size
            values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= {0, 1} and 1 in values, (name, values)
    assert snapshot(photos) == before
    assert "2/2 images" in capsys.readouterr().err


def test_a_corrupt_image_is_reported_and_the_others_are_written(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = (photos / "lesion_000.jpg").read_bytes()
    (photos / "broken.jpg").write_bytes(good[: len(good) // 3])  # a download cut short
    before = snapshot(photos)
    out = tmp_path / "out"
    assert main([str(photos), str(out), "--format", "isic", "--no-postprocess"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["lesion_000_segmentation.png", "odd_segmentation.png"]
    err = capsys.readouterr().err
    assert f"cannot read {photos / 'broken.jpg'}: image file is truncated" in err
    assert "1 of 3 images could not be read" in err
    with Image.open(out / "odd_segmentation.png") as mask:
        assert mask.mode == "L" and set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    assert snapshot(photos) == before


def test_a_single_image_file_and_another_model(photos: Path, tmp_path: Path, repo: Path) -> None:
    model = repo / "lesion_app" / "model" / "pretrained_unet.pt"
    assert main([str(photos / "odd.png"), str(tmp_path / "out"), "--model", str(model), "--tta"]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["odd.png"]


@pytest.mark.parametrize("case", ["missing", "empty", "not_an_image", "output_inside_input"])
def test_nothing_to_do_exits_2(tmp_path: Path, photos: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    source, out, message = {
        "missing": (tmp_path / "nowhere", tmp_path / "out", "does not exist"),
        "empty": (tmp_path / "empty", tmp_path / "out", "no images"),
        "not_an_image": (tmp_path / "notes.txt", tmp_path / "out", "is not an image"),
        "output_inside_input": (photos, photos / "masks", "never modified"),
    }[case]
    before = snapshot(photos)
    assert main([str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lesion-predict: error: ") and message in err and str(source) in err
    assert not out.exists()
    assert snapshot(photos) == before


@pytest.mark.data
def test_isic_format_scores_the_same_with_the_official_scorer(isic: Path, tmp_path: Path) -> None:
    images, truth, preds = tmp_path / "images", tmp_path / "truth", tmp_path / "preds"
    images.mkdir()
    truth.mkdir()
    for image_id in REAL_IDS:
        shutil.copy(isic / "images" / f"{image_id}.jpg", images)
        # Our masks are 0/255 already; through read_mask so any encoding becomes the ISIC one.
        write_isic_mask(truth / f"{image_id}_segmentation.png", read_mask(str(isic / "masks" / f"{image_id}.png")))
    before = snapshot(images)

    assert main([str(images), str(preds), "--format", "isic"]) == 0

    assert sorted(p.name for p in preds.iterdir()) == sorted(f"{i}_segmentation.png" for i in REAL_IDS)
    for image_id in REAL_IDS:
        with Image.open(preds / f"{image_id}_segmentation.png") as mask, Image.open(images / f"{image_id}.jpg") as img:
            assert mask.mode == "L" and mask.size == img.size
            assert set(np.unique(np.asarray(mask)).tolist()) == {0, 255}
    official = assert_agree(truth, preds)
    assert min(s["jaccard"] for s in official.values()) > 0.5  # real predictions, not empty masks
    macro = isic_scoring.SegmentationScore.from_dir(truth, preds).macro_average
    ours = mean_scores(list(ours_per_image(truth, preds).values()))
    for their_key, our_key in OFFICIAL_TO_OURS.items():
        assert abs(float(macro[their_key]) - ours[our_key]) <= TOLERANCE
    assert snapshot(images) == before


def _rect(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def test_hand_made_cases_score_the_same_with_the_official_scorer(tmp_path: Path) -> None:
    shape = (48, 480)
    truth_box = _rect(shape, (10, 30), (20, 350))  # 330 wide: a copy shifted by d has IoU (330 - d) / (330 + d)
    empty = np.zeros(shape, bool)
    cases = {  # id: (truth, prediction, expected official Jaccard)
        "ISIC_9000001": (truth_box, truth_box, 1.0),
        "ISIC_9000002": (truth_box, empty, 0.0),
        "ISIC_9000003": (truth_box, _rect(shape, (10, 30), (91, 421)), 259 / 401),  # 0.6459: thresholded to 0
        "ISIC_9000004": (truth_box, _rect(shape, (10, 30), (90, 420)), 260 / 400),  # exactly 0.65: kept
        "ISIC_9000005": (truth_box, _rect(shape, (10, 30), (89, 419)), 261 / 399),  # 0.6541: kept
        "ISIC_9000006": (empty, empty, 1.0),  # nothing to find, nothing found: perfect by both conventions
        "ISIC_9000007": (empty, truth_box, 0.0),
        "ISIC_9000008": (np.ones(shape, bool), truth_box, 6600 / shape[0] / shape[1]),
    }
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    for image_id, (t, p, _) in cases.items():
        write_isic_mask(truth / f"{image_id}_segmentation.png", t)
        write_isic_mask(preds / f"{image_id}_segmentation.png", p)
    official = assert_agree(truth, preds)
    for image_id, (_, _, jaccard) in cases.items():
        assert official[image_id]["jaccard"] == pytest.approx(jaccard, abs=1e-12)
        expected = jaccard if jaccard >= ISIC_JACCARD_THRESHOLD else 0.0
        assert official[image_id]["threshold_jaccard"] == pytest.approx(expected, abs=1e-12)
    assert official["ISIC_9000003"]["threshold_jaccard"] == 0.0
    assert official["ISIC_9000005"]["threshold_jaccard"] > ISIC_JACCARD_THRESHOLD


def test_the_official_scorer_reads_a_01_mask_as_empty(tmp_path: Path) -> None:
    """Why --format isic exists: the official scorer counts only values above 128 as lesion."""
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    box = _rect((32, 32), (4, 20), (4, 20))
    write_isic_mask(truth / "ISIC_9000001_segmentation.png", box)
    Image.fromarray(box.astype(np.uint8)).save(preds / "ISIC_9000001_segmentation.png")  # the png format's 0/1
    assert official_per_image(truth, preds)["ISIC_9000001"]["jaccard"] == 0.0
    assert ours_per_image(truth, preds)["ISIC_9000001"].iou == 1.0  # read_mask takes 0/1 as well as 0/255
