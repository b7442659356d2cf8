"""Bad input against the real server: a clear 4xx, the server keeps serving, the datastore is unchanged."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from apps.research.local_server import running_server
from tests.support.files import folder_digest
from tests.support.images import encode, odd_images, png_header_only, rgb
from tests.support.paths import REPO
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server

IMAGE = "lesion_000"  # a JPEG of sample-data with a final label
with Image.open(REPO / "sample-data" / f"{IMAGE}.jpg") as _img:
    SIZE_HW = (_img.height, _img.width)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def url(workdir: Path) -> Iterator[str]:
    with running_server(workdir, {"models": "unet", "max_upload_mb": "1"}, env=NO_SCORING) as base:
        yield base  # no background scoring: nothing but the requests here changes the datastore


@pytest.fixture
def unchanged(url: str, workdir: Path) -> Iterator[None]:
    """Asserts the studies folder, its parent and the datastore listing are as they were, and /info answers."""
    studies = workdir / "studies"
    files, parent = folder_digest(studies), sorted(p.name for p in workdir.iterdir())
    listing = httpx.get(f"{url}/datastore/", params={"output": "all"}).json()
    yield
    assert httpx.get(f"{url}/info/").status_code == 200
    assert httpx.get(f"{url}/datastore/", params={"output": "all"}).json() == listing
    assert folder_digest(studies) == files
    assert sorted(p.name for p in workdir.iterdir()) == parent


def infer_with(url: str, params: str) -> httpx.Response:
    """``POST /infer/unet`` on the sample photograph with ``params`` as the form field, as curl and Slicer send it."""
    return httpx.post(f"{url}/infer/unet", params={"image": IMAGE}, data={"params": params}, timeout=60)


def put_image(url: str, name: str, data: bytes, image: str | None = None) -> httpx.Response:
    params = {"image": image} if image is not None else {}
    return httpx.put(f"{url}/datastore/", params=params, files={"file": (name, data)}, timeout=60)


def put_label(url: str, image: str, name: str, data: bytes, tag: str = "final", **form: str) -> httpx.Response:
    return httpx.put(
        f"{url}/datastore/label",
        params={"image": image, "tag": tag},
        files={"label": (name, data)},
        data=form,
        timeout=60,
    )


def train(url: str, model: str, options: object) -> httpx.Response:
    return httpx.post(f"{url}/train/{model}", json=options, timeout=60)


def next_sample(url: str, strategy: str, options: object = None) -> httpx.Response:
    return httpx.post(f"{url}/activelearning/{strategy}", json=options, timeout=60)


def photo(h: int = 48, w: int = 64) -> bytes:
    return encode(Image.fromarray(rgb(h, w)), "JPEG")


def mask_png(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.uint8)), "PNG")


def lesion_mask(value: int = 1, hw: tuple[int, int] = SIZE_HW) -> np.ndarray:
    m = np.zeros(hw, np.uint8)
    m[100:200, 150:300] = value
    return m


def big_noise_png() -> bytes:
    """Incompressible: well over the test server's 1 MB upload limit."""
    return encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (700, 700, 3), np.uint8)), "PNG")


BAD_IMAGES = {
    "dotdot_id": (lambda u: put_image(u, "x.jpg", photo(), "../escape"), 400, "no path separators"),
    "nested_id": (lambda u: put_image(u, "x.jpg", photo(), "a/b"), 400, "no path separators"),
    "absolute_id": (lambda u: put_image(u, "x.jpg", photo(), "/tmp/escape"), 400, "absolute"),
    "long_id": (lambda u: put_image(u, "x.jpg", photo(), "x" * 200), 400, "at most 128"),
    "nul_id": (lambda u: put_image(u, "x.jpg", photo(), "a\x00b"), 400, "NUL"),
    "odd_characters": (lambda u: put_image(u, "x.jpg", photo(), "a;rm -rf"), 400, "may only contain"),
    "dotfile_name": (lambda u: put_image(u, ".jpg", photo()), 400, "unsupported image extension"),
    "gif": (lambda u: put_image(u, "x.gif", b"GIF89a" + b"\0" * 20, "gif"), 400, "unsupported image extension"),
    "text_as_jpg": (lambda u: put_image(u, "notes.jpg", b"hello, not a photo\n" * 5), 400, "not a readable image"),
    "pdf_as_png": (lambda u: put_image(u, "scan.png", b"%PDF-1.4\n1 0 obj<<>>endobj\n"), 400, "not a readable"),
    "empty": (lambda u: put_image(u, "empty.jpg", b""), 400, "empty"),
    "truncated": (lambda u: put_image(u, "cut.png", big_noise_png()[:50_000]), 400, "image"),
    "too_big_upload": (lambda u: put_image(u, "big.png", big_noise_png()), 413, "max_upload_mb"),
    "decompression_bomb": (lambda u: put_image(u, "bomb.png", png_header_only(60_000, 60_000)), 413, "pixels"),
    "existing_id": (lambda u: put_image(u, "x.jpg", photo(), IMAGE), 409, "exists"),
}

