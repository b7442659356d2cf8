"""lesion-import: LabelMe masks drawn pixel-exactly, ISIC and folder imports into a datastore, per-file errors.

The masks written must be what the app reads as labels (0/1, the photograph's size) and the photographs
must reach DEST unchanged; nothing in SOURCE may change, which is checked by bytes and modification times.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.import_annotations import main
from lesion_app.io.importers import AnnotationError, labelme_mask
from lesion_app.io.layout import discover_pairs, find_pairs
from tests.support.files import snapshot

H, W = 12, 16  # not square, so a transposed mask would show


def polygon(points: list[list[float]], label: str = "lesion", kind: str = "polygon") -> dict:
    return {"label": label, "points": points, "shape_type": kind, "flags": {}}


def labelme(shapes: list[dict], image_path: str | None = "a.png", **extra) -> dict:
    data = {"version": "5.4.1", "shapes": shapes, "imagePath": image_path, "imageHeight": H, "imageWidth": W}
    return data | extra


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def read_label(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img)


SQUARE = [[2, 3], [6, 3], [6, 7], [2, 7]]


def square_truth() -> np.ndarray:
    truth = np.zeros((H, W), np.uint8)
    truth[3:8, 2:7] = 1  # rows y 3..7, columns x 2..6: the border pixels belong to the lesion
    return truth


# --- labelme_mask -----------------------------------------------------------------------------------------


def test_square_polygon_gives_exact_pixels():
    mask = labelme_mask(labelme([polygon(SQUARE)]), (H, W))
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    np.testing.assert_array_equal(mask, square_truth())


def test_polyline_is_closed_and_filled():
    mask = labelme_mask(labelme([polygon(SQUARE, kind="polyline")]), (H, W))
    np.testing.assert_array_equal(mask, square_truth())
    assert mask[5, 4] == 1  # the interior, not only the traced border


def test_two_shapes_are_united_and_ignored_labels_left_out():
    other = [[10, 1], [14, 1], [14, 4], [10, 4]]
    shapes = [polygon(SQUARE, "Melanoma"), polygon(other, "nevus"), polygon([[0, 0], [15, 0], [15, 11]], "ruler")]
    mask = labelme_mask(labelme(shapes), (H, W))
    truth = square_truth()
    truth[1:5, 10:15] = 1
    np.testing.assert_array_equal(mask, truth)
    only = labelme_mask(labelme(shapes), (H, W), labels=["MELANOMA"])
    np.testing.assert_array_equal(only, square_truth())


def test_rectangle_and_circle():
    rect = labelme_mask(labelme([polygon([[6, 7], [2, 3]], kind="rectangle")]), (H, W))
    np.testing.assert_array_equal(rect, square_truth())
    circle = labelme_mask(labelme([polygon([[8, 6], [8, 9]], kind="circle")]), (H, W))
    assert circle[6, 8] == 1 and circle[6, 5] == 1 and circle[6, 4] == 0 and circle.sum() < 40


def test_shape_errors():
    with pytest.raises(AnnotationError, match="at least 3 points"):
        labelme_mask(labelme([polygon([[1, 1], [5, 5]])]), (H, W))
    with pytest.raises(AnnotationError, match="no lesion shape"):
        labelme_mask(labelme([]), (H, W))
    with pytest.raises(AnnotationError, match="no lesion shape"):
        labelme_mask(labelme([polygon(SQUARE, "background")]), (H, W))
    with pytest.raises(AnnotationError, match="12x16"):
        labelme_mask(labelme([polygon(SQUARE)]), (H + 1, W))


def test_points_outside_are_clipped_with_a_warning():
    warnings: list[str] = []
    mask = labelme_mask(labelme([polygon([[-5, -5], [6, -5], [6, 7], [-5, 7]])]), (H, W), warnings=warnings)
    truth = np.zeros((H, W), np.uint8)
    truth[:8, :7] = 1
    np.testing.assert_array_equal(mask, truth)
    assert len(warnings) == 1 and "outside" in warnings[0]


# --- lesion-import labelme --------------------------------------------------------------------------------


def test_labelme_import(tmp_path, capsys):
    src, dest = tmp_path / "src", tmp_path / "dest"
    write_png(src / "a.png", photo(0))
    (src / "a.json").write_text(json.dumps(labelme([polygon(SQUARE)])))
    (src / "b.json").write_text(json.dumps(labelme([polygon(SQUARE)], "missing.png")))
    write_png(src / "c.png", photo(2))
    (src / "c.json").write_text(json.dumps(labelme([], "c.png")))
    buf = io.BytesIO()
    Image.fromarray(photo(3)).save(buf, format="PNG")
    embedded = buf.getvalue()
    (src / "d.json").write_text(
        json.dumps(labelme([polygon(SQUARE)], None, imageData=base64.b64encode(embedded).decode()))
    )
    write_png(tmp_path / "outside.png", photo(4))
    (src / "e.json").write_text(json.dumps(labelme([polygon(SQUARE)], "../outside.png")))
    (src / "f.json").write_text("{not json")
    write_png(src / "sub" / "g.png", photo(5))  # no JSON: imported for annotation
    (src / "h.json").write_text(json.dumps(labelme([polygon([[1, 1], [2, 2]])], "h.png")))
    write_png(src / "h.png", photo(6))
    before = snapshot(src)

    assert main(["labelme", str(src), str(dest)]) == 1
    out, err = capsys.readouterr()
    assert "3 images, 2 labels imported, 0 skipped, 5 errors" in out
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 5
    assert any("b.json" in x and "missing.png" in x and "not found" in x for x in error_lines)
    assert any("c.json" in x and "no lesion shape" in x for x in error_lines)
    assert any("e.json" in x and "outside" in x for x in error_lines)
    assert any("f.json" in x and "not valid JSON" in x for x in error_lines)
    assert any("h.json" in x and "at least 3 points" in x for x in error_lines)

    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == ["a.png", "d.png", "g.png"]
    assert (dest / "a.png").read_bytes() == (src / "a.png").read_bytes()
    assert (dest / "d.png").read_bytes() == embedded
    assert (dest / "g.png").read_bytes() == (src / "sub" / "g.png").read_bytes()
    assert sorted(p.name for p in (dest / "labels" / "final").iterdir()) == ["a.png", "d.png"]
    for name in ("a.png", "d.png"):
        np.testing.assert_array_equal(read_label(dest / "labels" / "final" / name), square_truth())
    assert not (tmp_path / "dest" / "outside.png").exists()
    assert snapshot(src) == before


def test_labelme_size_disagreement_is_an_error(tmp_path, capsys):
    src = tmp_path / "src"
    write_png(src / "a.png", photo(0)[:, :10])
    (src / "a.json").write_text(json.dumps(labelme([polygon(SQUARE)])))
    assert main(["labelme", str(src), str(tmp_path / "dest"), "--labelled-only"]) == 1
    assert "imageHeight x imageWidth is 12x16 but the image is 12x10" in capsys.readouterr().err


# --- lesion-import isic / folder ----------------------------------------------------------------------------


@pytest.mark.data
def test_isic_import_of_real_pairs(isic, tmp_path, capsys):
    from lesion_app.io.images import binarize
    from lesion_app.lib.settings import LesionSettings
    from lesion_app.server.datastore import local_datastore

    ids = sorted(p.stem for p in (isic / "images").glob("ISIC_*.jpg"))[:3]
    download = tmp_path / "download"
    inputs, truths = download / "ISIC2018_Task1-2_Training_Input", download / "ISIC2018_Task1_Training_GroundTruth"
    inputs.mkdir(parents=True)
    truths.mkdir()
    expected = {}
    for image_id in ids:
        shutil.copyfile(isic / "images" / f"{image_id}.jpg", inputs / f"{image_id}.jpg")
        with Image.open(isic / "masks" / f"{image_id}.png") as m:
            truth = binarize(np.asarray(m.convert("L"))).astype(np.uint8)
        expected[image_id] = truth
        Image.fromarray(truth * 255).save(truths / f"{image_id}_segmentation.png")  # ISIC's own 0/255
    before = snapshot(download)
    dest = tmp_path / "studies"

    assert main(["isic", str(download), str(dest)]) == 0  # the download folder: *_Input + *_GroundTruth
    assert "3 images, 3 labels imported, 0 skipped, 0 errors" in capsys.readouterr().out
    for image_id, truth in expected.items():
        assert (dest / f"{image_id}.jpg").read_bytes() == (inputs / f"{image_id}.jpg").read_bytes()
        label = read_label(dest / "labels" / "final" / f"{image_id}.png")
        assert set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label, truth)
    assert snapshot(download) == before

    store = local_datastore(str(dest), LesionSettings())
    assert sorted(store.get_labeled_images()) == ids
    assert store.status()["completed"] == 3 and store.status()["total"] == 3

    # the same again, given as two paths: everything exists already and is reported as skipped
    assert main(["isic", str(inputs), str(dest), "--masks", str(truths)]) == 0
    assert "0 images, 0 labels imported, 6 skipped, 0 errors" in capsys.readouterr().out


def test_folder_import_skips_a_wrong_sized_mask(tmp_path, capsys):
    src, dest = tmp_path / "src", tmp_path / "dest"
    mask = (square_truth() * 255).astype(np.uint8)
    write_png(src / "a.jpg", photo(0))
    write_png(src / "a_mask.png", mask)
    write_png(src / "b.jpg", photo(1))
    write_png(src / "b_segmentation.png", mask[:, :10])
    write_png(src / "c.png", photo(2))
    write_png(src / "d.jpg", photo(3))
    write_png(src / "d_lesion.png", square_truth())  # a 0/1 source mask
    before = snapshot(src)

    assert main(["folder", str(src), str(dest)]) == 1
    out, err = capsys.readouterr()
    assert "3 images, 2 labels imported, 0 skipped, 1 errors" in out
    assert "b_segmentation.png: mask is 10x12 (WxH) but its image is 16x12" in err
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == ["a.jpg", "c.png", "d.jpg"]
    for name in ("a.png", "d.png"):
        np.testing.assert_array_equal(read_label(dest / "labels" / "final" / name), square_truth())
    assert not (dest / "labels" / "final" / "c.png").exists()
    assert snapshot(src) == before

    # files already in DEST are kept (and counted as skipped, one per file) unless --overwrite
    write_png(src / "c_mask.png", mask)
    assert main(["folder", str(src), str(dest), "--labelled-only"]) == 1
    assert "0 images, 1 labels imported, 5 skipped, 1 errors" in capsys.readouterr().out
    np.testing.assert_array_equal(read_label(dest / "labels" / "final" / "c.png"), square_truth())
    assert main(["folder", str(src), str(dest), "--overwrite", "--quiet"]) == 1
    assert "3 images, 3 labels imported, 0 skipped, 1 errors" in capsys.readouterr().out


def test_folder_pairs_agree_with_training_data(studies):
    pairs = [(str(i), str(m)) for i, m in discover_pairs(studies)[0]]
    assert pairs == [(p["image"], p["label"]) for p in find_pairs(studies)]


def test_refusals(tmp_path, capsys):
    src = tmp_path / "src"
    write_png(src / "a.png", photo(0))
    assert main(["folder", str(src), str(src / "studies")]) == 2
    assert "inside SOURCE" in capsys.readouterr().err
    assert main(["labelme", str(src), str(src)]) == 2
    assert main(["isic", str(tmp_path / "nowhere"), str(tmp_path / "dest")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (src / "studies").exists() and not (tmp_path / "dest").exists()


def test_unsafe_ids_are_errors(tmp_path, capsys):
    src = tmp_path / "src"
    write_png(src / "-a.png", photo(0))  # ids start with a letter or digit (one rule with the server's)
    write_png(src / "x.jpg.png", photo(1))
    write_png(src / "ok.png", photo(2))
    assert main(["folder", str(src), str(tmp_path / "dest")]) == 1
    out, err = capsys.readouterr()
    assert "1 images, 0 labels imported, 0 skipped, 2 errors" in out
    assert "'-a' is not a safe image id" in err and "'x.jpg' is not a safe image id" in err
