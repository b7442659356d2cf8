"""Clicks: guidance maps from points, the robot user on hand-made masks, NoC counting, click simulation, the click
network made from an automatic one, and Slicer's points moved onto the upright photograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion_app.core.checkpoint import network_from, read_checkpoint
from lesion_app.core.clicks import (
    ClickConfig,
    ClickEffect,
    ClickSimulation,
    ClickValidation,
    click_constraints,
    click_input,
    click_maps,
    click_network,
    click_prior,
    from_grid,
    guidance_maps,
    nearest_squared_distance,
    never_reached,
    noc,
    robot_click,
    robot_session,
    to_grid,
    training_options,
)
from lesion_app.core.losses import HybridLoss, NormalizedFocalLoss
from lesion_app.io.images import stored_point_to_upright, stored_to_upright
from lesion_app.lib.settings import shipped_model
from lesion_app.server import checks
from tests.contracts.networks import NetworkContract
from tests.support.errors import refused


class TestClickUNet(NetworkContract):
    """The U-Net with the click model's five input channels passes the network contract."""

    arch = "unet"
    in_channels = 5


# -- guidance maps ---------------------------------------------------------------------------------------------------


def test_a_guidance_map_peaks_at_each_click_and_is_empty_without_one() -> None:
    maps = guidance_maps([(10, 20), (40, 50)], [], (64, 80), sigma=3.0)
    assert maps.shape == (2, 64, 80) and maps.dtype == np.float32
    assert maps[0, 10, 20] == pytest.approx(1.0) and maps[0, 40, 50] == pytest.approx(1.0)
    assert np.unravel_index(maps[0, :30].argmax(), (30, 80)) == (10, 20)
    assert maps[0, 10, 20 + 9] < 0.05  # three sigmas away
    assert not maps[1].any()  # no negative click: an empty background map


def test_the_width_of_a_click_follows_sigma() -> None:
    narrow = guidance_maps([(32, 32)], [], (64, 64), sigma=2.0)[0]
    wide = guidance_maps([(32, 32)], [], (64, 64), sigma=6.0)[0]
    assert (wide > 0.5).sum() > 4 * (narrow > 0.5).sum()


def test_the_click_input_stacks_rgb_guidance_and_the_previous_mask() -> None:
    images = torch.rand(2, 3, 32, 32)
    five = click_input(images, [[(5, 5)], []], [[], [(9, 9)]], ClickConfig(sigma=2.0))
    assert five.shape == (2, 5, 32, 32) and torch.equal(five[:, :3], images)
    assert five[0, 3, 5, 5] == 1 and five[1, 4, 9, 9] == 1 and five[0, 4].sum() == 0 and five[1, 3].sum() == 0
    prev = torch.ones(2, 1, 32, 32)
    six = click_input(images, [[], []], [[], []], ClickConfig(prev_mask=True), prev)
    assert six.shape == (2, 6, 32, 32) and torch.equal(six[:, 5:], prev)


def test_points_land_on_the_network_grid() -> None:
    assert to_grid(0, 0, (384, 512), (256, 256)) == (0, 0)
    assert to_grid(383, 511, (384, 512), (256, 256)) == (255, 255)
    assert to_grid(191, 255, (384, 512), (256, 256)) == (127, 127)


@pytest.mark.parametrize("shape", [(384, 512), (300, 1000), (256, 256)])
def test_a_grid_cell_maps_back_to_a_photograph_pixel_in_it(shape: tuple[int, int]) -> None:
    for cell in [(0, 0), (255, 255), (127, 40)]:
        pixel = from_grid(*cell, (256, 256), shape)
        assert 0 <= pixel[0] < shape[0] and 0 <= pixel[1] < shape[1]
        assert to_grid(*pixel, shape, (256, 256)) == cell


# -- the robot user --------------------------------------------------------------------------------------------------


def test_the_robot_clicks_the_centre_of_the_largest_missed_region() -> None:
    truth = np.zeros((50, 60), bool)
    truth[10:40, 10:50] = True
    pred = np.zeros_like(truth)
    pred[10:40, 10:30] = True  # the right half (rows 10-39, columns 30-49) is missed
    row, col, positive = robot_click(pred, truth)
    assert positive and 10 <= row < 40 and 30 <= col < 50
    # 10 pixels from the region's border on rows 19-30 of columns 39-40; the first in row-major order
    assert (row, col) == (19, 39)


def test_the_robot_clicks_negative_in_a_false_region_larger_than_the_missed_one() -> None:
    truth = np.zeros((50, 60), bool)
    truth[5:15, 5:15] = True
    pred = truth.copy()
    pred[30:48, 30:58] = True  # a large false region
    pred[5:7, 5:15] = False  # a small missed strip
    row, col, positive = robot_click(pred, truth)
    assert not positive and 30 <= row < 48 and 30 <= col < 58


