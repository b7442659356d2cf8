"""Lesion measurements (lesion_app.core.measurements) on shapes with known answers, drawn by the pixel-centre rule
on a 1000 x 800 photograph: area within 1% and diameters within 2% of the analytic values."""

from __future__ import annotations

import copy
import csv
import io
import math
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from skimage.color import rgb2lab
from skimage.measure import regionprops
from skimage.morphology import convex_hull_image

from apps import dicom_import
from apps import measure as measure_program
from lesion_app.core.measurements import (
    ASYMMETRY_SAMPLES,
    COLUMNS,
    convex_image,
    measure,
    mirror_asymmetry,
    photograph_rgb,
)
from lesion_app.io.dicom import SPACING_PLACEHOLDER, PhotoUids, calibrated_spacing_mm, mask_to_seg, photo_to_dicom
from lesion_app.io.images import read_mask
from lesion_app.io.sr import measurement_report, report_values
from lesion_app.lib.settings import LesionSettings
from tests.contracts.programs import FileProgramContract
from tests.support.images import draw_studies
from tests.support.paths import SHARED_DATA
from tests.support.viewers import need

H, W = 800, 1000
ROWS, COLS = np.mgrid[:H, :W].astype(np.float64)


def ellipse(a: float, b: float, degrees: float = 0.0, centre: tuple[float, float] = (400.0, 500.0)) -> np.ndarray:
    """Pixels whose centre lies in the ellipse of semi-axes a (along ``degrees`` from the rows axis) and b."""
    t = math.radians(degrees)
    dr, dc = ROWS - centre[0], COLS - centre[1]
    u, v = dr * math.cos(t) + dc * math.sin(t), -dr * math.sin(t) + dc * math.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def rectangle(h: float, w: float, degrees: float = 0.0) -> np.ndarray:
    t = math.radians(degrees)
    dr, dc = ROWS - 399.5, COLS - 499.5  # half-integer edges: exactly h x w pixels upright
    u, v = dr * math.cos(t) + dc * math.sin(t), -dr * math.sin(t) + dc * math.cos(t)
    return (np.abs(u) < h / 2) & (np.abs(v) < w / 2)


#: name -> (mask, area px, max Feret px, min Feret px, regions)
SHAPES = {
    "disc r50": (ellipse(50, 50), math.pi * 50**2, 100, 100, 1),
    "disc r150": (ellipse(150, 150), math.pi * 150**2, 300, 300, 1),
    **{
        f"ellipse {d} deg": (ellipse(150, 60, d), math.pi * 150 * 60, 300, 120, 1) for d in (0, 17, 30, 45, 60, 90, 135)
    },
    **{f"rectangle {d} deg": (rectangle(120, 200, d), 120 * 200, math.hypot(120, 200), 120, 1) for d in (0, 20, 45)},
    "two discs": (
        ellipse(60, 60, centre=(400, 300)) | ellipse(60, 60, centre=(400, 700)),
        2 * math.pi * 60**2,
        400 + 120,
        120,
        2,
    ),
    "ring": (ellipse(200, 200) & ~ellipse(120, 120), math.pi * (200**2 - 120**2), 400, 400, 1),
}


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("spacing", [None, 0.05])
def test_known_shapes(name: str, spacing: float | None) -> None:
    mask, area, feret_max, feret_min, regions = SHAPES[name]
    m = measure(mask, spacing)
    assert m["regions"] == regions
    assert m["area_px"] == pytest.approx(area, rel=0.01)
    assert m["feret_max_px"] == pytest.approx(feret_max, rel=0.02)
    assert m["feret_min_px"] == pytest.approx(feret_min, rel=0.02)
    assert m["equivalent_diameter_px"] == pytest.approx(math.sqrt(4 * area / math.pi), rel=0.02)
    if spacing is None:
        assert m["spacing"] == "unknown" and not any(k.endswith("_mm") or k.endswith("_mm2") for k in m)
    else:
        assert m["spacing"] == "known" and m["spacing_mm"] == spacing
        assert m["area_mm2"] == pytest.approx(area * spacing**2, rel=0.01)
        assert m["feret_max_mm"] == pytest.approx(feret_max * spacing, rel=0.02)
        assert m["feret_min_mm"] == pytest.approx(feret_min * spacing, rel=0.02)
        assert m["perimeter_mm"] == pytest.approx(m["perimeter_px"] * spacing)
    assert set(m) <= set(COLUMNS)


