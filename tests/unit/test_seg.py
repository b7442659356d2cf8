"""Lesion masks from every SEG flavour (OHIF's label map, classic binary and fractional, dcmqi's), the lesion
segment found by label or number, frames matched to the photograph, odd SEGs reported as values, proposals told
apart."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from apps.make_sample_data import draw_study
from lesion_app.io.dicom import PhotoUids, mask_to_seg, photo_to_dicom, proposal_to_seg
from lesion_app.io.seg import check_seg, is_proposal, lesion_segment, read_lesion, referenced_series
from tests.support.segs import make_seg, photo_dataset

ROWS, COLUMNS = 48, 64


def l_shape() -> np.ndarray:
    m = np.zeros((ROWS, COLUMNS), np.uint8)
    m[5:30, 6:14] = 1
    m[22:30, 6:40] = 1
    return m


def round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    """As stored and read back (what a DICOMweb server returns)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, write_like_original=False)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("flavour", ["labelmap", "binary", "fractional"])
def test_every_flavour_reads_the_lesion_pixel_for_pixel(flavour: str) -> None:
    photo = photo_dataset(ROWS, COLUMNS)
    seg = round_trip(make_seg(photo, {1: ("Lesion", l_shape())}, flavour))
    if flavour == "labelmap":
        assert seg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE Lossless, as OHIF stores it
    reading = read_lesion(seg, ROWS, COLUMNS, photo.SOPInstanceUID)
    assert reading.problems == [] and reading.segment == 1
    assert np.array_equal(reading.mask, l_shape())


@pytest.mark.parametrize("flavour", ["labelmap", "binary"])
def test_the_lesion_segment_is_found_by_label_else_number_one(flavour: str) -> None:
    photo = photo_dataset(ROWS, COLUMNS)
    other = np.zeros((ROWS, COLUMNS), np.uint8)
    other[40:, 50:] = 1
    by_label = make_seg(photo, {1: ("Segment 1", other), 2: ("LESION", l_shape())}, flavour)
    reading = read_lesion(round_trip(by_label), ROWS, COLUMNS, photo.SOPInstanceUID)
    assert reading.segment == 2 and np.array_equal(reading.mask, l_shape())
    assert "2 segments" in reading.problems[0] and "segment 2 was read" in reading.problems[0]
    by_number = make_seg(photo, {1: ("Segment 1", l_shape()), 2: ("Segment 2", other)}, flavour)
    assert read_lesion(round_trip(by_number), ROWS, COLUMNS).segment == 1
    lone = make_seg(photo, {3: ("Segment 3", l_shape())}, flavour)
    assert lesion_segment(lone) == (3, [])
    neither = make_seg(photo, {2: ("a", l_shape()), 3: ("b", other)}, flavour)
    reading = read_lesion(round_trip(neither), ROWS, COLUMNS)
    assert reading.mask is None and "numbered 1" in reading.problems[0]


def test_odd_segs_are_values_not_exceptions() -> None:
    photo = photo_dataset(ROWS, COLUMNS)
    seg = make_seg(photo, {1: ("lesion", l_shape())})
    wrong = read_lesion(round_trip(seg), COLUMNS, ROWS)  # the photograph is the other way round
    assert wrong.mask is None and "64x48" in wrong.problems[0] and "48x64" in wrong.problems[0]
    assert not check_seg(seg, COLUMNS, ROWS).usable
    empty = read_lesion(round_trip(make_seg(photo, {1: ("lesion", np.zeros((ROWS, COLUMNS)))})), ROWS, COLUMNS)
    assert empty.empty and empty.mask.shape == (ROWS, COLUMNS) and empty.problems == ["it is empty: no lesion"]
    elsewhere = read_lesion(round_trip(seg), ROWS, COLUMNS, photo_sop="1.2.3.4")  # frames on another image
    assert elsewhere.empty and "1 of its 1 frames lie on other images" in elsewhere.problems[0]
    broken = round_trip(seg)
    broken.PixelData = b"\x00" * 10
    assert "cannot be decoded" in read_lesion(broken, ROWS, COLUMNS).problems[-1]
    photo_itself = photo_dataset(ROWS, COLUMNS)
    photo_itself.Modality = "XC"
    assert "not a segmentation" in read_lesion(photo_itself, ROWS, COLUMNS).problems[0]


def test_the_apps_proposal_is_marked_and_nothing_else_is(tmp_path: Path) -> None:
    """dcmqi keeps the SeriesDescription and ContentCreatorName that mark a proposal (it replaces ContentLabel);
    the app's final labels, OHIF's saves and a correction named like a proposal are not proposals."""
    img, truth = draw_study(np.random.default_rng(5), (90, 140))
    Image.fromarray(img).save(tmp_path / "photo.png")
    source = tmp_path / "series"
    source.mkdir()
    photo = photo_to_dicom(tmp_path / "photo.png", PhotoUids.from_key("p"), "P")
    photo.save_as(source / "photo.dcm", write_like_original=False)
    mask = (truth > 0).astype(np.uint8)
    proposal_to_seg(mask, source, tmp_path / "proposal.dcm")
    mask_to_seg(mask, source, tmp_path / "final.dcm", "unet")
    proposal, final = pydicom.dcmread(tmp_path / "proposal.dcm"), pydicom.dcmread(tmp_path / "final.dcm")
    assert is_proposal(proposal) and proposal.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert not is_proposal(final) and final.ContentCreatorName == "lesion_app"
    assert referenced_series(proposal) == [photo.SeriesInstanceUID]
    assert np.array_equal(read_lesion(proposal, 90, 140, photo.SOPInstanceUID).mask, mask)
    assert not is_proposal(make_seg(photo, {1: ("lesion", mask)}, description="lesion_app proposal"))
