"""Mask clean-up: one lesion region, holes filled, the caller's mask left as it was."""

from __future__ import annotations

import numpy as np
import torch

from lesion_app.core.postprocess import clean_mask


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
