"""Photographs as DICOM, their cached NRRD, and lesion masks as DICOM SEG (highdicom) and back."""

from __future__ import annotations

from pathlib import Path

import itk
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from apps.make_sample_data import draw_study
from lesion_app.core.transforms import infer_transforms, load_transforms
from lesion_app.io.dicom import (
    SECONDARY_CAPTURE,
    FrameGeometry,
    PhotoUids,
    dicom_to_rgb,
    mask_to_seg,
    photo_to_dicom,
    seg_to_mask,
    write_photo_nrrd,
)
from lesion_app.io.images import itk_geometry, read_itk_slice, read_mask, to_rgb
from lesion_app.server.checks import image_size

SHAPE = (90, 140)  # (H, W): not square, so a transposed array cannot pass


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    img, _ = draw_study(np.random.default_rng(3), SHAPE)
    path = tmp_path / "photo.jpg"
    Image.fromarray(img).save(path, quality=92)
    return path


@pytest.fixture()
def sideways(tmp_path: Path) -> Path:
    """Stored turned a quarter; EXIF orientation 6 turns it upright (as phones write)."""
    img, _ = draw_study(np.random.default_rng(4), SHAPE)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(img).transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    return path


def corner_mask(shape: tuple[int, int]) -> np.ndarray:
    """An L in the top-left quarter: any flip or transpose moves it."""
    m = np.zeros(shape, np.uint8)
    h, w = shape
    m[5 : h // 2, 8:20] = 1
    m[h // 2 - 10 : h // 2, 8 : w // 2] = 1
    return m


def test_uids_are_stable_per_key_and_distinct_between_keys() -> None:
    a, b, c = PhotoUids.from_key("P1/a.jpg"), PhotoUids.from_key("P1/a.jpg"), PhotoUids.from_key("P1/b.jpg")
    assert a == b
    assert len({a.study, a.series, a.instance, a.frame_of_reference, c.study, c.series}) == 6
    assert all(len(u) <= 64 and u.replace(".", "").isdigit() for u in (a.study, a.series, a.instance))


def test_photo_to_dicom_keeps_every_pixel_and_the_seg_geometry(photo: Path, tmp_path: Path) -> None:
    uids = PhotoUids.from_key("photo")
    ds = photo_to_dicom(photo, uids, "P0001", spacing_mm=0.02)
    out = tmp_path / "photo.dcm"
    ds.save_as(out, write_like_original=False)
    back = pydicom.dcmread(out)  # a conformant file: preamble, DICM, file meta
    assert back.SOPClassUID == SECONDARY_CAPTURE and back.Modality == "XC"
    assert (back.StudyInstanceUID, back.SeriesInstanceUID, back.SOPInstanceUID) == (
        uids.study,
        uids.series,
        uids.instance,
    )
    assert back.FrameOfReferenceUID == uids.frame_of_reference
    assert [float(x) for x in back.PixelSpacing] == [0.02, 0.02]
    assert [float(x) for x in back.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert len(back.ImagePositionPatient) == 3 and back.LossyImageCompression == "01"
    with Image.open(photo) as img:
        expected = np.asarray(to_rgb(img))
    assert np.array_equal(back.pixel_array, expected)
    assert np.array_equal(dicom_to_rgb(back), expected)


def test_an_exif_rotated_photograph_is_stored_upright(sideways: Path) -> None:
    ds = photo_to_dicom(sideways, PhotoUids.from_key("s"), "P")
    assert (ds.Rows, ds.Columns) == SHAPE
    with Image.open(sideways) as img:
        assert np.array_equal(ds.pixel_array, np.asarray(to_rgb(img)))


def test_dicom_to_rgb_takes_grey_frames_and_refuses_several(photo: Path) -> None:
    ds = photo_to_dicom(photo, PhotoUids.from_key("g"), "P")
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300  # 12-bit data: scaled into 0-255
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 4, 16, 12, 11
    ds.PixelData = grey.tobytes()
    rgb = dicom_to_rgb(ds)
    assert rgb.shape == (3, 4, 3) and rgb[..., 0].max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()
    ds.NumberOfFrames = 2
    with pytest.raises(ValueError, match="2 frames"):
        dicom_to_rgb(ds)


def test_frame_geometry_reads_the_image_plane_and_defaults_when_missing() -> None:
    ds = Dataset()
    ds.PixelSpacing = [0.5, 0.25]  # row spacing, column spacing
    ds.ImagePositionPatient = [10, 20, 30]
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    g = FrameGeometry.of(ds)
    assert g.spacing == (0.25, 0.5) and g.origin == (10.0, 20.0, 30.0)
    assert np.allclose(g.direction, [[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    plain = FrameGeometry.of(Dataset())
    assert plain.spacing == (1.0, 1.0) and np.allclose(plain.direction, np.eye(3))


def test_cached_nrrd_reads_like_the_photograph_with_the_frames_geometry(photo: Path, tmp_path: Path) -> None:
    ds = photo_to_dicom(photo, PhotoUids.from_key("n"), "P", spacing_mm=0.05)
    ds.ImagePositionPatient = [3.0, 4.0, 0.0]
    nrrd = tmp_path / "photo.nrrd"
    write_photo_nrrd(dicom_to_rgb(ds), FrameGeometry.of(ds), nrrd)
    assert np.array_equal(read_itk_slice(nrrd), ds.pixel_array)
    spacing, origin, direction = itk_geometry(nrrd)
    assert np.allclose(spacing, [0.05, 0.05]) and np.allclose(origin, [3, 4]) and np.allclose(direction, np.eye(2))
    assert image_size(nrrd) == SHAPE
    # the app's loader reads the NRRD exactly as it reads the JPEG's pixels
    from monai.transforms import Compose

    from_nrrd = Compose(load_transforms(label_key=None))({"image": str(nrrd)})["image"]
    assert tuple(from_nrrd.shape) == (3, *SHAPE)
    assert np.array_equal(np.asarray(from_nrrd).transpose(1, 2, 0), ds.pixel_array)
    assert tuple(infer_transforms((64, 64))({"image": str(nrrd)})["image"].shape) == (3, 64, 64)


def test_mask_to_seg_and_back_is_pixel_exact(photo: Path, tmp_path: Path) -> None:
    source = tmp_path / "series"
    source.mkdir()
    ds = photo_to_dicom(photo, PhotoUids.from_key("seg"), "P")
    ds.save_as(source / "photo.dcm", write_like_original=False)
    mask = corner_mask(SHAPE)
    out = tmp_path / "seg.dcm"
    mask_to_seg(mask, source, out, "unet")
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SeriesDescription == "unet"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ds.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert np.array_equal(seg_to_mask(seg, *SHAPE), mask)


def test_an_empty_mask_is_a_no_lesion_seg_with_its_annotator(photo: Path, tmp_path: Path) -> None:
    source = tmp_path / "series"
    source.mkdir()
    photo_to_dicom(photo, PhotoUids.from_key("e"), "P").save_as(source / "p.dcm", write_like_original=False)
    mask_to_seg(np.zeros(SHAPE, np.uint8), source, tmp_path / "x.dcm", creator="Dr Ada")
    seg = pydicom.dcmread(tmp_path / "x.dcm")
    assert seg.ContentCreatorName == "Dr Ada" and int(seg.NumberOfFrames) == 1
    assert not seg_to_mask(seg, *SHAPE).any()
    with pytest.raises(ValueError, match="0 DICOM files"):
        mask_to_seg(corner_mask(SHAPE), tmp_path / "nothing", tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="the mask is 90x140"):
        mask_to_seg(corner_mask(SHAPE).T, source, tmp_path / "x.dcm")


def test_seg_to_mask_refuses_a_seg_for_another_grid(photo: Path, tmp_path: Path) -> None:
    source = tmp_path / "series"
    source.mkdir()
    photo_to_dicom(photo, PhotoUids.from_key("o"), "P").save_as(source / "p.dcm", write_like_original=False)
    mask_to_seg(corner_mask(SHAPE), source, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    with pytest.raises(ValueError, match="140x90"):
        seg_to_mask(seg, SHAPE[1], SHAPE[0])
    with pytest.raises(ValueError, match="not a segmentation"):
        seg_to_mask(photo_to_dicom(photo, PhotoUids.from_key("o"), "P"), *SHAPE)


def test_single_slice_label_volume_reads_as_a_2d_mask(tmp_path: Path) -> None:
    """What dcmqi and Slicer exchange: a (W, H, 1) volume; the app reads its one slice."""
    mask = corner_mask(SHAPE)
    image = itk.image_from_array(np.ascontiguousarray(mask[None]))
    itk.imwrite(image, str(tmp_path / "m.nrrd"))
    assert np.array_equal(read_mask(tmp_path / "m.nrrd"), mask.astype(bool))
    volume = itk.image_from_array(np.zeros((2, *SHAPE), np.uint8))
    itk.imwrite(volume, str(tmp_path / "v.nrrd"))
    with pytest.raises(ValueError, match="not one 2D slice"):
        read_itk_slice(tmp_path / "v.nrrd")
