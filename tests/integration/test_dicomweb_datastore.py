"""The DICOMweb datastore over a real Orthanc: the shared datastore contract (tests/contracts/datastores.py), and
SEGs of every kind that OHIF and other tools may store."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from apps.orthanc import Orthanc
from lesion_app.io.images import read_mask
from lesion_app.server.dicomweb import LesionDicomWebDatastore
from lesion_app.server.schedule import labels_newer_than
from tests.contracts.datastores import DatastoreContract, l_shape
from tests.support.paths import SAMPLE_DATA
from tests.support.segs import make_seg

PHOTO = "lesion_002.jpg"


class TestDicomWebDatastore(DatastoreContract):
    @pytest.fixture()
    def datastore(self, orthanc: Orthanc, dicom_studies: dict, tmp_path: Path) -> LesionDicomWebDatastore:
        return LesionDicomWebDatastore(DICOMwebClient(orthanc.dicomweb), cache_path=str(tmp_path / "cache"))

    @pytest.fixture()
    def photo(self, dicom_studies: dict) -> tuple[str, tuple[int, int]]:
        with Image.open(SAMPLE_DATA / PHOTO) as img:
            return dicom_studies[PHOTO]["series_uid"], (img.height, img.width)


def test_segs_of_every_kind_the_newest_correction_is_the_label_and_odd_ones_are_reported(
    orthanc: Orthanc, dicom_studies: dict, tmp_path: Path
) -> None:
    """What OHIF and other tools may store: each SEG becomes a label, or is reported and left out, never fatal."""
    client = DICOMwebClient(orthanc.dicomweb)
    photos = {}
    for name in ("lesion_005.jpg", "lesion_007.png", "lesion_008.jpg", "lesion_009.jpg"):
        row = dicom_studies[name]
        photos[name] = client.retrieve_series(row["study_uid"], row["series_uid"])[0]
    shape = {name: (int(ds.Rows), int(ds.Columns)) for name, ds in photos.items()}
    lesion = {name: l_shape(hw) for name, hw in shape.items()}
    other = np.zeros(shape["lesion_005.jpg"], np.uint8)
    other[-40:, -40:] = 1
    today, last_year = datetime.now(), datetime.now() - timedelta(days=365)
    store = LesionDicomWebDatastore(client, cache_path=str(tmp_path / "cache"))
    started = time.time()
    client.store_instances([make_seg(photos["lesion_005.jpg"], {1: ("lesion", other)}, "binary", when=today)])
    assert photos["lesion_005.jpg"].SeriesInstanceUID in store.get_labeled_images()  # seen first
    store.listing.invalidate()
    empty = np.zeros(shape["lesion_007.png"], np.uint8)
    client.store_instances(
        [
            # OHIF's label map with two segments, saved later from a browser whose clock is a year behind
            make_seg(
                photos["lesion_005.jpg"],
                {1: ("Segment 1", other), 2: ("Lesion", lesion["lesion_005.jpg"])},
                when=last_year,
            ),
            make_seg(photos["lesion_007.png"], {1: ("Segment 1", empty)}),  # all erased: no lesion
            make_seg(photos["lesion_008.jpg"], {1: ("lesion", lesion["lesion_008.jpg"][:100])}),  # another size
            make_seg(
                photos["lesion_009.jpg"],
                {1: ("lesion", lesion["lesion_009.jpg"])},
                creator="lesion_app",
                description="lesion_app proposal",
            ),  # the app's proposal
            make_seg(
                photos["lesion_009.jpg"], {1: ("lesion", lesion["lesion_009.jpg"])}, referenced_series="1.2.3.999"
            ),  # refers to no photograph here
        ]
    )
    store.listing.invalidate()
    items = {Path(d["image"]).name.removesuffix(".nrrd"): read_mask(d["label"]) for d in store.datalist()}
    uid = {name: ds.SeriesInstanceUID for name, ds in photos.items()}
    assert np.array_equal(
        items[uid["lesion_005.jpg"]], lesion["lesion_005.jpg"].astype(bool)
    )  # the newer one, its lesion segment
    assert uid["lesion_007.png"] in items and not items[uid["lesion_007.png"]].any()  # kept as "no lesion"
    assert uid["lesion_008.jpg"] not in items and uid["lesion_009.jpg"] not in items
    assert uid["lesion_009.jpg"] in store.listing.proposals()
    problems = "\n".join(store.status()["seg_problems"])
    assert "2 segments" in problems and "segment 2 was read" in problems
    assert (
        f"{shape['lesion_008.jpg'][1]}x100" in problems
        and "1.2.3.999" in problems
        and "not a photograph on the server" in problems
    )
    notes = store.get_label_info(uid["lesion_007.png"], "final")["notes"]
    assert notes == ["it is empty: no lesion"]
    ours = {uid[name] for name in photos}  # the contract tests above label another photograph on this Orthanc
    mine = [d for d in store.datalist() if Path(d["image"]).name.removesuffix(".nrrd") in ours]
    assert labels_newer_than(mine, started) == 2  # what the retraining schedule counts
