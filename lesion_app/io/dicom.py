"""Dermoscopic photographs as DICOM, so a PACS or a DICOMweb server (Orthanc) can hold them for OHIF.

A photograph becomes one single-frame RGB Secondary Capture instance in a series and study of its own. The
Image Plane attributes a DICOM SEG needs (FrameOfReferenceUID, ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) are set, so the app can save labels back as DICOM SEG (highdicom). Pixels are stored upright
(EXIF orientation applied), exactly as the app and photo viewers show the file, so a mask on the photograph is
a mask on the DICOM frame.

UIDs are derived from a key (by default the file's name) with :func:`pydicom.uid.generate_uid`'s entropy
sources, so importing the same file twice gives the same UIDs and the server keeps one copy.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from lesion_app.io.images import open_image, to_rgb
from lesion_app.io.seg import APP_CREATOR, PROPOSAL_DESCRIPTION

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: External-camera photography: what dermoscopic photographs are in DICOM's modality list. The app's DICOMweb
#: search filter (``--conf dicomweb_modality``) lists this modality only.
MODALITY = "XC"
#: Photographs carry no calibration; without one, one millimetre per pixel keeps masks on the pixel grid (DICOM SEG
#: needs a spacing) and a private element marks it as no measurement (:func:`calibrated_spacing_mm`).
UNKNOWN_SPACING_MM = 1.0
#: The private block (group 0009, creator ``lesion_app``) whose element 01 holds :data:`SPACING_PLACEHOLDER` where
#: PixelSpacing is the placeholder. DICOM's calibration attributes cannot say "unknown": PixelSpacingCalibrationType
#: is GEOMETRY or FIDUCIAL, and its description may not appear without it.
PRIVATE_GROUP, PRIVATE_CREATOR, SPACING_ELEMENT = 0x0009, "lesion_app", 0x01
SPACING_PLACEHOLDER = "UNCALIBRATED"


@dataclass(frozen=True)
class PhotoUids:
    """The study, series, instance and frame-of-reference UIDs of one photograph's DICOM instance."""

    study: str
    series: str
    instance: str
    frame_of_reference: str

    @classmethod
    def from_key(cls, key: str) -> PhotoUids:
        """The same key gives the same UIDs, on any machine."""

        def uid(kind: str) -> str:
            return str(generate_uid(entropy_srcs=["lesion_app", kind, key]))

        return cls(uid("study"), uid("series"), uid("instance"), uid("frame"))


def photo_to_dicom(
    path: str | os.PathLike,
    uids: PhotoUids,
    patient_id: str,
    patient_name: str = "",
    spacing_mm: float | None = None,
    modality: str = MODALITY,
    description: str = "Dermoscopy",
) -> Dataset:
    """One RGB Secondary Capture instance of the photograph at ``path``, upright, uncompressed.

    ``spacing_mm`` (mm per pixel) is the dermoscope's calibration; None writes the 1 mm placeholder, marked as such
    in a private element (:data:`PRIVATE_CREATOR`) so that :func:`calibrated_spacing_mm` reads it as unknown.
    """
    with open_image(path) as img:
        lossy = img.format == "JPEG"
        rgb = to_rgb(img)
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    rows, columns = pixels.shape[:2]
    now = dt.datetime.now()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = uids.instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    # A file dataset with the 128-byte preamble and "DICM": what STOW-RS sends is stored and served as it came,
    # and DICOMweb clients (pydicom) refuse a part without them.
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, uids.instance
    ds.SpecificCharacterSet = "ISO_IR 192"
    # Patient and study
    ds.PatientName = patient_name or patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyInstanceUID = uids.study
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.StudyDescription = description
    # Series and equipment
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Modality = modality
    ds.SeriesDescription = Path(path).name[:64]
    ds.BodyPartExamined = "SKIN"
    ds.ConversionType = "WSD"  # workstation: converted from a file, not captured by this software
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    # Frame of reference and image plane: what a DICOM SEG needs to place a mask on this frame
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    spacing = UNKNOWN_SPACING_MM if spacing_mm is None else float(spacing_mm)
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = spacing
    if spacing_mm is None:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(SPACING_ELEMENT, "CS", SPACING_PLACEHOLDER)
    # Pixels
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01" if lossy else "00"
    ds.PixelData = pixels.tobytes()
    return ds