def test_a_disc_is_compact_solid_and_symmetric() -> None:
    m = measure(ellipse(150, 150))
    assert m["perimeter_px"] == pytest.approx(2 * math.pi * 150, rel=0.01)
    assert m["compactness"] == pytest.approx(1.0, abs=0.02)
    assert m["solidity"] == pytest.approx(1.0, abs=0.01)
    assert m["asymmetry_major"] < 0.01 and m["asymmetry_minor"] < 0.01


@pytest.mark.parametrize("degrees", [0, 30, 45, 100])
def test_an_ellipse_is_symmetric_about_its_axes(degrees: float) -> None:
    m = measure(ellipse(150, 60, degrees))
    assert m["asymmetry_major"] < 0.01 and m["asymmetry_minor"] < 0.01
    assert m["compactness"] > 1.2  # an elongated outline is less compact than a disc


def test_an_l_shape_is_asymmetric_and_not_solid() -> None:
    mask = np.zeros((H, W), bool)
    mask[100:500, 100:220] = True  # a tall arm
    mask[400:500, 100:600] = True  # a longer, thinner foot
    m = measure(mask)
    assert m["asymmetry_major"] > 0.2 and m["asymmetry_minor"] > 0.2
    assert m["solidity"] < 0.7
    assert m["compactness"] > 1.5


def test_one_pixel() -> None:
    mask = np.zeros((H, W), bool)
    mask[10, 20] = True
    m = measure(mask, 0.1)
    assert m["regions"] == 1 and m["area_px"] == 1 and m["area_mm2"] == pytest.approx(0.01)
    assert m["feret_max_px"] == pytest.approx(1.0)  # between the 0.5-level contour's corners
    assert m["feret_min_px"] == pytest.approx(math.sqrt(0.5))  # the width of that diamond
    assert m["equivalent_diameter_px"] == pytest.approx(math.sqrt(4 / math.pi))
    assert m["solidity"] == 1.0 and m["asymmetry_major"] == 0.0 and m["asymmetry_minor"] == 0.0


@pytest.mark.parametrize("spacing", [None, 0.1])
def test_an_empty_mask_has_no_measurements(spacing: float | None) -> None:
    expected = {"spacing": "unknown", "regions": 0, "area_px": 0}
    if spacing:
        expected = {"spacing": "known", "spacing_mm": 0.1, "regions": 0, "area_px": 0}
    assert measure(np.zeros((H, W), np.uint8), spacing) == expected


def test_colour_of_a_uniform_lesion_on_uniform_skin() -> None:
    lesion, skin = (90, 50, 30), (220, 180, 160)
    mask = ellipse(100, 100)
    photo = np.empty((H, W, 3), np.uint8)
    photo[:] = skin
    photo[mask] = lesion
    m = measure(mask, rgb=photo)
    lab_lesion, lab_skin = (rgb2lab(np.array([[c]], np.uint8))[0, 0] for c in (lesion, skin))
    for i, c in enumerate("Lab"):
        assert m[f"colour_{c}_mean"] == pytest.approx(lab_lesion[i], abs=1e-3)  # converted in float32
        assert m[f"colour_{c}_std"] == pytest.approx(0.0, abs=1e-3)
    assert m["colour_contrast"] == pytest.approx(float(np.linalg.norm(lab_lesion - lab_skin)), abs=1e-3)


def test_colour_spread_of_a_two_coloured_lesion() -> None:
    mask = ellipse(100, 100)
    photo = np.full((H, W, 3), 200, np.uint8)
    photo[mask & (COLS < 500)] = (40, 40, 40)
    photo[mask & (COLS >= 500)] = (120, 120, 120)
    m = measure(mask, rgb=photo)
    assert m["colour_L_std"] > 10  # two greys: half the pixels each side of the mean
    assert abs(m["colour_a_mean"]) < 0.01 and abs(m["colour_b_mean"]) < 0.01  # greys have no hue


