"""DICOM SEGs as other tools write them, built with pydicom: OHIF 3.13's label-map SEG (RLE), classic BINARY and
FRACTIONAL SEGs (OHIF's bitmap mode, highdicom, dcmqi), with several segments, for another grid, or empty."""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.pixel_data_handlers.numpy_handler import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from lesion_app.io.seg import CLASSIC_SEG, LABELMAP_SEG


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _segment(number: int, label: str) -> Dataset:
    s = Dataset()
    s.SegmentNumber, s.SegmentLabel, s.SegmentAlgorithmType = number, label, "MANUAL"
    s.SegmentedPropertyCategoryCodeSequence = Sequence([_code("T-D0050", "SRT", "Tissue")])
    s.SegmentedPropertyTypeCodeSequence = Sequence([_code("T-D0050", "SRT", "Tissue")])
    return s


def _frame(photo_sop: str, segment: int | None) -> Dataset:
    item = Dataset()
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", photo_sop
    derivation = Dataset()
    derivation.SourceImageSequence = Sequence([source])
    item.DerivationImageSequence = Sequence([derivation])
    position = Dataset()
    position.ImagePositionPatient = [0.0, 0.0, 0.0]
    item.PlanePositionSequence = Sequence([position])
    if segment is not None:
        ident = Dataset()
        ident.ReferencedSegmentNumber = segment
        item.SegmentIdentificationSequence = Sequence([ident])
    return item


def make_seg(
    photo: Dataset,
    segments: dict[int, tuple[str, np.ndarray]],
    flavour: str = "labelmap",
    description: str = "lesion correction",
    creator: str = "",
    referenced_series: str | None = None,
    when: dt.datetime | None = None,
) -> FileDataset:
    """A SEG on ``photo`` (its study) with ``segments`` {number: (label, (rows, columns) 0/1 mask)}.

    ``flavour``: ``labelmap`` (SOP class ...66.7, 8-bit, RLE Lossless, no per-frame segment identification: what
    OHIF 3.13 saves), ``binary`` (classic, 1 bit, one frame per segment) or ``fractional`` (classic, 8 bit, 0-255).
    ``referenced_series`` replaces the photograph's series in ReferencedSeriesSequence.
    """
    when = when or dt.datetime.now()
    rows, columns = next(iter(segments.values()))[1].shape
    sop_class = LABELMAP_SEG if flavour == "labelmap" else CLASSIC_SEG
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("seg.dcm", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SEG"
    for k in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "FrameOfReferenceUID"):
        setattr(ds, k, photo.get(k, ""))
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 3101, 1
    ds.SeriesDescription, ds.ContentCreatorName = description, creator
    ds.ContentLabel = "SEGMENTATION"
    ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S")
    instance = Dataset()
    instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = photo.SOPClassUID, photo.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = referenced_series or photo.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([instance, instance])  # OHIF lists it twice
    ds.ReferencedSeriesSequence = Sequence([series])
    ds.SegmentSequence = Sequence([_segment(n, label) for n, (label, _) in sorted(segments.items())])
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.PixelRepresentation = 0
    if flavour == "labelmap":
        ds.SegmentationType = "LABELMAP"
        frame = np.zeros((rows, columns), np.uint8)
        for n, (_, mask) in sorted(segments.items()):
            frame[mask.astype(bool)] = n
        ds.PerFrameFunctionalGroupsSequence = Sequence([_frame(photo.SOPInstanceUID, None)])
        ds.NumberOfFrames = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.compress(RLELossless, frame)
        return ds
    frames = [mask for _, (_, mask) in sorted(segments.items())]
    ds.PerFrameFunctionalGroupsSequence = Sequence([_frame(photo.SOPInstanceUID, n) for n in sorted(segments)])
    ds.NumberOfFrames = len(frames)
    stack = np.stack(frames).astype(np.uint8)
    if flavour == "binary":
        ds.SegmentationType = "BINARY"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
        ds.PixelData = pack_bits(stack.ravel())
    else:
        ds.SegmentationType, ds.SegmentationFractionalType, ds.MaximumFractionalValue = "FRACTIONAL", "PROBABILITY", 255
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = (stack * 255).tobytes()
    return ds


def photo_dataset(rows: int = 48, columns: int = 64) -> Dataset:
    """A stand-in photograph's header (what a SEG refers to)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Rows, ds.Columns = "P1", "P1", rows, columns
    return ds
