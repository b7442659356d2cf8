"""The DICOMweb datastore over a real Orthanc, through the shared datastore contract (tests/contracts/datastores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from apps.orthanc import Orthanc
from lesion_app.server.dicomweb import LesionDicomWebDatastore
from tests.contracts.datastores import DatastoreContract
from tests.support.paths import SAMPLE_DATA

PHOTO = "lesion_002.jpg"


class TestDicomWebDatastore(DatastoreContract):
    @pytest.fixture()
    def datastore(self, orthanc: Orthanc, dicom_studies: dict, tmp_path: Path) -> LesionDicomWebDatastore:
        return LesionDicomWebDatastore(DICOMwebClient(orthanc.dicomweb), cache_path=str(tmp_path / "cache"))

    @pytest.fixture()
    def photo(self, dicom_studies: dict) -> tuple[str, tuple[int, int]]:
        with Image.open(SAMPLE_DATA / PHOTO) as img:
            return dicom_studies[PHOTO]["series_uid"], (img.height, img.width)