def test_the_robot_never_clicks_on_the_image_edge_and_stops_when_nothing_is_wrong() -> None:
    truth = np.zeros((40, 40), bool)
    truth[:, :20] = True  # a region touching the image's edge
    row, col, positive = robot_click(np.zeros_like(truth), truth)
    assert positive and 0 < row < 39 and 0 < col < 19
    assert robot_click(truth, truth) is None


def test_a_session_counts_clicks_until_the_target_and_20_when_never() -> None:
    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    steps = iter([np.zeros_like(truth), truth[:, :], truth])  # empty, then perfect

    def predict(fg: list, bg: list, state: object) -> tuple[np.ndarray, None]:
        return next(steps, truth), None

    ious, clicks = robot_session(predict, truth, (40, 40), max_clicks=5)
    assert ious == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0] and len(clicks) == 1 and clicks[0][2]
    table = np.array([[0.2, 0.86, 0.91, 0.95], [0.95, 0.95, 0.95, 0.95], [0.1, 0.2, 0.3, 0.4]])
    assert noc(table, 0.85, max_clicks=3).tolist() == [1, 0, 3]
    assert noc(table, 0.90, max_clicks=3).tolist() == [2, 0, 3]
    assert never_reached(table, 0.90, max_clicks=3).tolist() == [False, False, True]


# -- training and the model ------------------------------------------------------------------------------------------


def test_a_click_network_from_the_automatic_one_computes_the_same_without_clicks() -> None:
    automatic = read_checkpoint(shipped_model("unet"))
    cfg = ClickConfig(sigma=4.0)
    network, spec, new = click_network(automatic, cfg)
    assert spec["kwargs"]["in_channels"] == 5 and spec["arch"] == "unet" and new == []
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        same = network.eval()(click_input(x, [[]], [[]], cfg))
        assert torch.allclose(same, network_from(automatic).eval()(x), atol=1e-5)
    # the guidance weights start at zero but learn: a loss on a clicked input reaches them
    network.train()(click_input(x, [[(30, 30)]], [[(5, 5)]], cfg)).mean().backward()
    first = next(p for p in network.parameters() if p.ndim == 4 and p.shape[1] == 5)
    assert first.grad[:, 3:].abs().sum() > 0


def test_a_conv1s_click_network_keeps_the_automatic_weights_and_learns_its_click_stem() -> None:
    automatic = read_checkpoint(shipped_model("unet"))
    cfg = ClickConfig(prev_mask=True, encoding="disk")
    network, spec, new = click_network(automatic, cfg, "conv1s")
    assert spec["kwargs"]["click_fusion"] == "conv1s" and new and all(n.startswith("click_stem.") for n in new)
    state = network.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in automatic["model"].items())
    assert network.click_stem.scale.item() == pytest.approx(0.05)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():  # clicks change the output, through the stem alone
        plain = network.eval()(click_input(x, [[]], [[]], cfg))
        clicked = network(click_input(x, [[(30, 30)]], [[]], cfg))
        assert (clicked - plain).abs().max() > 1e-4
    network.train()(click_input(x, [[(30, 30)]], [[(5, 5)]], cfg)).mean().backward()
    assert network.click_stem.maps[0].weight.grad.abs().sum() > 0


def test_disk_maps_mark_the_pixels_within_the_radius_of_each_kind_of_click() -> None:
    maps = click_maps([(10, 10)], [(30, 40), (50, 5)], (64, 64), ClickConfig(encoding="disk", disk_radius=5))
    assert maps.shape == (2, 64, 64) and set(maps.unique().tolist()) == {0.0, 1.0}
    rows, cols = np.mgrid[:64, :64]
    assert np.array_equal(maps[0].numpy() == 1, (rows - 10) ** 2 + (cols - 10) ** 2 <= 25)
    assert maps[1, 30, 45] == 1 and maps[1, 30, 46] == 0 and maps[1, 50, 5] == 1


def test_the_multi_point_start_puts_positive_clicks_in_the_lesion_and_negative_ones_around_it() -> None:
    truth = np.zeros((64, 64), bool)
    truth[20:44, 20:44] = True
    simulation = ClickSimulation(ClickConfig(p_first=1.0, max_initial=4), seed=1)
    starts = [simulation.initial_clicks(truth) for _ in range(60)]
    assert all(1 <= len(fg) <= 4 and len(bg) <= 3 for fg, bg in starts)
    assert {len(fg) for fg, _ in starts} >= {1, 2, 3} and any(bg for _, bg in starts)
    assert all(truth[r, c] for fg, _ in starts for r, c in fg)
    assert all(not truth[r, c] for _, bg in starts for r, c in bg)
    assert ClickSimulation(ClickConfig(p_first=0.0, max_initial=4)).initial_clicks(truth) == ([], [])