@pytest.mark.parametrize("spacing", [0, -0.1, "abc", float("nan"), float("inf"), True, "0"])
def test_a_bad_spacing_is_refused(spacing: object) -> None:
    with pytest.raises(ValueError, match="pixel spacing must be a positive number of mm per pixel"):
        measure(ellipse(50, 50), spacing)  # type: ignore[arg-type]


def test_a_spacing_given_as_text_is_read() -> None:
    assert measure(ellipse(50, 50), "0.02")["spacing_mm"] == 0.02  # type: ignore[arg-type]


def test_a_photograph_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"the photograph is \(10, 10\) but the mask \(800, 1000\)"):
        measure(ellipse(50, 50), rgb=np.zeros((10, 10, 3), np.uint8))


def test_a_mask_that_is_not_2d_is_refused() -> None:
    with pytest.raises(ValueError, match=r"one \(H, W\) plane"):
        measure(np.zeros((2, 8, 8)))


class TestMeasureProgram(FileProgramContract):
    """``lesion-measure``: the program contract, a real run over a studies folder and over masks alone."""

    prog, main = "lesion-measure", measure_program.main

    def run_in(self, folder: Path) -> None:
        data = draw_studies(folder / "my studies", 3, seed=3, shape=(120, 160))
        out = folder / "my measurements.csv"
        assert self.run([str(data), "--out", str(out), "--pixel-spacing", "0.05", "--quiet"]) == 0
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        assert [r["id"] for r in rows] == ["s0", "s1", "s2"]
        for row in rows:
            expected = measure(read_mask(row["mask"]), 0.05, photograph_rgb(row["image"]))
            assert float(row["area_mm2"]) == pytest.approx(expected["area_mm2"])
            assert float(row["colour_contrast"]) == pytest.approx(expected["colour_contrast"])
            assert row["spacing"] == "known"


