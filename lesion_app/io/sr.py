"""A lesion's measurements as a DICOM Structured Report: a TID 1500 Measurement Report, written with highdicom.

One report per stored label: a Comprehensive 3D SR instance in the photograph's study, in a series of its own,
whose one Planar ROI group (TID 1410) references the SEG's lesion segment on its frame (and through it the
photograph) and holds the measurements of :func:`lesion_app.core.measurements.measure`. Coded concepts: SNOMED CT
where one exists (area, perimeter, diameter with the derivations maximum and minimum, lesion, skin), private codes
of the scheme :data:`SCHEME` for the rest. Units are UCUM: ``mm`` and ``mm2`` with a known spacing, the annotations
``{px}`` and ``{px2}`` for pixels (always written), ``1`` for ratios and counts. A report whose spacing was unknown
holds no millimetre value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lesion_app.io.seg import APP_CREATOR, lesion_segment

#: Private coding scheme of the measurements SNOMED CT has no concept for.
SCHEME = "99LESIONAPP"
#: What marks the app's reports (SeriesDescription).
REPORT_DESCRIPTION = "lesion_app measurements"
#: The report's series number (the SEGs the app writes are 300).
SERIES_NUMBER = 400

MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
MM2 = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
PX = hd.sr.CodedConcept("{px}", "UCUM", "pixels")
PX2 = hd.sr.CodedConcept("{px2}", "UCUM", "square pixels")
NO_UNIT = hd.sr.CodedConcept("1", "UCUM", "no units")


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, SCHEME, meaning)


@dataclass(frozen=True)
class Concept:
    """How one value of the measurements is coded: its name, the derivation that qualifies it, its unit."""

    name: hd.sr.CodedConcept
    unit: hd.sr.CodedConcept
    derivation: hd.sr.CodedConcept | None = None


def _sct(code: object) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept.from_code(code)  # type: ignore[arg-type]


DIAMETER, MAXIMUM, MINIMUM = _sct(codes.SCT.Diameter), _sct(codes.SCT.Maximum), _sct(codes.SCT.Minimum)
EQUIVALENT = _private("LA-EQDIAM", "Equivalent-circle diameter")
#: The measurement keys written, and how each is coded.
CONCEPTS: dict[str, Concept] = {
    "area_px": Concept(_sct(codes.SCT.Area), PX2),
    "area_mm2": Concept(_sct(codes.SCT.Area), MM2),
    "perimeter_px": Concept(_sct(codes.SCT.Perimeter), PX),
    "perimeter_mm": Concept(_sct(codes.SCT.Perimeter), MM),
    "feret_max_px": Concept(DIAMETER, PX, MAXIMUM),
    "feret_max_mm": Concept(DIAMETER, MM, MAXIMUM),
    "feret_min_px": Concept(DIAMETER, PX, MINIMUM),
    "feret_min_mm": Concept(DIAMETER, MM, MINIMUM),
    "equivalent_diameter_px": Concept(EQUIVALENT, PX),
    "equivalent_diameter_mm": Concept(EQUIVALENT, MM),
    "regions": Concept(_private("LA-REGIONS", "Number of separate regions"), NO_UNIT),
    "asymmetry_major": Concept(_private("LA-ASYM-MAJOR", "Asymmetry about the major axis"), NO_UNIT),
    "asymmetry_minor": Concept(_private("LA-ASYM-MINOR", "Asymmetry about the minor axis"), NO_UNIT),
    "compactness": Concept(_private("LA-COMPACT", "Compactness index"), NO_UNIT),
    "solidity": Concept(_private("LA-SOLIDITY", "Solidity"), NO_UNIT),
    **{
        f"colour_{c}_{stat}": Concept(_private(f"LA-{c.upper()}-{stat.upper()}", f"CIELAB {c}* {word}"), NO_UNIT)
        for c in "Lab"
        for stat, word in (("mean", "mean"), ("std", "standard deviation"))
    },
    "colour_contrast": Concept(_private("LA-CONTRAST", "CIE76 colour difference to surrounding skin"), NO_UNIT),
}
#: The key each concept reads back as: (name code, unit code, derivation code or "") -> key.
KEYS = {(c.name.value, c.unit.value, c.derivation.value if c.derivation else ""): key for key, c in CONCEPTS.items()}


def measurement_report(
    photo: Dataset,
    seg: Dataset,
    values: Mapping[str, object],
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of a lesion's ``values`` (``measure``'s keys) on ``photo``, for the lesion segment of
    ``seg`` (a SEG of that photograph). New UIDs unless given.

    Raises:
        ValueError: the SEG has no lesion segment, or references no frame of that segment.
    """
    segment, _ = lesion_segment(seg)
    if segment is None:
        raise ValueError(f"SEG {seg.SeriesInstanceUID} has no lesion segment to report on")
    referenced = hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=segment)
    measurements = []
    for key, concept in CONCEPTS.items():
        value = values.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        measurements.append(
            hd.sr.Measurement(name=concept.name, value=value, unit=concept.unit, derivation=concept.derivation)
        )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="lesion"),
        referenced_segment=referenced,
        finding_type=_sct(codes.SCT.Lesion),
        finding_sites=[hd.sr.FindingSite(_sct(codes.SCT.Skin))],
        measurements=measurements,
    )
    observer = hd.sr.ObserverContext(
        observer_type=_sct(codes.DCM.Device),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(), name=APP_CREATOR),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging"),
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[photo, seg],
        content=report,
        series_instance_uid=series_uid or generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=APP_CREATOR,
        is_complete=True,
        series_description=REPORT_DESCRIPTION,
    )
    return sr


def report_values(sr: Dataset) -> dict[str, float]:
    """The measurements a report holds, by ``measure``'s keys (what :func:`measurement_report` wrote)."""
    found: dict[str, float] = {}
    for group in hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups():
        for m in group.get_measurements():
            derivation = m.derivation.value if m.derivation is not None else ""
            key = KEYS.get((m.name.value, m.unit.value, derivation))
            if key is not None:
                found[key] = float(m.value)
    return found


def reported_instances(sr: Dataset) -> set[str]:
    """The SOP instance UIDs a report lists as its evidence (the photograph and the SEG), from its header alone."""
    return {
        str(item.ReferencedSOPInstanceUID)
        for study in sr.get("CurrentRequestedProcedureEvidenceSequence") or []
        for series in study.get("ReferencedSeriesSequence") or []
        for item in series.get("ReferencedSOPSequence") or []
    }