def calibrated_spacing_mm(ds: Dataset) -> float | None:
    """A photograph's pixel spacing in mm when it is a calibration: PixelSpacing, else ImagerPixelSpacing.

    None (unknown) for the placeholder :func:`photo_to_dicom` marks (:data:`SPACING_PLACEHOLDER`), for exactly 1 mm
    without PixelSpacingCalibrationType (what this app's imports wrote before the mark, and converters that know
    nothing: no dermoscope sees 1 mm per pixel), for non-square pixels and for values that are not positive numbers.
    """
    try:
        marked = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[SPACING_ELEMENT].value == SPACING_PLACEHOLDER
    except KeyError:
        marked = False
    if marked:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = ds.get(keyword)
        if not values:
            continue
        try:
            row, col = (float(v) for v in values)
        except (TypeError, ValueError):
            return None
        if row == col == UNKNOWN_SPACING_MM and not ds.get("PixelSpacingCalibrationType"):
            return None
        if not (row > 0 and np.isfinite(row) and abs(row - col) <= 1e-6 * row):
            return None
        return row
    return None


def dicom_to_rgb(ds: Dataset) -> np.ndarray:
    """(Rows, Columns, 3) uint8 pixels of a single-frame colour or grey image, rows first as stored."""
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"{int(ds.NumberOfFrames)} frames; a dermoscopic photograph has one")
    arr = ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", "RGB"))
    if photometric.startswith("YBR"):
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    if arr.ndim == 2:
        top = float(arr.max()) if arr.size else 0.0
        scaled = arr.astype(np.float64) * (255.0 / top) if top > 255 else arr
        if photometric == "MONOCHROME1":
            scaled = (top if top > 255 else 255) - scaled
        arr = np.repeat(np.clip(scaled, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"pixel array of shape {arr.shape} is not one RGB or grey frame")
    return np.ascontiguousarray(arr.astype(np.uint8))


@dataclass(frozen=True)
class FrameGeometry:
    """Where a single-frame image lies, from its Image Plane attributes (LPS, millimetres).

    ``spacing`` is (column, row) spacing, that is ITK's (x, y); ``direction``'s columns are the row
    direction, the column direction and their normal, as ITK stores a 3D direction.
    """

    spacing: tuple[float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @classmethod
    def of(cls, ds: Dataset) -> FrameGeometry:
        """Missing attributes get DICOM's neutral values: unit spacing, zero origin, axis-aligned."""
        row_spacing, col_spacing = (float(x) for x in getattr(ds, "PixelSpacing", None) or (1.0, 1.0))
        origin = tuple(float(x) for x in getattr(ds, "ImagePositionPatient", None) or (0.0, 0.0, 0.0))
        iop = [float(x) for x in getattr(ds, "ImageOrientationPatient", None) or (1, 0, 0, 0, 1, 0)]
        row, col = np.array(iop[:3]), np.array(iop[3:])
        direction = np.stack([row, col, np.cross(row, col)], axis=1)
        return cls((col_spacing, row_spacing), (origin[0], origin[1], origin[2]), direction)

    def apply(self, image: Any, dims: int) -> Any:
        """Sets this geometry on an ITK image of 2 (the photograph) or 3 (a one-slice label) dimensions."""
        import itk

        spacing = [*self.spacing, 1.0][:dims]
        image.SetSpacing(spacing)
        image.SetOrigin(list(self.origin[:dims]))
        image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(self.direction[:dims, :dims], dtype=np.float64)))
        return image


def write_photo_nrrd(rgb: np.ndarray, geometry: FrameGeometry, dest: str | os.PathLike) -> None:
    """The photograph as a 2D RGB NRRD on its DICOM frame: what the app reads and lays results on."""
    import itk

    image = itk.image_from_array(np.ascontiguousarray(rgb, dtype=np.uint8), is_vector=True)
    itk.imwrite(geometry.apply(image, 2), str(dest), compression=True)