def test_click_simulation_places_clicks_in_the_models_errors() -> None:
    cfg = ClickConfig(sigma=2.0, p_auto=0.0, p_first=1.0, max_iters=2)
    network, _, _ = click_network(read_checkpoint(shipped_model("unet")), cfg)
    images = torch.rand(4, 3, 64, 64)
    labels = torch.zeros(4, 1, 64, 64)
    labels[:, :, 20:44, 20:44] = 1
    inputs = ClickSimulation(cfg, seed=0)(network.train(), images, labels)
    assert inputs.shape == (4, 5, 64, 64) and network.training  # the train mode is restored
    for i in range(4):
        peaks = np.argwhere(inputs[i, 3].numpy() == 1.0)
        assert len(peaks) >= 1 and all(labels[i, 0, r, c] == 1 for r, c in peaks)  # positive clicks: in the lesion
        negatives = np.argwhere(inputs[i, 4].numpy() == 1.0)
        assert all(labels[i, 0, r, c] == 0 for r, c in negatives)  # negative clicks: on skin
    auto = ClickSimulation(ClickConfig(p_auto=1.0), seed=0)(network, images, labels)
    assert not auto[:, 3:].any()  # the automatic mode: no clicks


def test_click_validation_scores_after_each_robot_click() -> None:
    cfg = ClickConfig(sigma=2.0)
    network, _, _ = click_network(read_checkpoint(shipped_model("unet")), cfg)
    labels = torch.zeros(2, 1, 64, 64)
    labels[:, :, 16:48, 16:48] = 1
    scores = ClickValidation(cfg, clicks=2)(network, [{"image": torch.rand(2, 3, 64, 64), "label": labels}], "cpu")
    assert {"iou", "dice", "iou@0", "iou@1", "iou@2"} <= set(scores)
    assert scores["iou"] == pytest.approx(np.mean([scores["iou@0"], scores["iou@1"], scores["iou@2"]]), abs=1e-9)


def test_training_options_follow_the_model_file() -> None:
    assert training_options({}) == {}
    options = training_options({"clicks": ClickConfig(sigma=5.0).as_dict()})
    assert isinstance(options["inputs"], ClickSimulation) and isinstance(options["validate"], ClickValidation)
    assert options["meta"]["clicks"]["sigma"] == 5.0
    assert isinstance(options["loss"], HybridLoss)  # a file of before the loss was named trains as it did
    nfl = training_options({"clicks": ClickConfig(loss="nfl").as_dict()})
    assert isinstance(nfl["loss"], NormalizedFocalLoss) and nfl["meta"]["clicks"]["loss"] == "nfl"
    assert options["zoom_crop"] == 0.0 and training_options({"clicks": {"zoom_crop": 0.5}})["zoom_crop"] == 0.5
    with pytest.raises(ValueError, match="not a click model"):
        ClickConfig.of({})
    with pytest.raises(ValueError, match="unknown click training loss"):
        ClickConfig(loss="dice")


# -- 3D Slicer's points ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_point_on_the_stored_grid_moves_with_the_photograph(orientation: int) -> None:
    stored = np.zeros((5, 7), np.uint8)
    for row, col in [(0, 0), (1, 5), (4, 6), (2, 3)]:
        stored[:] = 0
        stored[row, col] = 1
        expected = tuple(np.argwhere(stored_to_upright(stored, orientation))[0])
        assert stored_point_to_upright(row, col, orientation, (5, 7)) == expected


def test_slicers_points_are_checked() -> None:
    assert checks.click_points([[3, 2, 0], [0, 0]], "foreground", (10, 20)) == [(2, 3), (0, 0)]
    assert checks.click_points("[[19, 9, 0]]", "foreground", (10, 20)) == [(9, 19)]
    assert checks.click_points(None, "background", (10, 20)) == []
    for bad, message in [
        ([[20, 0, 0]], "outside the photograph"),
        ([[0, -3, 0]], "outside the photograph"),
        ([[1, 1, 2]], "slice 2"),
        ([[1, "a", 0]], "[i, j, k] points"),
        ([[1]], "[i, j, k] points"),
        ({"i": 1}, "list of [i, j, k] points"),
        ("not json", "not a list"),
    ]:
        code, detail = refused(lambda bad=bad: checks.click_points(bad, "foreground", (10, 20)))
        assert code == 400 and message in detail and "foreground" in detail, (bad, detail)


def test_the_squared_distance_to_the_nearest_click_by_hand_and_each_call_its_own_copy() -> None:
    grid = nearest_squared_distance([(1, 1), (3, 4)], (4, 5))
    rows, cols = np.mgrid[:4, :5]
    expected = np.minimum((rows - 1) ** 2 + (cols - 1) ** 2, (rows - 3) ** 2 + (cols - 4) ** 2)
    np.testing.assert_array_equal(grid.numpy(), expected)
    grid.fill_(-1.0)  # a caller that writes into its grid must not change the next caller's
    np.testing.assert_array_equal(nearest_squared_distance([(1, 1), (3, 4)], (4, 5)).numpy(), expected)
    assert torch.isinf(nearest_squared_distance([], (4, 5))).all()


