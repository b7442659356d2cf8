"""Measurements through the real server: in every segmentation model's infer result, at ``GET /measurements/<image>``,
equal to ``lesion-measure``'s for the same mask, and the same for a photograph's 16-bit and EXIF-rotated versions."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from monailabel.client import MONAILabelClient
from PIL import Image

from apps.make_sample_data import draw_study
from apps.measure import measure_file
from apps.orthanc import Orthanc
from apps.research.local_server import running_server, server_process
from lesion_app.core.measurements import measure
from lesion_app.io.dicom import mask_to_seg
from lesion_app.io.sr import report_values
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server

#: The spacing the server is started with (--conf pixel_spacing_mm): the default when the request gives none.
CONF_SPACING = 0.04


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("measurements")


@pytest.fixture(scope="module")
def url(workdir: Path) -> Iterator[str]:
    conf = {"models": "unet,deepedit", "pixel_spacing_mm": str(CONF_SPACING)}
    with running_server(workdir, conf, env=NO_SCORING) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str, workdir: Path) -> MONAILabelClient:
    return MONAILabelClient(url, tmpdir=str(workdir / "client"))


def same(served: dict, program: dict) -> None:
    """The server's measurements equal the program's, key for key (floats to 1e-9)."""
    assert served.pop("spacing_source")
    assert served.keys() == program.keys()
    for key, value in program.items():
        assert served[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key


@pytest.mark.parametrize("model", ["unet", "deepedit"])
def test_an_infer_result_carries_the_programs_measurements(client: MONAILabelClient, workdir: Path, model: str) -> None:
    photo = next((workdir / "studies").glob("lesion_005.*"))
    result_file, result = client.infer(model, "lesion_005", {})
    served = result["measurements"]
    assert served["spacing_source"] == "conf" and served["spacing_mm"] == CONF_SPACING
    assert served["area_mm2"] == pytest.approx(served["area_px"] * CONF_SPACING**2)
    assert served["area_px"] > 100 and "colour_contrast" in served
    same(served, measure_file(Path(result_file), photo, CONF_SPACING))


def test_the_request_spacing_comes_first(client: MONAILabelClient) -> None:
    _, result = client.infer("unet", "lesion_005", {"pixel_spacing_mm": 0.01})
    m = result["measurements"]
    assert m["spacing_source"] == "request" and m["feret_max_mm"] == pytest.approx(m["feret_max_px"] * 0.01)


@pytest.mark.parametrize("spacing", [0, "abc"])  # negative: tests/unit/test_measurements.py
def test_a_bad_request_spacing_is_a_400_and_nothing_is_saved(url: str, workdir: Path, spacing: object) -> None:
    originals = workdir / "studies" / "labels" / "original"
    before = sorted(originals.glob("*")) if originals.is_dir() else []
    answer = httpx.post(
        f"{url}/infer/unet",
        params={"image": "lesion_006"},
        data={"params": f'{{"pixel_spacing_mm": {spacing!r}}}'.replace("'", '"')},
        timeout=60,
    )
    assert answer.status_code == 400, answer.text
    assert "pixel_spacing_mm: pixel spacing must be a positive number of mm per pixel" in answer.json()["detail"]
    assert (sorted(originals.glob("*")) if originals.is_dir() else []) == before
    assert httpx.get(f"{url}/info/", timeout=30).status_code == 200  # the server keeps serving


def test_the_route_measures_a_stored_label(url: str, workdir: Path) -> None:
    studies = workdir / "studies"
    answer = httpx.get(f"{url}/measurements/lesion_001", params={"tag": "final"}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["image"] == "lesion_001" and body["tag"] == "final"
    program = measure_file(studies / "labels" / "final" / "lesion_001.png", studies / "lesion_001.jpg", CONF_SPACING)
    same(body["measurements"], program)
    spaced = httpx.get(f"{url}/measurements/lesion_001", params={"pixel_spacing_mm": "0.02"}, timeout=60).json()
    assert spaced["measurements"]["spacing_source"] == "request"
    assert spaced["measurements"]["area_mm2"] == pytest.approx(program["area_px"] * 0.02**2)


def test_the_route_measures_the_models_original_label(client: MONAILabelClient, url: str) -> None:
    _, result = client.infer("unet", "lesion_002", {"save_label": True})
    answer = httpx.get(f"{url}/measurements/lesion_002", params={"tag": "original"}, timeout=60)
    assert answer.status_code == 200, answer.text
    result["measurements"].pop("spacing_source")
    same(answer.json()["measurements"], result["measurements"])


@pytest.mark.parametrize(
    ("path", "query", "status", "says"),
    [
        ("no_such_image", {}, 404, "'no_such_image' is not in the datastore"),
        ("lesion_009", {}, 404, "image 'lesion_009' has no label tagged 'final'"),
        ("lesion_001", {"tag": "nosuchtag"}, 404, "has no label tagged 'nosuchtag'"),
        ("lesion_001", {"tag": "../final"}, 400, "label tag"),
        ("lesion_001", {"tag": ""}, 400, "label tag is empty"),
        ("lesion_001", {"pixel_spacing_mm": "0"}, 400, "pixel_spacing_mm: pixel spacing must be a positive number"),
        ("lesion_001", {"pixel_spacing_mm": "-1"}, 400, "pixel_spacing_mm: pixel spacing must be a positive number"),
        ("lesion_001", {"pixel_spacing_mm": "wide"}, 400, "got 'wide'"),
    ],
)
def test_the_route_refuses_bad_requests(url: str, path: str, query: dict, status: int, says: str) -> None:
    answer = httpx.get(f"{url}/measurements/{path}", params=query, timeout=60)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]


def _upload(client: MONAILabelClient, folder: Path, image_id: str, img: Image.Image | np.ndarray, **save: Any) -> None:
    """A PNG of ``img`` uploaded under ``image_id``; an array is written as 16-bit RGB (SimpleITK: Pillow cannot)."""
    path = folder / f"{image_id}.png"
    if isinstance(img, np.ndarray):
        sitk.WriteImage(sitk.GetImageFromArray(img, isVector=True), str(path))
    else:
        img.save(path, **save)
    assert client.upload_image(str(path), image_id=image_id) == {"image": image_id}


def test_16_bit_and_exif_rotated_photographs_measure_as_their_plain_version(
    client: MONAILabelClient, url: str, workdir: Path
) -> None:
    """A non-square drawn study uploaded plain (8-bit), as 16-bit RGB, and stored on its side with EXIF orientation
    6 (shown upright): the same infer and route numbers for the same upright mask."""
    folder = workdir / "variants"
    folder.mkdir()
    rgb, truth = draw_study(np.random.default_rng(28), (240, 320))
    _upload(client, folder, "plain", Image.fromarray(rgb))
    _upload(client, folder, "deep", rgb.astype(np.uint16) * 257)  # full 16-bit range: the app reads the high byte
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter left: shown turned back, upright
    _upload(client, folder, "rotated", Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))), exif=exif)
    label = folder / "label.png"
    Image.fromarray(truth.astype(np.uint8) * 255).save(label)
    found = {}
    for image_id in ("plain", "deep", "rotated"):
        _, result = client.infer("unet", image_id, {})
        assert result["image_size"] == [240, 320]
        client.save_label(image_id, str(label), tag="final")
        stored = httpx.get(f"{url}/measurements/{image_id}", timeout=60).json()["measurements"]
        found[image_id] = (result["measurements"], stored)
    for variant in ("deep", "rotated"):
        for served, plain in zip(found[variant], found["plain"]):
            same(dict(served), {k: v for k, v in plain.items() if k != "spacing_source"})
    assert found["plain"][1]["area_px"] == int(truth.sum()) and not math.isnan(found["plain"][1]["colour_L_mean"])


def test_a_label_whose_photograph_is_gone_is_a_404(client: MONAILabelClient, url: str, workdir: Path) -> None:
    rgb, truth = draw_study(np.random.default_rng(7), (96, 128))
    folder = workdir / "gone"
    folder.mkdir()
    _upload(client, folder, "gone", Image.fromarray(rgb))
    Image.fromarray(truth.astype(np.uint8)).save(folder / "label.png")
    client.save_label("gone", str(folder / "label.png"), tag="final")
    assert httpx.get(f"{url}/measurements/gone", timeout=60).status_code == 200
    (workdir / "studies" / "gone.png").unlink()
    answer = httpx.get(f"{url}/measurements/gone", timeout=60)
    assert answer.status_code == 404, answer.text
    assert "'gone'" in answer.json()["detail"] and str(workdir) not in answer.text
    assert (workdir / "studies" / "labels" / "final" / "gone.png").is_file()  # nothing removed or written


# -- on a DICOMweb server (Orthanc): the placeholder spacing, and a report beside every stored label --------------


@pytest.fixture(scope="module")
def dicomweb(orthanc: Orthanc, dicom_studies: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over Orthanc holding sample-data imported by lesion-dicom-import without a calibration."""
    conf = {"models": "unet", "threads": "1", "dicomweb_cache_seconds": "3600"}
    env = NO_SCORING
    with server_process(tmp_path_factory.mktemp("sr"), conf, env=env, studies_url=orthanc.dicomweb) as server:
        yield server.url


