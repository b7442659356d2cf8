"""The app on a real DICOMweb server: Orthanc from Debian's packages, holding sample-data as DICOM.

``monailabel start_server --studies http://127.0.0.1:<port>/dicom-web``: listing, next sample, infer on the DICOM
frame's geometry, a final label stored on Orthanc as DICOM SEG (checked pixel for pixel), bad labels refused
with nothing sent, SEGs from other clients picked up for training, and a training run on them.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import itk
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from apps.orthanc import Orthanc
from apps.research.local_server import Server, server_process
from lesion_app.io.dicom import mask_to_seg, seg_to_mask
from lesion_app.io.images import read_mask
from lesion_app.io.seg import is_proposal
from lesion_app.server.dicomweb import LesionDicomWebDatastore
from tests.support.images import encode
from tests.support.paths import REPO
from tests.support.servers import NO_SCORING
from tests.support.waiting import train_and_wait

pytestmark = pytest.mark.server

CONF = {"models": "unet", "train_epochs": "1", "threads": "1", "dicomweb_cache_seconds": "3600"}
ENV = NO_SCORING


@pytest.fixture(scope="module")
def server(orthanc: Orthanc, dicom_studies: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_process(tmp_path_factory.mktemp("dicomweb"), CONF, env=ENV, studies_url=orthanc.dicomweb) as s:
        yield s


@pytest.fixture(scope="module")
def client(orthanc: Orthanc) -> DICOMwebClient:
    return DICOMwebClient(orthanc.dicomweb)


def series(studies: dict, name: str) -> str:
    return studies[name]["series_uid"]


def segs_of(client: DICOMwebClient, image_series: str, proposals: bool = False) -> list[pydicom.Dataset]:
    """Every SEG instance on the server that references ``image_series``: the labels, or the app's proposals."""
    found = []
    for s in client.search_for_series(search_filters={"Modality": "SEG"}):
        study, uid = s["0020000D"]["Value"][0], s["0020000E"]["Value"][0]
        for ds in client.retrieve_series(study, uid):
            if ds.ReferencedSeriesSequence[0].SeriesInstanceUID == image_series and is_proposal(ds) == proposals:
                found.append(ds)
    return found