#: The segment every lesion SEG holds (SNOMED CT: a lesion, a morphologically altered structure, on the skin).
LESION_CATEGORY = ("49755003", "SCT", "Morphologically Altered Structure")
LESION_TYPE = ("52988006", "SCT", "Lesion")
SKIN = ("39937001", "SCT", "Skin")
#: What the SEG says made it (its equipment module and the segment's algorithm identification).
SEG_SOFTWARE = ("lesion_app", "1")


def mask_to_seg(
    mask: np.ndarray,
    source_dir: str | os.PathLike,
    dest: str | os.PathLike,
    series_description: str = "lesion",
    algorithm_type: str = "SEMIAUTOMATIC",
    creator: str = APP_CREATOR,
) -> Dataset:
    """A (H, W) 0/1 mask on a photograph's DICOM frame as a classic binary DICOM SEG referencing it, written with
    highdicom (1 bit, Explicit VR Little Endian: what OHIF, 3D Slicer and :mod:`lesion_app.io.seg` read).

    An empty mask is a valid SEG ("no lesion"): its one frame is stored all zero. ``ContentCreatorName`` is
    ``creator`` (the annotator; ``lesion_app`` for the model's proposal); ``series_description`` and
    ``algorithm_type`` (the segment's ``SegmentAlgorithmType``) say what the mask is (:func:`proposal_to_seg`).
    Returns the SEG as written to ``dest``. Raises ValueError when ``source_dir`` does not hold exactly the
    photograph's one instance, or the mask is not on its grid.
    """
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    files = sorted(Path(source_dir).glob("*.dcm"))
    if len(files) != 1:
        raise ValueError(f"{source_dir} holds {len(files)} DICOM files; expected the photograph's one instance")
    source = dcmread(str(files[0]))
    if tuple(mask.shape) != (int(source.Rows), int(source.Columns)):
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]}, the photograph {source.Columns}x{source.Rows}")
    # a JPEG's photograph says "lossy" without a ratio (unknown), which highdicom wants to copy: said afterwards
    lossy = str(source.get("LossyImageCompression", "")) == "01"
    if lossy and "LossyImageCompressionRatio" not in source:
        del source.LossyImageCompression
    kind = hd.seg.SegmentAlgorithmTypeValues[algorithm_type]
    algorithm = None
    if kind != hd.seg.SegmentAlgorithmTypeValues.MANUAL:
        name, version = SEG_SOFTWARE
        algorithm = hd.AlgorithmIdentificationSequence(name, codes.cid7162.ArtificialIntelligence, version)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=Code(*LESION_CATEGORY),
        segmented_property_type=Code(*LESION_TYPE),
        algorithm_type=kind,
        algorithm_identification=algorithm,
        anatomic_regions=[Code(*SKIN)],
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=np.asarray(mask, dtype=bool)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SEG_SOFTWARE[0],
        manufacturer_model_name=SEG_SOFTWARE[0],
        software_versions=SEG_SOFTWARE[1],
        device_serial_number="1",
        content_label="LESION",
        content_description="Skin lesion segmentation",
        content_creator_name=creator or APP_CREATOR,
        series_description=series_description[:64],
        omit_empty_frames=False,  # "no lesion": one all-zero frame, not a SEG without frames
    )
    if lossy:
        seg.LossyImageCompression = "01"
    seg.save_as(str(dest))
    return seg


def proposal_to_seg(mask: np.ndarray, source_dir: str | os.PathLike, dest: str | os.PathLike) -> Dataset:
    """The model's proposal as a SEG marked as such (:func:`lesion_app.io.seg.is_proposal` is true for it)."""
    return mask_to_seg(mask, source_dir, dest, PROPOSAL_DESCRIPTION, algorithm_type="AUTOMATIC")


def seg_to_mask(ds: Dataset, rows: int, columns: int) -> np.ndarray:
    """The union of a SEG's segments as a (rows, columns) 0/1 mask; a SEG for another grid is refused."""
    if str(getattr(ds, "Modality", "")) != "SEG":
        raise ValueError(f"not a segmentation (Modality {getattr(ds, 'Modality', None)!r})")
    if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
        raise ValueError(f"the SEG is {ds.Columns}x{ds.Rows} but its image is {columns}x{rows}")
    frames = np.asarray(ds.pixel_array)
    frames = frames.reshape(-1, rows, columns)
    return (frames > 0).any(axis=0).astype(np.uint8)