def reports_of(client: DICOMwebClient, study: str) -> dict[str, pydicom.Dataset]:
    """SR series UID -> its instance, for every report in a study."""
    found = client.search_for_series(study, search_filters={"Modality": "SR"})
    series = [s["0020000E"]["Value"][0] for s in found]
    return {uid: client.retrieve_series(study, uid)[0] for uid in series}


def segs_in(client: DICOMwebClient, study: str) -> set[str]:
    """The SOP instance UIDs of every SEG in a study."""
    found = client.search_for_instances(study, search_filters={"Modality": "SEG"})
    return {s["00080018"]["Value"][0] for s in found}


def png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_saved_label_gets_a_report_the_newest_referencing_the_newest_seg(
    dicomweb: str, orthanc: Orthanc, dicom_studies: dict, tmp_path: Path
) -> None:
    client = DICOMwebClient(orthanc.dicomweb)
    row = dicom_studies["lesion_004.jpg"]
    image, study, shape = row["series_uid"], row["study_uid"], (int(row["rows"]), int(row["columns"]))
    total = httpx.get(f"{dicomweb}/info/", timeout=60).json()["datastore"]["total"]
    before = set(reports_of(client, study))
    segs_before = segs_in(client, study)
    seen: list[str] = []
    for box in ((20, 90, 30, 140), (40, 120, 60, 200)):
        mask = np.zeros(shape, np.uint8)
        mask[box[0] : box[1], box[2] : box[3]] = 1
        files = {"label": ("label.png", png(mask), "application/octet-stream")}
        query = {"image": image, "tag": "final"}
        saved = httpx.put(f"{dicomweb}/datastore/label", params=query, files=files, timeout=120)
        assert saved.status_code == 200, saved.text
        new = {uid: ds for uid, ds in reports_of(client, study).items() if uid not in before and uid not in seen}
        assert len(new) == 1  # one report per save
        [(uid, report)] = new.items()
        seen.append(uid)
        values = report_values(report)
        assert values["area_px"] == mask.sum()
        assert not any(k.endswith(("_mm", "_mm2")) for k in values)  # the import's 1 mm placeholder is no spacing
        path = tmp_path / f"{uid}.dcm"
        report.save_as(path)
        if shutil.which("dciodvfy"):  # what Orthanc stored still passes (the unit tests need the tool)
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            assert not [x for x in (run.stdout + run.stderr).splitlines() if x.startswith("Error")]
        segment = hd.sr.Comprehensive3DSR.from_dataset(report).content.get_volumetric_roi_measurement_groups()[0]
        referenced_seg = segment.referenced_segment.referenced_sop_instance_uid
        label_seg = httpx.get(f"{dicomweb}/measurements/{image}", timeout=60)
        assert label_seg.status_code == 200 and label_seg.json()["measurements"]["area_px"] == mask.sum()
        segs_now = segs_in(client, study)
        [newest] = segs_now - segs_before  # the SEG this save stored
        segs_before = segs_now
        assert referenced_seg == newest  # the newest report references the newest SEG
    datastore = httpx.get(f"{dicomweb}/info/", timeout=60).json()["datastore"]
    assert datastore["total"] == total == len(dicom_studies)  # a report is never listed as a photograph
    problems = datastore.get("seg_problems", [])
    assert not [p for p in problems if any(uid in p for uid in seen)]  # nor read as a SEG


