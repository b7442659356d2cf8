"""The DICOMweb listing: proposals told from corrections, the newest usable correction as the label (by when the
app first saw each SEG, then the SEGs' own dates), odd SEGs reported, each SEG's metadata fetched once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from lesion_app.server.dicomweb.arrivals import Arrivals
from lesion_app.server.dicomweb.listing import SERIES_UID, STUDY_UID, DicomWebListing, metadata

ROWS, COLUMNS = 384, 512


def seg_metadata(
    image: str,
    date: str,
    time: str,
    description: str = "lesion correction",
    creator: str = "",
    rows: int = ROWS,
    segments: tuple[str, ...] = ("lesion",),
) -> dict[str, Any]:
    ds = Dataset()
    ref = Dataset()
    ref.SeriesInstanceUID = image
    ds.ReferencedSeriesSequence = [ref]
    ds.Modality, ds.Rows, ds.Columns = "SEG", rows, COLUMNS
    ds.SeriesDate, ds.SeriesTime, ds.SeriesDescription, ds.ContentCreatorName = date, time, description, creator
    items = []
    for n, label in enumerate(segments, 1):
        s = Dataset()
        s.SegmentNumber, s.SegmentLabel = n, label
        items.append(s)
    ds.SegmentSequence = items
    meta = ds.to_json_dict()
    meta["7FE00010"] = {"vr": "OB", "BulkDataURI": "http://stub/dicom-web/studies/s/series/x/bulk/7fe00010"}
    return meta


def photo_metadata() -> dict[str, Any]:
    ds = Dataset()
    ds.SOPInstanceUID, ds.Rows, ds.Columns = "1.3.1", ROWS, COLUMNS
    return ds.to_json_dict()


class StubClient:
    """Answers QIDO with two photographs and their SEGs, and counts the metadata requests."""

    base_url = "http://stub/dicom-web"

    def __init__(self) -> None:
        self.metadata_requests: list[str] = []
        self.segs = {
            "seg.old": seg_metadata("1.1", "20260101", "090000"),
            "seg.new": seg_metadata("1.1", "20260102", "090000"),
            "seg.proposal": seg_metadata("1.1", "20260103", "090000", "lesion_app proposal", "lesion_app"),
            "seg.other": seg_metadata("1.9", "20260103", "090000"),  # refers to no listed photograph
        }

    def search_for_series(self, search_filters: dict[str, str], get_remaining: bool) -> list[dict[str, Any]]:
        uids = ["1.1", "1.2"] if search_filters["Modality"] == "XC" else list(self.segs)
        return [{STUDY_UID: {"Value": ["study.1"]}, SERIES_UID: {"Value": [uid]}} for uid in uids]

    def retrieve_series_metadata(self, study: str, series: str) -> list[dict[str, Any]]:
        self.metadata_requests.append(series)
        return [self.segs[series] if series.startswith("seg.") else photo_metadata()]


def listing(client: StubClient, arrivals: Arrivals | None = None) -> DicomWebListing:
    return DicomWebListing(client, "XC", 30.0, arrivals)


def test_metadata_leaves_bulk_data_out() -> None:
    ds = metadata(seg_metadata("1.99", "20260105", "101500"))
    assert ds.SeriesDate == "20260105" and "PixelData" not in ds


def test_a_proposal_is_never_the_label_and_each_metadata_is_fetched_once() -> None:
    client = StubClient()
    found = listing(client)
    assert found.segs() == {"1.1": ("study.1", "seg.new")}
    assert found.proposals()["1.1"].series == "seg.proposal"
    assert "1.2" not in found.labels() and "1.2" not in found.proposals()
    assert sorted(client.metadata_requests) == ["1.1", "seg.new", "seg.old", "seg.other", "seg.proposal"]
    for _ in range(3):
        found.invalidate()  # as after every save and every datalist
        assert found.segs() == {"1.1": ("study.1", "seg.new")}
    assert len(client.metadata_requests) == 5
    (problem,) = found.problems()
    assert "seg.other" in problem and "1.9" in problem and "not a photograph on the server" in problem


def test_a_seg_seen_later_is_newer_whatever_its_clock_says() -> None:
    """A correction saved in a browser whose clock is a day behind still replaces the label the app saved."""
    client = StubClient()
    found = listing(client)
    assert found.segs()["1.1"] == ("study.1", "seg.new")
    client.segs["seg.browser"] = seg_metadata("1.1", "20250101", "000000", "Research Derived series")
    found.invalidate()
    assert found.segs()["1.1"] == ("study.1", "seg.browser")
    assert [s.series for s in found.seg_series()][-1] == "seg.browser"


def test_odd_segs_are_not_labels_and_are_reported() -> None:
    client = StubClient()
    client.segs["seg.small"] = seg_metadata("1.2", "20260109", "090000", rows=100)
    client.segs["seg.two"] = seg_metadata("1.2", "20260101", "090000", segments=("Segment 1", "Lesion"))
    found = listing(client)
    assert found.segs()["1.2"] == ("study.1", "seg.two")  # the newer one is of another size
    assert found.labels()["1.2"].check.segment == 2
    problems = "\n".join(found.problems())
    assert "seg.small" in problems and "512x100" in problems and "seg.two" in problems and "2 segments" in problems


def test_arrival_times_are_shared_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "seg_arrivals.json"
    first = Arrivals(path)
    assert first.stamp(["a", "b"], 100.0) == {"a": 100.0, "b": 100.0}
    assert first.stamp(["a", "c"], 200.0) == {"a": 100.0, "c": 200.0}
    other_process = Arrivals(path)
    assert other_process.stamp(["a", "b", "c", "d"], 300.0) == {"a": 100.0, "b": 100.0, "c": 200.0, "d": 300.0}
    path.write_text("not json")
    assert Arrivals(path).stamp(["a"], 400.0) == {"a": 400.0}  # a damaged file costs only old orders
