"""The DICOMweb datastore's SEG listing: newest SEG per photograph, each SEG's metadata fetched once."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from lesion_app.server.dicomweb.listing import SERIES_UID, STUDY_UID, DicomWebListing, seg_reference


def seg_metadata(image: str, date: str, time: str) -> dict[str, Any]:
    ds = Dataset()
    ref = Dataset()
    ref.SeriesInstanceUID = image
    ds.ReferencedSeriesSequence = [ref]
    ds.SeriesDate, ds.SeriesTime = date, time
    return ds.to_json_dict()


class StubClient:
    """Answers QIDO with two photographs and three SEGs, and counts the metadata requests."""

    base_url = "http://stub/dicom-web"

    def __init__(self) -> None:
        self.metadata_requests: list[str] = []
        self.segs = {
            "seg.old": seg_metadata("img.1", "20260101", "090000"),
            "seg.new": seg_metadata("img.1", "20260102", "090000"),
            "seg.other": seg_metadata("img.elsewhere", "20260103", "090000"),  # refers to no listed photograph
        }

    def search_for_series(self, search_filters: dict[str, str], get_remaining: bool) -> list[dict[str, Any]]:
        uids = ["img.1", "img.2"] if search_filters["Modality"] == "XC" else list(self.segs)
        return [{STUDY_UID: {"Value": ["study.1"]}, SERIES_UID: {"Value": [uid]}} for uid in uids]

    def retrieve_series_metadata(self, study: str, series: str) -> list[dict[str, Any]]:
        self.metadata_requests.append(series)
        return [self.segs[series]]


def test_seg_reference_reads_the_image_series_and_the_time() -> None:
    meta = Dataset.from_json(seg_metadata("img.9", "20260105", "101500"))
    assert seg_reference(meta) == ("img.9", "20260105101500")
    assert seg_reference(Dataset()) == ("", "")


def test_the_newest_seg_wins_and_each_segs_metadata_is_fetched_once() -> None:
    client = StubClient()
    ds = DicomWebListing(client, "XC", 30.0)
    assert ds.segs() == {"img.1": ("study.1", "seg.new")}
    assert sorted(client.metadata_requests) == ["seg.new", "seg.old", "seg.other"]
    for _ in range(3):
        ds.invalidate()  # as after every save and every datalist
        assert ds.segs() == {"img.1": ("study.1", "seg.new")}
    assert len(client.metadata_requests) == 3
    client.segs["seg.newest"] = seg_metadata("img.2", "20260104", "090000")
    ds.invalidate()
    assert ds.segs() == {"img.1": ("study.1", "seg.new"), "img.2": ("study.1", "seg.newest")}
    assert client.metadata_requests[3:] == ["seg.newest"]
