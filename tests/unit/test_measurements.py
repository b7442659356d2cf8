"""Lesion measurements (lesion_app.core.measurements) on shapes with known answers, drawn by the pixel-centre rule
on a 1000 x 800 photograph: area within 1% and diameters within 2% of the analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import rgb2lab

from lesion_app.core.measurements import COLUMNS, measure

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
        assert m[f"colour_{c}_mean"] == pytest.approx(lab_lesion[i], abs=1e-6)
        assert m[f"colour_{c}_std"] == pytest.approx(0.0, abs=1e-6)
    assert m["colour_contrast"] == pytest.approx(float(np.linalg.norm(lab_lesion - lab_skin)), abs=1e-6)


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
