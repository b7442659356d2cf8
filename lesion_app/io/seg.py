"""Lesion masks read from DICOM SEGs, whichever tool wrote them, and the app's proposals told apart.

The SEG flavours read, all with pydicom:

- classic SEG (SOP class 1.2.840.10008.5.1.4.1.1.66.4), ``BINARY`` (1 bit) or ``FRACTIONAL`` (8 bit, a pixel is
  set above half of ``MaximumFractionalValue``): each frame belongs to the one segment its
  ``SegmentIdentificationSequence`` names. highdicom (the app's own SEGs), OHIF's bitmap mode and dcmqi write it.
- label-map SEG (1.2.840.10008.5.1.4.1.1.66.7, ``LABELMAP``; OHIF 3.13's default, RLE Lossless): a pixel's value
  is its segment number.

The lesion segment is found by its ``SegmentLabel`` ("lesion", any case), else it is the only segment, else
``SegmentNumber`` 1; never by its coding (OHIF replaces a loaded segment's codes with a generic "Tissue").
Frames are matched to the photograph by the SOP instance their derivation references.

What is odd about a SEG (another size, several segments, nothing on the photograph, empty) is returned as text
beside the result, never raised: a viewer may store anything, and one odd SEG must not stop the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

CLASSIC_SEG = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"
#: The SeriesDescription and ContentCreatorName that mark a SEG as the app's proposal (both must match; dcmqi
#: keeps both, while it replaces ContentLabel and ContentDescription with its own "DCMQI").
PROPOSAL_DESCRIPTION = "lesion_app proposal"
APP_CREATOR = "lesion_app"
LESION_LABEL = "lesion"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip() if value is not None else ""


def is_proposal(ds: Dataset) -> bool:
    """True for a SEG the app stored as its model's proposal; such a SEG is never a label."""
    return _text(ds, "SeriesDescription") == PROPOSAL_DESCRIPTION and _text(ds, "ContentCreatorName") == APP_CREATOR


def referenced_series(ds: Dataset) -> list[str]:
    """The SeriesInstanceUIDs of the images a SEG refers to (``ReferencedSeriesSequence``), in order."""
    return [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence") or [] if "SeriesInstanceUID" in s]


def segments(ds: Dataset) -> list[tuple[int, str]]:
    """(SegmentNumber, SegmentLabel) of every segment the SEG declares."""
    return [(int(s.SegmentNumber), _text(s, "SegmentLabel")) for s in ds.get("SegmentSequence") or []]


def lesion_segment(ds: Dataset) -> tuple[int | None, list[str]]:
    """The lesion segment's number (None if there is none to take) and what is odd about the choice."""
    found = segments(ds)
    if not found:
        return None, ["it declares no segment"]
    labelled = [n for n, label in found if label.lower() == LESION_LABEL]
    if labelled:
        number = labelled[0]
    elif len(found) == 1:
        number = found[0][0]
    elif any(n == 1 for n, _ in found):
        number = 1
    else:
        return None, [f"none of its {len(found)} segments is labelled {LESION_LABEL!r} or numbered 1"]
    notes = []
    if len(found) > 1:
        names = ", ".join(f"{n} {label!r}" for n, label in found)
        notes.append(f"it has {len(found)} segments ({names}); segment {number} was read")
    return number, notes


@dataclass(frozen=True)
class SegCheck:
    """What a SEG's header says about its use as a lesion label on a photograph of (rows, columns).

    ``segment`` is the lesion segment's number, or None when the SEG cannot be a label; ``problems`` says what is
    odd (with ``segment`` None: why it cannot be used).
    """

    segment: int | None
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Whether a lesion segment was found, so the SEG can be read as a label."""
        return self.segment is not None


def check_seg(ds: Dataset, rows: int, columns: int) -> SegCheck:
    """Checks a SEG's header (metadata without pixels is enough) against the photograph's size."""
    if _text(ds, "Modality") != "SEG":
        return SegCheck(None, (f"it is not a segmentation (Modality {_text(ds, 'Modality')!r})",))
    size = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    if size != (rows, columns):
        return SegCheck(None, (f"its frames are {size[1]}x{size[0]}, the photograph is {columns}x{rows}",))
    number, notes = lesion_segment(ds)
    return SegCheck(number, tuple(notes))


@dataclass
class SegReading:
    """A SEG read as a lesion label: ``mask`` (rows, columns) uint8 0/1, or None when it cannot be one."""

    mask: np.ndarray | None
    segment: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether the SEG was read and marks no lesion (a 'no lesion' label)."""
        return self.mask is not None and not self.mask.any()


def _per_frame(ds: Dataset, n_frames: int) -> list[Dataset | None]:
    items = ds.get("PerFrameFunctionalGroupsSequence")
    return list(items) if items is not None and len(items) == n_frames else [None] * n_frames


def _frame_segment(item: Dataset | None) -> int | None:
    try:
        return int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)  # type: ignore[union-attr]
    except (AttributeError, IndexError, TypeError):
        return None