def test_the_import_placeholder_is_read_as_unknown_spacing(dicomweb: str, dicom_studies: dict) -> None:
    image = dicom_studies["lesion_005.jpg"]["series_uid"]
    answer = httpx.post(f"{dicomweb}/infer/unet", params={"image": image, "output": "json"}, timeout=120)
    assert answer.status_code == 200, answer.text[:300]
    measured = answer.json()["measurements"]
    assert measured["spacing"] == "unknown" and measured["spacing_source"] == "unknown"
    assert "area_mm2" not in measured


def test_the_worklist_shows_each_labels_area_and_maximum_diameter(
    dicomweb: str, orthanc: Orthanc, dicom_studies: dict, tmp_path: Path
) -> None:
    """A label saved through the app and a SEG another client stored on Orthanc directly (as OHIF does): both rows
    show the label's area and maximum diameter, in pixels (the import's placeholder spacing)."""
    client = DICOMwebClient(orthanc.dicomweb)
    saved, direct = dicom_studies["lesion_006.jpg"], dicom_studies["lesion_007.png"]
    masks = {}
    for row, box in ((saved, (10, 80, 20, 150)), (direct, (30, 100, 40, 90))):
        mask = np.zeros((int(row["rows"]), int(row["columns"])), np.uint8)
        mask[box[0] : box[1], box[2] : box[3]] = 1
        masks[row["series_uid"]] = mask
    files = {"label": ("label.png", png(masks[saved["series_uid"]]), "application/octet-stream")}
    query = {"image": saved["series_uid"], "tag": "final"}
    assert httpx.put(f"{dicomweb}/datastore/label", params=query, files=files, timeout=120).status_code == 200
    photo_dir = tmp_path / "photo"
    photo_dir.mkdir()
    [photo] = client.retrieve_series(direct["study_uid"], direct["series_uid"])
    photo.save_as(photo_dir / "photo.dcm", write_like_original=False)
    seg = mask_to_seg(masks[direct["series_uid"]], photo_dir, tmp_path / "seg.dcm", creator="OHIF^User")
    client.store_instances([seg])
    rows = {r["image"]: r for r in httpx.get(f"{dicomweb}/worklist.json", timeout=300).json()["rows"]}
    for image, mask in masks.items():
        size = rows[image]["size"]
        assert size["area_px"] == mask.sum() and "area_mm2" not in size
        assert size["feret_max_px"] == pytest.approx(measure(mask)["feret_max_px"])
    page = httpx.get(f"{dicomweb}/worklist", timeout=300).text
    assert f"{masks[saved['series_uid']].sum()} px / " in page and "area / max diameter" in page
    # the SEG stored by another client got its report when the app first read it, and only one
    reports = reports_of(client, direct["study_uid"])
    assert [report_values(r)["area_px"] for r in reports.values()] == [masks[direct["series_uid"]].sum()]
    httpx.get(f"{dicomweb}/worklist.json", timeout=300).raise_for_status()
    assert len(reports_of(client, direct["study_uid"])) == 1
