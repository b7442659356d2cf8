"""lesion-dicom-import without a server: DICOM files, the UID mapping, stability, errors, the source untouched."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from apps import dicom_import
from lesion_app.io.images import to_rgb
from tests.support.files import folder_digest


def digest(folder: Path) -> dict[str, str]:
    return folder_digest(folder, recursive=False)


@pytest.fixture()
def photos(sample_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("lesion_000.jpg", "lesion_001.jpg", "lesion_003.png"):
        shutil.copy(sample_data / name, folder / name)
    (folder / "notes.txt").write_text("not a photograph")
    return folder


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_import_writes_one_dicom_per_photograph_and_the_mapping(photos: Path, tmp_path: Path) -> None:
    before = digest(photos)
    mapping = tmp_path / "uids.csv"
    code = dicom_import.main([str(photos), "--out", str(tmp_path / "dcm"), "--mapping", str(mapping)])
    assert code == 0
    assert digest(photos) == before  # nothing in the source changes
    found = rows(mapping)
    assert [r["file"] for r in found] == ["lesion_000.jpg", "lesion_001.jpg", "lesion_003.png"]
    for r in found:
        ds = pydicom.dcmread(tmp_path / "dcm" / f"{Path(r['file']).stem}.dcm")
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
            r["study_uid"],
            r["series_uid"],
            r["instance_uid"],
        )
        assert ds.PatientID == Path(r["file"]).stem  # each photograph its own patient by default
        with Image.open(photos / r["file"]) as img:
            assert np.array_equal(ds.pixel_array, np.asarray(to_rgb(img)))
        assert (int(r["rows"]), int(r["columns"])) == (ds.Rows, ds.Columns)
    assert len({r["series_uid"] for r in found}) == 3


def test_importing_again_gives_the_same_uids(photos: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert dicom_import.main([str(photos), "--out", str(tmp_path / "1"), "--mapping", str(first)]) == 0
    assert dicom_import.main([str(photos), "--out", str(tmp_path / "2"), "--mapping", str(second)]) == 0
    assert rows(first) == rows(second)
    other = tmp_path / "c.csv"
    args = [str(photos / "lesion_000.jpg"), "--out", str(tmp_path / "3"), "--mapping", str(other)]
    assert dicom_import.main([*args, "--patient-id", "P0042"]) == 0
    (moved,) = rows(other)
    assert moved["patient_id"] == "P0042" and moved["series_uid"] != rows(first)[0]["series_uid"]


def test_errors_are_named_and_nothing_is_written(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mapping = tmp_path / "uids.csv"
    assert dicom_import.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--mapping", str(mapping)]) == 2
    assert "does not exist" in capsys.readouterr().err
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a JPEG")
    assert dicom_import.main([str(fake), "--out", str(tmp_path / "o"), "--mapping", str(mapping)]) == 2
    assert "fake.jpg: not a readable photograph" in capsys.readouterr().err
    assert not mapping.exists()
    with pytest.raises(SystemExit):  # neither --stow nor --out
        dicom_import.main([str(photos)])


def test_an_unreachable_server_is_an_error(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [str(photos / "lesion_000.jpg"), "--stow", "http://127.0.0.1:9/dicom-web"]
    assert dicom_import.main([*args, "--mapping", str(tmp_path / "m.csv")]) == 1
    assert "upload to http://127.0.0.1:9/dicom-web failed" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()
