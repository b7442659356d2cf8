"""Fixtures for the viewer round trips: a private Orthanc (Debian's packages) holding sample-data as DICOM.

Orthanc and Chromium are system packages. Where they are missing these tests skip, except under
``LESION_REQUIRE_VIEWERS=1`` (what ``.ci/run`` sets after installing them), where a missing one fails.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

import pytest

from apps.orthanc import Orthanc, OrthancMissing, dicomweb_plugin, orthanc_binary, running_orthanc
from apps.research.local_server import free_port
from tests.support.viewers import need


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A fresh Orthanc per test module, on a free loopback port; stopped afterwards."""
    try:
        orthanc_binary()
        dicomweb_plugin()
    except OrthancMissing as e:
        need(str(e))
    storage = tmp_path_factory.mktemp("orthanc")
    with running_orthanc(storage, free_port(), storage / "orthanc.log") as server:
        yield server


@pytest.fixture(scope="module")
def dicom_studies(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """sample-data's photographs uploaded with lesion-dicom-import: file name -> its mapping row (UIDs)."""
    from apps import dicom_import
    from tests.support.paths import REPO

    mapping = tmp_path_factory.mktemp("dicom_import") / "uids.csv"
    code = dicom_import.main([str(REPO / "sample-data"), "--stow", orthanc.dicomweb, "--mapping", str(mapping)])
    assert code == 0
    with mapping.open(newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}