BAD_REQUESTS = {
    "label_unknown_image": (lambda u: put_label(u, "no_such", "l.png", mask_png(lesion_mask())), 404, "not in"),
    "label_dotdot_image": (lambda u: put_label(u, "../x", "l.png", mask_png(lesion_mask())), 400, "plain name"),
    "label_dotdot_tag": (lambda u: put_label(u, IMAGE, "l.png", mask_png(lesion_mask()), "../../x"), 400, "tag"),
    "label_garbage": (lambda u: put_label(u, IMAGE, "l.png", b"\x89PNG garbage" * 50), 400, "not a readable"),
    "label_empty": (lambda u: put_label(u, IMAGE, "l.png", b""), 400, "empty"),
    "label_jpeg": (lambda u: put_label(u, IMAGE, "l.jpg", photo(*SIZE_HW)), 400, "lossy"),
    "label_wrong_size": (lambda u: put_label(u, IMAGE, "l.png", mask_png(lesion_mask(1, (100, 80)))), 400, "80x100"),
    "label_values": (
        lambda u: put_label(u, IMAGE, "l.png", mask_png(lesion_mask(1) + lesion_mask(2)[::-1])),
        400,
        "found 0, 1, 2",
    ),
    "label_colour": (
        lambda u: put_label(u, IMAGE, "l.png", encode(Image.fromarray(rgb(*SIZE_HW)), "PNG")),
        400,
        "colour",
    ),
    "delete_unknown_image": (lambda u: httpx.delete(f"{u}/datastore/", params={"id": "no_such"}), 404, "not in"),
    "delete_unknown_label": (
        lambda u: httpx.delete(f"{u}/datastore/label", params={"id": IMAGE, "tag": "nope"}),
        404,
        "no 'nope' label",
    ),
    "infer_unknown_image": (lambda u: httpx.post(f"{u}/infer/unet", params={"image": "no_such"}), 404, "not in"),
    "infer_dotdot_image": (lambda u: httpx.post(f"{u}/infer/unet", params={"image": "../no_such"}), 400, "plain"),
    "infer_server_path": (lambda u: httpx.post(f"{u}/infer/unet", params={"image": "/etc/passwd"}), 400, "image id"),
    "infer_path_in_params": (
        lambda u: httpx.post(
            f"{u}/infer/unet", params={"image": IMAGE}, data={"params": json.dumps({"image": "/etc/passwd"})}
        ),
        400,
        "image id",
    ),
    "infer_params_not_json": (lambda u: infer_with(u, "{foreground: [[1, 2, 0]]"), 400, "params is not JSON"),
    "infer_params_a_list": (lambda u: infer_with(u, "[1, 2, 3]"), 400, "JSON object"),
    "infer_threshold_above_1": (lambda u: infer_with(u, json.dumps({"threshold": 1.5})), 400, "threshold"),
    "infer_threshold_text": (lambda u: infer_with(u, json.dumps({"threshold": "half"})), 400, "threshold"),
    "infer_jpeg_result": (lambda u: infer_with(u, json.dumps({"result_extension": ".jpg"})), 400, "result_extension"),
    "infer_unknown_model": (lambda u: httpx.post(f"{u}/infer/deepedt", params={"image": IMAGE}), 404, "no model"),
    "infer_no_image": (lambda u: httpx.post(f"{u}/infer/unet", params={"output": "image"}), 400, "no image"),
    "infer_tta_maybe": (lambda u: infer_with(u, json.dumps({"tta": "maybe"})), 400, "tta must be true or false"),
    "label_params_not_json": (
        lambda u: put_label(u, IMAGE, "l.png", mask_png(lesion_mask()), params="not json"),
        400,
        "params is not JSON",
    ),
    "image_info_a_list": (
        lambda u: httpx.put(f"{u}/datastore/image/info", params={"image": IMAGE}, data={"info": "[1]"}),
        400,
        "info must be a JSON object",
    ),
    "train_unknown_model": (lambda u: train(u, "bogus", {"max_epochs": 1}), 404, "no model 'bogus' to train"),
    "train_epochs_text": (lambda u: train(u, "unet", {"max_epochs": "abc"}), 400, "max_epochs must be a whole"),
    "train_epochs_negative": (lambda u: train(u, "unet", {"max_epochs": -1}), 400, "from 1 to"),
    "train_batch_size_0": (lambda u: train(u, "unet", {"batch_size": 0}), 400, "batch_size must be"),
    "train_val_fraction": (lambda u: train(u, "unet", {"val_fraction": 1.5}), 400, "between 0 and 1, got 1.5"),
    "train_lr_text": (lambda u: train(u, "unet", {"lr": "x"}), 400, "lr must be a number"),
    "unknown_strategy": (lambda u: next_sample(u, "bogus"), 404, "no strategy 'bogus'"),
    "power_beta_negative": (lambda u: next_sample(u, "power", {"beta": -3}), 400, "beta must be a number"),
    "power_beta_huge": (lambda u: next_sample(u, "power", {"seed": 3, "beta": 1e308}), 400, "from 0 to 100"),
    "power_seed_text": (lambda u: next_sample(u, "power", {"seed": "abc"}), 400, "seed must be a whole number"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES) + list(BAD_REQUESTS))