def png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def l_shape(shape: tuple[int, int]) -> np.ndarray:
    """An L in the top-left part of the photograph: a flip or transpose anywhere would move it."""
    h, w = shape
    m = np.zeros(shape, np.uint8)
    m[20 : h // 2, 30:80] = 1
    m[h // 2 - 40 : h // 2, 30 : w // 2] = 1
    return m


def save_label(url: str, image: str, data: bytes, name: str = "label.png", info: str = "{}") -> httpx.Response:
    files = {"label": (name, data, "application/octet-stream")}
    query = {"image": image, "tag": "final"}
    return httpx.put(f"{url}/datastore/label", params=query, files=files, data={"params": info}, timeout=120)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_the_images_are_the_xc_series_and_next_sample_offers_them(
    server: Server, dicom_studies: dict, client: DICOMwebClient
) -> None:
    """Each photograph handed out gets the model's proposal on Orthanc (once), which is not a label."""
    uids = {row["series_uid"] for row in dicom_studies.values()}
    for strategy in ("random", "first", "uncertainty", "first"):
        r = httpx.post(f"{server.url}/activelearning/{strategy}", json={}, timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["id"] in uids
        (proposal,) = segs_of(client, r.json()["id"], proposals=True)
        assert r.json()["proposal"] == proposal.SeriesInstanceUID
        assert proposal.SeriesDescription == "lesion_app proposal" and proposal.ContentCreatorName == "lesion_app"
        assert segs_of(client, r.json()["id"]) == []


def test_infer_lies_on_the_dicom_frame(server: Server, dicom_studies: dict) -> None:
    image = series(dicom_studies, "lesion_000.jpg")
    r = httpx.post(
        f"{server.url}/infer/unet",
        params={"image": image, "output": "image"},
        json={"result_extension": ".nrrd", "result_dtype": "uint8"},
        timeout=120,
    )
    assert r.status_code == 200, r.text[:500]
    result = Path(server.workdir) / "result.nrrd"
    result.write_bytes(r.content)
    mask = itk.imread(str(result))
    assert tuple(mask.GetSpacing()) == (1.0, 1.0) and tuple(mask.GetOrigin()) == (0.0, 0.0)
    truth = read_mask(REPO / "sample-data" / "labels" / "final" / "lesion_000.png")
    predicted = itk.array_from_image(mask)
    assert predicted.shape == truth.shape
    assert iou(predicted, truth) > 0.8


def test_a_final_label_goes_to_orthanc_as_seg_pixel_for_pixel(
    server: Server, dicom_studies: dict, client: DICOMwebClient
) -> None:
    row = dicom_studies["lesion_001.jpg"]
    image, shape = row["series_uid"], (int(row["rows"]), int(row["columns"]))
    mask = l_shape(shape)
    r = save_label(server.url, image, png(mask))
    assert r.status_code == 200, r.text
    (seg,) = segs_of(client, image)
    assert seg.StudyInstanceUID == row["study_uid"] and seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert np.array_equal(seg_to_mask(seg, *shape), mask)
    # at once no longer offered, by any strategy, although listings are cached for an hour here
    for strategy in ("first", "uncertainty"):
        for _ in range(3):
            offered = httpx.post(f"{server.url}/activelearning/{strategy}", json={}, timeout=300).json()
            assert offered["id"] != image
    # a correction replaces it: the newest SEG is the label
    mask2 = np.zeros_like(mask)
    mask2[shape[0] // 2 :, shape[1] // 2 :] = 1
    assert save_label(server.url, image, png(mask2 * 255)).status_code == 200
    assert len(segs_of(client, image)) == 2
    # "no lesion": an empty mask is a SEG too, its creator the annotator, read back as an all-zero label
    assert save_label(server.url, image, png(0 * mask), info='{"annotator": "Dr Ada"}').status_code == 200
    (none,) = [seg for seg in segs_of(client, image) if str(seg.ContentCreatorName) == "Dr Ada"]
    assert not seg_to_mask(none, *shape).any()
    label = httpx.get(f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, timeout=60)
    assert label.status_code == 200 and not np.asarray(Image.open(io.BytesIO(label.content))).any()


def test_bad_labels_are_refused_and_nothing_reaches_orthanc(
    server: Server, dicom_studies: dict, client: DICOMwebClient
) -> None:
    row = dicom_studies["lesion_002.jpg"]
    image, shape = row["series_uid"], (int(row["rows"]), int(row["columns"]))
    wrong_size = save_label(server.url, image, png(l_shape((shape[1], shape[0]))))
    assert wrong_size.status_code == 400 and "transposed" in wrong_size.text
    values = l_shape(shape) * 7
    assert save_label(server.url, image, png(values)).status_code == 400
    assert save_label(server.url, image, b"garbage", "label.png").status_code == 400
    assert save_label(server.url, "1.2.3.4.5", png(l_shape(shape))).status_code == 404
    assert save_label(server.url, "../../etc", png(l_shape(shape))).status_code == 400
    assert segs_of(client, image) == []
    assert httpx.get(f"{server.url}/info/", timeout=30).status_code == 200


def test_segs_from_other_clients_are_training_labels(
    orthanc: Orthanc, dicom_studies: dict, client: DICOMwebClient, tmp_path: Path
) -> None:
    """A SEG another tool stored (here dcmqi beside this test) is a final label; deleting it removes the label."""
    row = dicom_studies["lesion_003.png"]
    image, shape = row["series_uid"], (int(row["rows"]), int(row["columns"]))
    source = tmp_path / "source"
    source.mkdir()
    client.retrieve_series(row["study_uid"], image)[0].save_as(source / "photo.dcm", write_like_original=False)
    mask = l_shape(shape)
    mask_to_seg(mask, source, tmp_path / "seg.dcm", "another tool")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    client.store_instances([seg])

    store = LesionDicomWebDatastore(DICOMwebClient(orthanc.dicomweb), cache_path=str(tmp_path / "cache"))
    items = {Path(d["image"]).name.removesuffix(".nrrd"): d for d in store.datalist()}
    assert image in items
    assert np.array_equal(read_mask(items[image]["label"]), mask.astype(bool))
    assert image in store.get_labeled_images() and image not in store.get_unlabeled_images()

    found = httpx.post(f"{orthanc.url}/tools/lookup", content=str(seg.SeriesInstanceUID), timeout=30).json()
    assert httpx.delete(f"{orthanc.url}{found[0]['Path']}", timeout=30).status_code == 200
    assert image not in {Path(d["image"]).name.removesuffix(".nrrd") for d in store.datalist()}


def test_training_reads_the_segs(server: Server, dicom_studies: dict, client: DICOMwebClient) -> None:
    """Saved labels train the served model: the trainer's datalist is the images with SEGs on Orthanc."""
    row = dicom_studies["lesion_004.jpg"]
    assert save_label(server.url, row["series_uid"], png(l_shape((int(row["rows"]), int(row["columns"]))))).is_success
    labelled = {n for n, r in dicom_studies.items() if segs_of(client, r["series_uid"])}
    details = train_and_wait(server.url)
    counts = re.search(r"training unet from \S+: (\d+) train, (\d+) val", details)
    assert counts, details[-2000:]
    assert "epoch 1/1" in details
    train, val = int(counts[1]), int(counts[2])
    assert train == len(labelled) and val == train  # too few labels to hold some out: it validates on them


def test_slicer_gets_the_photograph_and_saves_a_single_slice_label(
    server: Server, dicom_studies: dict, client: DICOMwebClient
) -> None:
    """What the Slicer plugin does with a DICOMweb-backed server: download the image (here the cached RGB NRRD,
    which Slicer reads as a single-slice colour volume), then upload a single-slice .nrrd on its geometry."""
    row = dicom_studies["lesion_006.jpg"]
    image, shape = row["series_uid"], (int(row["rows"]), int(row["columns"]))
    r = httpx.get(f"{server.url}/datastore/image", params={"image": image}, timeout=60)
    assert r.status_code == 200
    downloaded = Path(server.workdir) / "slicer_image.nrrd"
    downloaded.write_bytes(r.content)
    photo = itk.imread(str(downloaded))
    dicom = client.retrieve_series(row["study_uid"], image)[0]
    assert np.array_equal(itk.array_from_image(photo), dicom.pixel_array)
    mask = l_shape(shape)
    label = itk.image_from_array(np.ascontiguousarray(mask[None]))  # (W, H, 1), as Slicer saves one slice
    label.SetSpacing([*photo.GetSpacing(), 1.0])
    label.SetOrigin([*photo.GetOrigin(), 0.0])
    path = Path(server.workdir) / "slicer_label.nrrd"
    itk.imwrite(label, str(path), compression=True)
    assert save_label(server.url, image, path.read_bytes(), "label.nrrd").status_code == 200
    (seg,) = segs_of(client, image)
    assert np.array_equal(seg_to_mask(seg, *shape), mask)


def test_an_uploaded_photograph_goes_to_orthanc_and_deletes_are_refused(
    server: Server, client: DICOMwebClient, tmp_path: Path
) -> None:
    photo = REPO / "sample-data" / "lesion_008.jpg"
    files = {"file": ("visit_2026_11.jpg", photo.read_bytes(), "image/jpeg")}
    r = httpx.put(f"{server.url}/datastore/", params={"image": "visit_2026_11"}, files=files, timeout=120)
    assert r.status_code == 200, r.text
    series_uid = r.json()["image"]
    found = client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
    assert len(found) == 1 and found[0]["00080060"]["Value"] == ["XC"]
    offered = httpx.get(f"{server.url}/datastore/image", params={"image": series_uid}, timeout=60)
    assert offered.status_code == 200
    (tmp_path / "x.nrrd").write_bytes(offered.content)
    with Image.open(photo) as img:
        assert itk.array_from_image(itk.imread(str(tmp_path / "x.nrrd"))).shape == (img.height, img.width, 3)
    again = httpx.put(f"{server.url}/datastore/", params={"image": "visit_2026_11"}, files=files, timeout=120)
    assert again.status_code == 409
    bad = {"file": ("broken.jpg", b"not a photograph", "image/jpeg")}
    assert httpx.put(f"{server.url}/datastore/", params={"image": "broken"}, files=bad, timeout=60).status_code == 400
    assert httpx.delete(f"{server.url}/datastore/", params={"id": series_uid}, timeout=60).status_code == 405
    gone = httpx.delete(f"{server.url}/datastore/label", params={"id": series_uid, "tag": "final"}, timeout=60)
    assert gone.status_code == 405 and "SEG" in gone.text
    assert len(client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})) == 1


def test_a_dicomweb_server_that_goes_down_gives_503_and_the_app_recovers(tmp_path: Path) -> None:
    from apps.orthanc import start_orthanc
    from apps.research.local_server import free_port

    storage, port = tmp_path / "orthanc", free_port()
    orthanc = start_orthanc(storage, port)
    try:
        from apps import dicom_import

        photo = str(REPO / "sample-data" / "lesion_000.jpg")
        assert dicom_import.main([photo, "--stow", orthanc.dicomweb, "--mapping", str(tmp_path / "m.csv")]) == 0
        conf = {**CONF, "dicomweb_cache_seconds": "0"}  # every request asks Orthanc (a cached listing would answer)
        with server_process(tmp_path / "app", conf, env=ENV, studies_url=orthanc.dicomweb) as s:
            first = httpx.post(f"{s.url}/activelearning/first", json={}, timeout=60)
            assert first.status_code == 200
            with Image.open(photo) as img:
                mask = np.zeros((img.height, img.width), np.uint8)
            mask[100:200, 150:300] = 1
            orthanc.stop()
            t0 = time.monotonic()
            down = httpx.post(f"{s.url}/activelearning/first", json={}, timeout=60)
            assert down.status_code == 503 and "DICOMweb server" in down.text
            assert time.monotonic() - t0 < 10  # no half-minute of retries
            saved = save_label(s.url, first.json()["id"], encode(Image.fromarray(mask), "PNG"))
            assert saved.status_code == 503 and "DICOMweb server" in saved.text  # not there: no 502 "refused"
            info = httpx.get(f"{s.url}/info/", timeout=30)
            assert info.status_code == 200 and "DICOMweb server" in info.json()["datastore"]["error"]
            orthanc = start_orthanc(storage, port)
            assert httpx.post(f"{s.url}/activelearning/first", json={}, timeout=60).status_code == 200
    finally:
        orthanc.stop()


def test_a_seg_saved_from_ohif_is_listed_at_once(
    server: Server, dicom_studies: dict, client: DICOMwebClient, tmp_path: Path
) -> None:
    """Issue 25, 4: a SEG stored through the app's DICOMweb path (as OHIF saves) shows in the listing and /info's
    label tags on the next request, without anything reading the label first (the listing is cached an hour here)."""
    row = dicom_studies["lesion_009.jpg"]
    image, shape = row["series_uid"], (int(row["rows"]), int(row["columns"]))
    before = httpx.get(f"{server.url}/info/", timeout=30).json()["datastore"]["label_tags"].get("final", 0)
    listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert "final" not in listed.get(image, {}).get("labels", {})
    source = tmp_path / "source"
    source.mkdir()
    client.retrieve_series(row["study_uid"], image)[0].save_as(source / "photo.dcm", write_like_original=False)
    mask_to_seg(l_shape(shape), source, tmp_path / "seg.dcm", "OHIF")
    DICOMwebClient(f"{server.url}/ohif/dicom-web").store_instances([pydicom.dcmread(tmp_path / "seg.dcm")])
    listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert "final" in listed[image]["labels"]
    assert httpx.get(f"{server.url}/info/", timeout=30).json()["datastore"]["label_tags"]["final"] == before + 1