def _frame_sources(item: Dataset | None) -> set[str]:
    found = set()
    for derivation in (item.get("DerivationImageSequence") if item is not None else None) or []:
        for source in derivation.get("SourceImageSequence") or []:
            found.add(str(source.ReferencedSOPInstanceUID))
    return found


def _referenced_instances(ds: Dataset) -> set[str]:
    return {
        str(i.ReferencedSOPInstanceUID)
        for s in ds.get("ReferencedSeriesSequence") or []
        for i in s.get("ReferencedInstanceSequence") or []
    }


def _frames_on(ds: Dataset, n_frames: int, photo_sop: str | None) -> list[bool]:
    """Which frames lie on the photograph: those whose derivation references it; a frame that references nothing
    counts when the SEG as a whole references that photograph only (or nothing)."""
    if photo_sop is None:
        return [True] * n_frames
    whole = _referenced_instances(ds)
    keep = []
    for item in _per_frame(ds, n_frames):
        sources = _frame_sources(item)
        keep.append(photo_sop in sources if sources else whole <= {photo_sop})
    return keep


def read_lesion(ds: Dataset, rows: int, columns: int, photo_sop: str | None = None) -> SegReading:
    """The lesion segment of a full SEG (with pixels) as a mask on the photograph of (rows, columns).

    ``photo_sop`` (the photograph's SOPInstanceUID) keeps only the frames that lie on it. An empty result is a
    mask of zeros (the SEG says "no lesion"), noted in ``problems``.
    """
    check = check_seg(ds, rows, columns)
    problems = list(check.problems)
    if not check.usable:
        return SegReading(None, None, problems)
    segment = check.segment
    try:
        frames = np.asarray(ds.pixel_array).reshape(-1, rows, columns)
    except Exception as e:  # any codec or size error: the SEG is reported, never fatal
        return SegReading(None, segment, [*problems, f"its pixel data cannot be decoded ({type(e).__name__}: {e})"])
    items = _per_frame(ds, len(frames))
    on_photo = _frames_on(ds, len(frames), photo_sop)
    kind = _text(ds, "SegmentationType").upper()
    if str(ds.get("SOPClassUID", "")) == LABELMAP_SEG or kind == "LABELMAP":
        chosen = [frame == segment for frame, on in zip(frames, on_photo) if on]
    else:
        lone = len(segments(ds)) == 1
        if kind == "FRACTIONAL":
            top = float(ds.get("MaximumFractionalValue") or 255)
            binary = [frame > top / 2 for frame in frames]
        else:
            binary = [frame > 0 for frame in frames]
        chosen = [
            b
            for b, item, on in zip(binary, items, on_photo)
            if on and (_frame_segment(item) == segment or (_frame_segment(item) is None and lone))
        ]
    off = on_photo.count(False)
    if off:
        problems.append(f"{off} of its {len(frames)} frames lie on other images and were left out")
    mask = np.logical_or.reduce(chosen).astype(np.uint8) if chosen else np.zeros((rows, columns), np.uint8)
    if not mask.any():
        problems.append("it is empty: no lesion")
    return SegReading(mask, segment, problems)
