"""Mask clean-up: one lesion region, holes filled, the caller's mask left as it was."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import FillHoles, KeepLargestConnectedComponent

from lesion_app.core.postprocess import clean_mask
from lesion_app.io.images import read_mask
from tests.support.paths import SAMPLE_DATA


def ring_and_speck() -> np.ndarray:
    """A 12x12 ring (a lesion with a hole) and a 2x2 speck apart from it."""
    mask = np.zeros((32, 32), np.uint8)
    mask[4:16, 4:16] = 1
    mask[8:12, 8:12] = 0
    mask[25:27, 25:27] = 1
    return mask


def test_keeps_the_largest_region_with_its_holes_filled() -> None:
    cleaned = clean_mask(ring_and_speck())
    expected = np.zeros((32, 32), np.uint8)
    expected[4:16, 4:16] = 1
    assert cleaned.dtype == np.uint8 and np.array_equal(cleaned, expected)


def test_the_input_mask_is_not_modified() -> None:
    mask = ring_and_speck()
    before = mask.copy()
    clean_mask(mask)
    assert np.array_equal(mask, before)
    tensor = torch.as_tensor(before.copy())
    clean_mask(tensor)
    assert np.array_equal(tensor.numpy(), before)


def test_an_empty_mask_stays_empty_and_diagonal_neighbours_are_one_region() -> None:
    assert not clean_mask(np.zeros((8, 8), np.uint8)).any()
    diagonal = np.eye(6, dtype=np.uint8)
    assert np.array_equal(clean_mask(diagonal), diagonal)


def test_a_negative_click_keeps_its_hole_open_and_other_holes_still_fill() -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[4:28, 4:28] = 1
    mask[8:12, 8:12] = 0  # a hole a negative click cut
    mask[18:22, 18:22] = 0  # a hole nobody clicked in
    cleaned = clean_mask(mask, holes=[(10, 10)])
    assert not cleaned[8:12, 8:12].any()
    assert cleaned[18:22, 18:22].all()
    assert cleaned.sum() == 24 * 24 - 16


def test_hole_points_on_the_lesion_or_on_open_skin_change_nothing() -> None:
    mask = ring_and_speck()
    assert np.array_equal(clean_mask(mask, holes=[(5, 5), (0, 0)]), clean_mask(mask))


def test_agrees_with_monais_transforms_on_the_datas_own_masks_made_ragged() -> None:
    """The clean-up is MONAI's KeepLargestConnectedComponent (8-connected) then FillHoles (4-connected background),
    computed faster: on sample-data's expert masks with specks, holes and cut-off pieces added, both agree."""
    keep_largest = KeepLargestConnectedComponent(applied_labels=[1], connectivity=2)
    fill_holes = FillHoles(applied_labels=[1], connectivity=1)
    rng = np.random.default_rng(0)
    labels = sorted((SAMPLE_DATA / "labels" / "final").glob("*.png"))[:8]
    assert labels
    for path in labels:
        mask = (read_mask(path) > 0).astype(np.uint8)
        noise = rng.random(mask.shape)
        ragged = np.where(noise < 0.02, 1 - mask, mask).astype(np.uint8)  # specks outside, holes inside
        ragged[:, : mask.shape[1] // 8] = (noise[:, : mask.shape[1] // 8] < 0.5).astype(np.uint8)  # a noisy edge
        expected = fill_holes(keep_largest(torch.tensor(ragged)[None]))[0].numpy().astype(np.uint8)
        assert np.array_equal(clean_mask(ragged), expected), path.name
