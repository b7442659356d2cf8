"""RITM's zoom-in on the one click path (:meth:`lesion_app.core.predictor.Predictor.click`), on a real photograph with
the shipped click model."""

from __future__ import annotations

import numpy as np
import pytest

from lesion_app.core.clicks import ClickConfig, ClickEffect
from lesion_app.core.predictor import Predictor
from lesion_app.core.zoom import ZoomIn
from lesion_app.io.images import read_mask
from lesion_app.lib.settings import shipped_model
from tests.support.paths import SAMPLE_DATA


def test_the_box_frames_the_mask_and_the_clicks_widened_and_at_least_the_minimum() -> None:
    zoom = ZoomIn(expansion=1.4, min_side=200)
    mask = np.zeros((600, 800), bool)
    mask[100:400, 200:500] = True  # 300 x 300: widened to 420 around its centre (250, 350)
    assert zoom.box(mask, [], mask.shape) == (40, 460, 140, 560)
    small = np.zeros((600, 800), bool)
    small[300:310, 20:30] = True  # 10 x 10: at least 200, cut at the photograph's left edge
    assert zoom.box(small, [], small.shape) == (205, 405, 0, 125)
    # a click far from the mask widens the box to it; nothing at all: the whole photograph
    assert zoom.box(small, [(300, 400)], small.shape)[3] > 400
    assert zoom.box(np.zeros((60, 80), bool), [], (60, 80)) == (0, 60, 0, 80)


@pytest.fixture(scope="module")
def session() -> tuple[Predictor, object, ClickConfig, np.ndarray]:
    predictor = Predictor.from_files([shipped_model("deepedit")])
    photo = sorted(SAMPLE_DATA.glob("lesion_00*"))[0]
    truth = read_mask(SAMPLE_DATA / "labels" / "final" / f"{photo.stem}.png") > 0
    return predictor, predictor.prepare(photo, zoom_source=True), ClickConfig.of(predictor.metas[0]), truth


def test_from_the_first_click_the_network_answers_in_the_box_and_the_rest_stays(session: tuple) -> None:
    predictor, prepared, cfg, truth = session
    zoomed, plain = ClickEffect(brs_iterations=0, zoom=1), ClickEffect(brs_iterations=0, zoom=0)
    automatic = predictor.click(prepared, [], [], cfg, zoomed)
    assert np.array_equal(automatic.mask, predictor.click(prepared, [], [], cfg, plain).mask)  # no click: no box
    rows, cols = np.nonzero(truth)
    inside = (int(rows.mean()), int(cols.mean()))
    first = predictor.click(prepared, [inside], [], cfg, zoomed, automatic.state)
    unzoomed = predictor.click(prepared, [inside], [], cfg, plain, automatic.state)
    r0, r1, c0, c1 = ZoomIn().box(automatic.state, [inside], prepared.original_size)
    assert (r1 - r0, c1 - c0) != prepared.original_size  # the box is smaller than the photograph here
    beyond = np.ones(truth.shape, bool)
    beyond[r0:r1, c0:c1] = False
    assert np.array_equal(first.state[beyond], automatic.state[beyond])  # outside the box: the previous mask
    assert not np.array_equal(first.probabilities, unzoomed.probabilities)  # inside: another view
    outside = (int(rows.min()) // 2, int(cols.min()) // 2)  # skin, above and left of the lesion
    second = predictor.click(prepared, [inside], [outside], cfg, zoomed, first.state)
    assert second.mask[outside] == 0 and second.mask[inside] == 1
