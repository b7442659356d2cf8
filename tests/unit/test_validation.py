"""Request validation and the hardened datastore, without a server: every bad input is a clear 4xx."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from lesion_app.lib.settings import LesionSettings
from lesion_app.server import checks
from lesion_app.server.datastore import LesionDatastore
from tests.support.files import folder_digest
from tests.support.images import encode, exif_rotated_jpeg, odd_images, png_header_only, rgb


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def status(fn: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(HTTPException) as e:
        fn()
    return e.value.status_code, str(e.value.detail)


# -- ids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../evil",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "..",
        "x" * 129,
        "a\x00b",
        "a..b",
        ".hidden",
        "trailing.",
        "é",
        "a;b",
    ],
)
def test_bad_image_ids_are_400(bad: str) -> None:
    code, detail = status(lambda: checks.check_image_id(bad))
    assert code == 400 and "image id" in detail


@pytest.mark.parametrize("good", ["lesion_005", "ISIC_0000000", "IMG 1234 (1)", "a.b-c+d", "x" * 128])
def test_plain_image_ids_pass(good: str) -> None:
    assert checks.check_image_id(good) == good


def test_reference_checks_allow_names_the_strict_rule_refuses() -> None:
    """Images copied into the folder by hand may have any plain name; requests naming them must work."""
    assert checks.check_reference("photo é;1") == "photo é;1"
    assert status(lambda: checks.check_reference("../x"))[0] == 400


# -- extensions and sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.JPG", "a.jpeg", "a.png", "a.Tif", "a.tiff", "a.bmp", "a.v2.jpg"])
def test_image_extensions(name: str) -> None:
    assert checks.image_extension(name) == Path(name).suffix.lower()


@pytest.mark.parametrize("name", ["a.gif", "a.pdf", "a.nii.gz", "noext", "a.jpg.exe"])
def test_unsupported_image_extensions_are_400(name: str) -> None:
    code, detail = status(lambda: checks.image_extension(name))
    assert code == 400 and "accepted" in detail


def test_label_extensions() -> None:
    assert checks.label_extension("x.nii.gz") == ".nii.gz"
    assert checks.label_extension("x.seg.nrrd") == ".nrrd"
    code, detail = status(lambda: checks.label_extension("x.jpg"))
    assert code == 400 and "lossy" in detail


def test_upload_size(tmp_path: Path) -> None:
    empty = write(tmp_path, "e.png", b"")
    big = write(tmp_path, "b.png", b"x" * 2048)
    assert status(lambda: checks.check_upload_size(empty, 1024))[0] == 400
    code, detail = status(lambda: checks.check_upload_size(big, 1024))
    assert code == 413 and "max_upload_mb" in detail
    assert checks.check_upload_size(big, 4096) == 2048


# -- images -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(odd_images()))
def test_odd_but_valid_images_pass_with_their_upright_size(tmp_path: Path, kind: str) -> None:
    ext, data, hw = odd_images()[kind]
    assert checks.check_image_file(write(tmp_path, f"x{ext}", data), 10**6) == hw


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just some text, not a photograph\n" * 10, "not a readable image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "not a readable image"),
        (encode(Image.fromarray(rgb(200, 200)), "JPEG")[:600], "truncated"),
    ],
    ids=["text", "pdf", "truncated_jpeg"],
)
def test_garbage_images_are_400(tmp_path: Path, data: bytes, message: str) -> None:
    code, detail = status(lambda: checks.check_image_file(write(tmp_path, "x.jpg", data), 10**6))
    assert code == 400 and message in detail.lower()


def test_truncated_png_is_400(tmp_path: Path) -> None:
    data = encode(Image.fromarray(rgb(200, 200)), "PNG")
    code, _ = status(lambda: checks.check_image_file(write(tmp_path, "x.png", data[: len(data) // 2]), 10**6))
    assert code == 400


def test_a_decompression_bomb_is_413_from_its_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.png", png_header_only(100_000, 100_000))  # 10^10 pixels, 100 bytes
    code, detail = status(lambda: checks.check_image_file(path, 40_000_000))
    assert code == 413 and "max_image_pixels" in detail


def test_an_image_over_the_pixel_limit_is_413(tmp_path: Path) -> None:
    path = write(tmp_path, "x.png", encode(Image.fromarray(rgb(100, 100)), "PNG"))
    assert status(lambda: checks.check_image_file(path, 9_999))[0] == 413
    assert checks.check_image_file(path, 10_000) == (100, 100)


# -- labels -------------------------------------------------------------------------------------------------


def test_label_values() -> None:
    assert checks.check_label_values(np.array([[0, 255]], np.uint8)).tolist() == [[0, 1]]
    assert checks.check_label_values(np.zeros((4, 4), np.uint8)).sum() == 0  # 'no lesion' is an annotation
    assert checks.check_label_values(np.array([[True, False]])).tolist() == [[1, 0]]
    code, detail = status(lambda: checks.check_label_values(np.array([[0, 1, 2, 255]], np.uint8)))
    assert code == 400 and "found 0, 1, 2, 255" in detail


def test_label_size_message_names_both_sizes() -> None:
    code, detail = status(lambda: checks.check_label_size((10, 20), (48, 64), "x"))
    assert code == 400 and "20x10" in detail and "64x48" in detail


def test_labels_read_upright_and_single_channel(tmp_path: Path) -> None:
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 5:30] = 255
    assert checks.read_label(write(tmp_path, "l.png", encode(Image.fromarray(mask), "PNG")), ".png", 10**6).shape == (
        48,
        64,
    )
    gray_as_rgb = np.repeat(mask[..., None], 3, axis=2)
    path = write(tmp_path, "l.tif", encode(Image.fromarray(gray_as_rgb), "TIFF"))
    assert np.array_equal(checks.read_label(path, ".tif", 10**6), mask)
    colour = write(tmp_path, "c.png", encode(Image.fromarray(rgb()), "PNG"))
    code, detail = status(lambda: checks.read_label(colour, ".png", 10**6))
    assert code == 400 and "colour" in detail
    garbage = write(tmp_path, "g.png", b"garbage" * 100)
    assert status(lambda: checks.read_label(garbage, ".png", 10**6))[0] == 400


def test_slicer_labels_through_itk(tmp_path: Path) -> None:
    import itk

    mask = np.zeros((1, 48, 64), np.uint8)  # Slicer's single-slice volume
    mask[0, 10:20, 5:30] = 1
    path = str(tmp_path / "l.nrrd")
    itk.imwrite(itk.image_from_array(mask), path)
    assert np.array_equal(checks.read_label(path, ".nrrd", 10**6), mask[0])
    volume = str(tmp_path / "checks.nii.gz")
    itk.imwrite(itk.image_from_array(np.zeros((3, 48, 64), np.uint8)), volume)
    code, detail = status(lambda: checks.read_label(volume, ".nii.gz", 10**6))
    assert code == 400 and "2D slice" in detail
    assert status(lambda: checks.read_label(write(tmp_path, "g.nrrd", b"NRRD0004\ngarbage"), ".nrrd", 10**6))[0] == 400


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    dest = tmp_path / "label.png"
    dest.write_bytes(b"old")

    def fail(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(HTTPException) as refused:
        checks.stored(dest, fail)
    assert refused.value.status_code == 507 and "No space left" in refused.value.detail
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["label.png"]
    checks.stored(dest, lambda f: f.write(b"new"))
    assert dest.read_bytes() == b"new" and os.listdir(tmp_path) == ["label.png"]


# -- the datastore class ------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LesionDatastore:
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "a.jpg").write_bytes(encode(Image.fromarray(rgb()), "JPEG"))
    (studies / "r.jpg").write_bytes(exif_rotated_jpeg())
    ds = LesionDatastore(str(studies), extensions=["*.jpg", "*.png"], auto_reload=False)
    mask = np.zeros((48, 64), np.uint8)
    mask[5:15, 5:15] = 1
    ds.save_label("a", write(tmp_path, "first.png", encode(Image.fromarray(mask), "PNG")), "final", {})
    return ds


def test_datastore_refuses_bad_writes_and_changes_nothing(store: LesionDatastore, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    before = folder_digest(studies)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    outside_before = sorted(os.listdir(tmp_path))
    good = write(uploads, "up.png", encode(Image.fromarray(rgb()), "PNG"))
    cases = [
        (lambda: store.add_image("../escape", good, {}), 400),
        (lambda: store.add_image(str(tmp_path / "abs"), good, {}), 400),
        (lambda: store.add_image("a", good, {}), 409),
        (lambda: store.add_image("new", write(uploads, "t.jpg", b"text"), {}), 400),
        (lambda: store.save_label("nope", good, "final", {}), 404),
        (lambda: store.save_label("a", good, "../../x", {}), 400),
        (lambda: store.save_label("a", write(uploads, "g.png", b"garbage"), "final", {}), 400),
        (lambda: store.save_label("a", good, "final", {}), 400),  # colour, wrong values
        (lambda: store.remove_image("nope"), 404),
        (lambda: store.remove_label("a", "original"), 404),
        (lambda: store.get_image_uri("nope"), 404),
        (lambda: store.get_image_uri("../a"), 400),
    ]
    for fn, code in cases:
        assert status(fn)[0] == code
    assert folder_digest(studies) == before
    assert sorted(os.listdir(tmp_path)) == outside_before


def test_label_must_match_the_upright_image(store: LesionDatastore, tmp_path: Path) -> None:
    wrong = write(tmp_path, "w.png", encode(Image.fromarray(np.zeros((48, 64), np.uint8)), "PNG"))
    code, detail = status(lambda: store.save_label("r", wrong, "final", {}))
    assert code == 400 and "48x64" in detail
    upright = write(tmp_path, "u.png", encode(Image.fromarray(np.zeros((64, 48), np.uint8)), "PNG"))
    assert store.save_label("r", upright, "final", {}) == "r"


def test_non_png_labels_are_stored_as_png(store: LesionDatastore, tmp_path: Path) -> None:
    mask = np.zeros((48, 64), np.uint8)
    mask[20:30, 20:40] = 255
    store.save_label("a", write(tmp_path, "l.tif", encode(Image.fromarray(mask), "TIFF")), "final", {})
    stored = tmp_path / "studies" / "labels" / "final" / "a.png"
    assert np.array_equal(np.asarray(Image.open(stored)), (mask > 0).astype(np.uint8))
    data = json.loads((tmp_path / "studies" / "datastore_v2.json").read_text())
    assert data["objects"]["a"]["labels"]["final"]["ext"] == ".png"


def test_read_only_refuses_writes_with_403(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "a.jpg").write_bytes(encode(Image.fromarray(rgb()), "JPEG"))
    ds = LesionDatastore(str(studies), extensions=["*.jpg"], auto_reload=False, read_only=True)
    before = folder_digest(studies)
    good = write(tmp_path, "up.png", encode(Image.fromarray(np.zeros((48, 64), np.uint8)), "PNG"))
    for fn in [
        lambda: ds.add_image("b", good, {}),
        lambda: ds.save_label("a", good, "final", {}),
        lambda: ds.remove_image("a"),
        lambda: ds.remove_label("a", "final"),
    ]:
        code, detail = status(fn)
        assert code == 403 and "read_only" in detail
    assert ds.list_images() == ["a"] and ds.get_image_uri("a").endswith("a.jpg")
    ds.update_image_info("a", {"uncertainty": 0.5})  # scoring still works, in memory
    assert folder_digest(studies) == before and not (studies / "datastore_v2.json").exists()


def test_settings_parse_the_limits() -> None:
    s = LesionSettings.from_conf({"max_image_pixels": "1000", "max_upload_mb": "2.5", "read_only": "true"}, "/app")
    assert (s.max_image_pixels, s.max_upload_mb, s.read_only) == (1000, 2.5, True)
    with pytest.raises(ValueError, match="max_upload_mb"):
        LesionSettings.from_conf({"max_upload_mb": "0"}, "/app")