def test_bad_input_is_a_clear_4xx_and_changes_nothing(url: str, unchanged: None, case: str) -> None:
    send, code, message = {**BAD_IMAGES, **BAD_REQUESTS}[case]
    response = send(url)
    assert response.status_code == code, response.text
    assert message in response.json()["detail"]


def test_a_garbage_label_leaves_the_final_label_intact(url: str, workdir: Path) -> None:
    final = workdir / "studies" / "labels" / "final" / f"{IMAGE}.png"
    before = final.read_bytes()
    for name, data in [("l.png", b"junk"), ("l.png", mask_png(lesion_mask(7))), ("l.nrrd", b"NRRD0004\njunk")]:
        assert put_label(url, IMAGE, name, data).status_code == 400
    assert final.read_bytes() == before
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("kind", list(odd_images()))
def test_odd_but_valid_images_are_accepted_and_segmented_upright(url: str, workdir: Path, kind: str) -> None:
    ext, data, (h, w) = odd_images()[kind]
    response = put_image(url, f"{kind}{ext}", data)
    assert response.status_code == 200, response.text
    assert response.json()["image"] == kind
    result = httpx.post(f"{url}/infer/unet", params={"image": kind, "output": "image"}, timeout=60)
    assert result.status_code == 200, result.text
    with Image.open(io.BytesIO(result.content)) as mask:
        assert (mask.height, mask.width) == (h, w)
    # a label of the upright size, all zero ('no lesion'), is a valid annotation
    assert put_label(url, kind, "l.png", mask_png(np.zeros((h, w)))).status_code == 200


def test_valid_labels_in_either_encoding_and_from_slicer(url: str, workdir: Path) -> None:
    import itk

    final = workdir / "studies" / "labels" / "final"
    for image_id in ("lesion_005", "lesion_006"):
        with Image.open(next((workdir / "studies").glob(f"{image_id}.*"))) as img:
            hw = (img.height, img.width)
        if image_id == "lesion_005":
            assert put_label(url, image_id, "l.png", mask_png(lesion_mask(255, hw))).status_code == 200
            continue
        path = workdir / "slicer.nrrd"
        itk.imwrite(itk.image_from_array(lesion_mask(1, hw)[None]), str(path))
        response = put_label(url, image_id, f"{image_id}.seg.nrrd", path.read_bytes())
        assert response.status_code == 200, response.text
        stored = np.asarray(Image.open(final / f"{image_id}.png"))
        assert np.array_equal(stored, lesion_mask(1, hw))


def test_a_file_name_with_a_path_lands_inside_the_studies_folder(url: str, workdir: Path) -> None:
    parent = sorted(p.name for p in workdir.iterdir())
    response = put_image(url, "../../from_elsewhere.jpg", photo())
    assert response.status_code == 200 and response.json()["image"] == "from_elsewhere"
    assert (workdir / "studies" / "from_elsewhere.jpg").exists()
    assert sorted(p.name for p in workdir.iterdir()) == parent


def test_infer_on_a_corrupt_image_in_the_folder_is_422(url: str, workdir: Path) -> None:
    """Someone copies a broken file into the studies folder: its infer fails cleanly, others keep working."""
    (workdir / "studies" / "broken.jpg").write_bytes(photo(300, 300)[:700])
    deadline = time.monotonic() + 30
    while "broken" not in httpx.get(f"{url}/datastore/", params={"output": "all"}).json()["objects"]:
        assert time.monotonic() < deadline, "the datastore did not pick up the new file"
        time.sleep(0.5)
    for model in ("unet", "uncertainty"):
        response = httpx.post(f"{url}/infer/{model}", params={"image": "broken"}, timeout=60)
        assert response.status_code == 422 and "broken.jpg" in response.json()["detail"], (model, response.text)
    assert httpx.post(f"{url}/infer/unet", params={"image": "lesion_005", "output": "json"}, timeout=60).is_success


def test_infer_on_an_uploaded_photograph_still_works(url: str) -> None:
    """Uploads reach the infer task as the endpoint's temporary file: the path guard lets exactly those through."""
    response = httpx.post(
        f"{url}/infer/unet", params={"output": "json"}, files={"file": ("visit.jpg", photo(), "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["image_size"] == [48, 64]


def test_an_upload_declaring_a_huge_body_is_413_before_any_of_it_is_sent(url: str, unchanged: None) -> None:
    """10 GB declared and not a byte sent: the answer comes from the headers alone, so nothing is spooled."""
    parsed = urlsplit(url)
    head = (
        f"PUT /datastore/?image=huge HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 10737418240\r\n\r\n"
    )
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as s:
        s.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer
    detail = json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]
    assert "declares 10240.0 MB" in detail and "max_upload_mb" in detail