def test_clicks_as_seeds_set_a_disk_to_their_label_and_the_nearest_click_wins() -> None:
    probs = torch.full((1, 40, 60), 0.3)
    out = click_constraints(probs, [(10, 10), (20, 30)], [(20, 36)], radius=4)
    assert out.shape == probs.shape and out[0, 10, 10] == 1 and out[0, 10, 14] == 1 and out[0, 10, 15] == 0.3
    assert out[0, 20, 32] == 1 and out[0, 20, 34] == 0 and out[0, 20, 36] == 0  # between the two: the nearer one
    yy, xx = np.mgrid[:40, :60]
    disks = np.zeros((40, 60), bool)
    for r, c in [(10, 10), (20, 30), (20, 36)]:
        disks |= (yy - r) ** 2 + (xx - c) ** 2 <= 16
    assert np.array_equal((out[0] != 0.3).numpy(), disks)  # exactly the disks changed
    assert torch.equal(click_constraints(probs, [(10, 10)], [], radius=0), probs)
    assert torch.equal(click_constraints(probs, [], [], radius=5), probs)


def test_the_click_prior_shifts_the_logits_around_each_click_by_its_strength() -> None:
    probs = torch.full((1, 60, 80), 0.5)
    out = click_prior(probs, [(20, 20)], [(20, 60)], strength=3.0, sigma=5.0)
    logits = torch.logit(out[0], eps=1e-6)
    assert logits[20, 20] == pytest.approx(3.0, abs=1e-4) and logits[20, 60] == pytest.approx(-3.0, abs=1e-4)
    assert logits[20, 25] == pytest.approx(3.0 * np.exp(-0.5), abs=1e-3)  # one sigma away
    assert abs(float(logits[55, 40])) < 1e-3  # far from both clicks: the network's own
    assert logits[20, 20] > logits[20, 22] > logits[20, 30] > 0 > logits[20, 50] > logits[20, 58]
    twice = click_prior(probs, [(20, 20), (20, 20), (21, 20)], [], strength=3.0, sigma=5.0)
    assert torch.logit(twice[0, 20, 20], eps=1e-6) == pytest.approx(3.0, abs=1e-3)  # clicks of a kind do not add up
    sure = click_prior(torch.full((1, 60, 80), 0.999), [], [(20, 60)], strength=3.0, sigma=5.0)
    assert sure[0, 20, 60] > 0.9  # a network that is sure keeps its mind beyond the seed disk
    assert torch.equal(click_prior(probs, [(20, 20)], [], strength=0.0, sigma=5.0), probs)
    assert torch.equal(click_prior(probs, [], [], strength=3.0, sigma=5.0), probs)


def test_a_click_effect_is_its_prior_then_its_seed_disks() -> None:
    probs = torch.rand((1, 50, 50), generator=torch.Generator().manual_seed(0))
    effect = ClickEffect(radius=3, prior=2.0, prior_sigma=8.0, brs_iterations=10)
    expected = click_constraints(click_prior(probs, [(10, 10)], [(40, 40)], 2.0, 8.0), [(10, 10)], [(40, 40)], 3)
    assert torch.equal(effect.apply(probs, [(10, 10)], [(40, 40)]), expected)
    assert effect.describe() == "f-BRS 10 it., seed disks of 3 px, prior 2 logits over 8 px"
    assert ClickEffect(radius=0, prior=0, brs_iterations=0).describe() == "network alone"
    assert torch.equal(ClickEffect(radius=0, prior=0).apply(probs, [(10, 10)], []), probs)


def test_click_options_are_read_from_a_request_and_bad_ones_named() -> None:
    effect = ClickEffect.of({"click_radius": "2", "click_prior": 1.5, "click_brs_iterations": "4.0", "other": "x"})
    assert effect == ClickEffect(radius=2.0, prior=1.5, prior_sigma=ClickEffect().prior_sigma, brs_iterations=4)
    assert isinstance(effect.brs_iterations, int)
    assert ClickEffect.of({}) == ClickEffect()
    for bad in (
        {"click_radius": -3},
        {"click_radius": 65},
        {"click_prior": "strong"},
        {"click_prior": True},
        {"click_prior": float("nan")},
        {"click_prior_sigma": 0},
        {"click_prior_sigma": [5]},
        {"click_brs_iterations": -1},
        {"click_brs_iterations": 2.5},
        {"click_brs_iterations": "many"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ClickEffect.of(bad)
    with pytest.raises(ValueError, match="click_prior must be a number from 0 to 20"):
        ClickEffect(prior=21.0)