def test_the_help_gives_every_columns_unit(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        measure_program.main(["--help"])
    out = capsys.readouterr().out
    for name, unit in COLUMNS.items():
        assert f"  {name}: {unit}" in out


def test_masks_alone_give_no_colour_and_no_mm(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    masks = tmp_path / "masks only"
    masks.mkdir()
    Image.fromarray(ellipse(100, 100).astype(np.uint8) * 255).save(masks / "a_segmentation.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / "b.png")
    assert measure_program.main([str(masks), "--quiet"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in rows] == ["a", "b"]
    assert float(rows[0]["area_px"]) == pytest.approx(math.pi * 100**2, rel=0.01)
    assert rows[0]["spacing"] == "unknown" and rows[0]["area_mm2"] == "" and rows[0]["colour_L_mean"] == ""
    assert rows[1]["area_px"] == "0" and rows[1]["regions"] == "0" and rows[1]["feret_max_px"] == ""


def test_masks_with_a_photograph_folder_and_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = draw_studies(tmp_path / "data", 2, seed=4, shape=(120, 160))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "masks" / "s1.png")  # not the photograph's size
    out = tmp_path / "m.csv"
    assert measure_program.main([str(data / "masks"), "--images", str(data / "images"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "s1.png: ValueError: the photograph is (120, 160) but the mask (10, 10)" in err
    assert "1 of 2 masks could not be measured" in err
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["s0"] and rows[0]["colour_L_mean"] != ""


@pytest.mark.parametrize("spacing", ["0", "-1", "nan"])
def test_a_bad_pixel_spacing_is_a_usage_error(spacing: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        measure_program.main([str(tmp_path), f"--pixel-spacing={spacing}"])
    assert e.value.code == 2
    assert "--pixel-spacing: pixel spacing must be a positive number of mm per pixel" in capsys.readouterr().err


def test_an_empty_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert measure_program.main([str(tmp_path)]) == 2
    assert f"no masks found in {tmp_path}" in capsys.readouterr().err


def test_the_import_marks_an_unknown_spacing_and_it_is_read_as_unknown(tmp_path: Path) -> None:
    photos = draw_studies(tmp_path / "photos", 1, seed=5, shape=(60, 80)) / "images"
    for argv, expected in (([], None), (["--pixel-spacing", "0.02"], 0.02)):
        out = tmp_path / f"dicom {len(argv)}"
        assert dicom_import.main([str(photos), "--out", str(out), "--mapping", str(tmp_path / "uids.csv"), *argv]) == 0
        ds = pydicom.dcmread(out / "s0.dcm")
        assert calibrated_spacing_mm(ds) == expected
        if expected is None:  # the SEG still gets its 1 mm grid, marked as a placeholder
            assert [float(v) for v in ds.PixelSpacing] == [1.0, 1.0]
            assert ds.private_block(0x0009, "lesion_app")[0x01].value == SPACING_PLACEHOLDER


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"PixelSpacing": [0.03, 0.03]}, 0.03),
        ({"ImagerPixelSpacing": [0.05, 0.05]}, 0.05),
        ({"PixelSpacing": [1.0, 1.0]}, None),  # older imports' and blind converters' unmarked 1 mm
        ({"PixelSpacing": [1.0, 1.0], "PixelSpacingCalibrationType": "GEOMETRY"}, 1.0),
        ({"PixelSpacing": [0.02, 0.03]}, None),  # non-square pixels
        ({"PixelSpacing": [0.0, 0.0]}, None),
        ({}, None),
    ],
)
def test_a_dicom_spacing_is_read_only_when_calibrated(attributes: dict, expected: float | None) -> None:
    ds = pydicom.Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    assert calibrated_spacing_mm(ds) == expected


def test_a_bad_import_spacing_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        dicom_import.main([str(tmp_path), "--out", str(tmp_path / "o"), "--pixel-spacing", "0"])
    assert e.value.code == 2 and "--pixel-spacing: pixel spacing must be a positive" in capsys.readouterr().err


def test_the_conf_spacing_is_read(tmp_path: Path) -> None:
    assert LesionSettings.from_conf({}, tmp_path).pixel_spacing_mm == 0.0  # unknown
    assert LesionSettings.from_conf({"pixel_spacing_mm": "0.02"}, tmp_path).pixel_spacing_mm == 0.02


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "wide"])
def test_the_conf_spacing_is_checked(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        LesionSettings.from_conf({"pixel_spacing_mm": value}, tmp_path)


@pytest.mark.parametrize("name", ["disc r50", "ellipse 30 deg", "rectangle 20 deg", "two discs", "ring"])
def test_the_maximum_feret_diameter_is_scikit_images(name: str) -> None:
    mask = SHAPES[name][0]
    assert measure(mask)["feret_max_px"] == pytest.approx(regionprops(mask.astype(np.uint8))[0].feret_diameter_max)


def real_and_random_masks(count: int = 40) -> list[np.ndarray]:
    """Expert masks of ISIC photographs and random sparse masks (many separate pixels, ragged hulls)."""
    rng = np.random.default_rng(0)
    masks = [read_mask(p) > 0 for p in sorted((SHARED_DATA / "isic" / "masks").glob("*.png"))[:count]]
    while len(masks) < 2 * count:
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random() * 0.3
        if mask.any():
            masks.append(mask)
    return masks


def test_the_convex_image_is_scikit_images() -> None:
    """The row-by-row convex image equals scikit-image's convex_hull_image pixel for pixel, so the solidity and the
    Feret diameters are scikit-image's definitions."""
    shapes = [SHAPES[name][0] for name in ("disc r50", "ellipse 17 deg", "rectangle 45 deg", "two discs", "ring")]
    for mask in shapes + real_and_random_masks():
        props = regionprops(mask.astype(np.uint8))[0]
        np.testing.assert_array_equal(convex_image(props.image), convex_hull_image(props.image))
        m = measure(mask)
        assert m["solidity"] == pytest.approx(props.solidity)
        assert m["feret_max_px"] == pytest.approx(props.feret_diameter_max)
    assert not convex_image(np.zeros((5, 7), bool)).any()


def test_the_sampled_asymmetry_is_within_a_hundredth_of_every_pixels(isic: Path) -> None:
    """Past :data:`ASYMMETRY_SAMPLES` lesion pixels the mirror asymmetry is estimated on a grid of them: on large
    expert masks it stays within 0.01 of the value over every pixel."""
    import lesion_app.core.measurements as measurements

    compared = 0
    for path in sorted((SHARED_DATA / "isic" / "masks").glob("*.png"))[:20]:
        mask = read_mask(path) > 0
        if mask.sum() < 2 * ASYMMETRY_SAMPLES:  # sampled every second row and column at least
            continue
        props = regionprops(mask.astype(np.uint8))[0]
        sampled = mirror_asymmetry(mask, props.centroid, props.orientation)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(measurements, "ASYMMETRY_SAMPLES", mask.size)
            every = mirror_asymmetry(mask, props.centroid, props.orientation)
        assert sampled == pytest.approx(every, abs=0.01)
        compared += 1
    assert compared >= 3


@pytest.fixture(scope="module")
def photo_and_seg(tmp_path_factory: pytest.TempPathFactory) -> tuple[pydicom.Dataset, pydicom.Dataset, np.ndarray]:
    """A drawn photograph as DICOM (placeholder spacing) and its lesion's SEG, as the app writes both."""
    folder = tmp_path_factory.mktemp("sr")
    rgb = np.full((120, 160, 3), 200, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:130] = 1
    rgb[mask > 0] = (90, 50, 30)
    Image.fromarray(rgb).save(folder / "photo.png")
    (folder / "photo").mkdir()
    photo = photo_to_dicom(folder / "photo.png", PhotoUids.from_key("sr test"), "P^1")
    photo.save_as(folder / "photo" / "photo.dcm", write_like_original=False)
    mask_to_seg(mask, folder / "photo", folder / "seg.dcm")
    return pydicom.dcmread(folder / "photo" / "photo.dcm"), pydicom.dcmread(folder / "seg.dcm"), mask


@pytest.mark.parametrize("spacing", [None, 0.05])
def test_the_report_reads_back_with_the_values_and_references_written(
    photo_and_seg: tuple, spacing: float | None, tmp_path: Path
) -> None:
    photo, seg, mask = photo_and_seg
    values = measure(mask, spacing, np.asarray(Image.new("RGB", (160, 120), (200, 200, 200))))
    path = tmp_path / "sr.dcm"
    measurement_report(photo, seg, values).save_as(path)
    back = pydicom.dcmread(path)
    assert back.Modality == "SR" and back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert back.StudyInstanceUID == photo.StudyInstanceUID and back.SeriesInstanceUID != seg.SeriesInstanceUID
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    numbers = {k: v for k, v in values.items() if isinstance(v, int | float) and k != "spacing_mm"}
    assert report_values(back) == pytest.approx(numbers)
    assert any(k.endswith(("_mm", "_mm2")) for k in report_values(back)) == (spacing is not None)
    report = hd.sr.Comprehensive3DSR.from_dataset(back)
    [group] = report.content.get_volumetric_roi_measurement_groups()
    segment = group.referenced_segment
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID and segment.referenced_segment_numbers == [1]
    assert [s.referenced_sop_instance_uid for s in segment.source_images_for_segmentation] == [photo.SOPInstanceUID]
    evidence = {
        i.ReferencedSOPInstanceUID
        for study in back.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert evidence == {photo.SOPInstanceUID, seg.SOPInstanceUID}


def test_the_report_passes_dciodvfy(photo_and_seg: tuple, tmp_path: Path) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        need("dciodvfy is not installed (Debian's dicom3tools: make viewers)")
    photo, seg, mask = photo_and_seg
    measurement_report(photo, seg, measure(mask, 0.05)).save_as(tmp_path / "sr.dcm")
    run = subprocess.run([str(tool), str(tmp_path / "sr.dcm")], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    assert "Comprehensive3DSR" in lines
    assert not [line for line in lines if line.startswith("Error")], lines


def test_a_seg_without_a_lesion_segment_gets_no_report(photo_and_seg: tuple) -> None:
    photo, seg, mask = photo_and_seg
    other = copy.deepcopy(seg)
    other.SegmentSequence[0].SegmentLabel = "hair"
    other.SegmentSequence.append(copy.deepcopy(other.SegmentSequence[0]))
    other.SegmentSequence[1].SegmentNumber = 2
    other.SegmentSequence[0].SegmentNumber = 3
    with pytest.raises(ValueError, match="has no lesion segment"):
        measurement_report(photo, other, measure(mask))
