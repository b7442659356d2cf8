"""Request validation and the hardened datastore, without a server: every bad input is a clear 4xx."""

from __future__ import annotations

import base64
import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from lesion_app.server import checks
from tests.support.errors import refused
from tests.support.files import write
from tests.support.images import encode, odd_images, png_header_only, rgb

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
    code, detail = refused(lambda: checks.check_image_id(bad))
    assert code == 400 and "image id" in detail


@pytest.mark.parametrize("good", ["lesion_005", "ISIC_0000000", "IMG 1234 (1)", "a.b-c+d", "x" * 128])
def test_plain_image_ids_pass(good: str) -> None:
    assert checks.check_image_id(good) == good


def test_reference_checks_allow_names_the_strict_rule_refuses() -> None:
    """Images copied into the folder by hand may have any plain name; requests naming them must work."""
    assert checks.check_reference("photo é;1") == "photo é;1"
    assert refused(lambda: checks.check_reference("../x"))[0] == 400


# -- extensions and sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.JPG", "a.jpeg", "a.png", "a.Tif", "a.tiff", "a.bmp", "a.v2.jpg"])
def test_image_extensions(name: str) -> None:
    assert checks.image_extension(name) == Path(name).suffix.lower()


@pytest.mark.parametrize("name", ["a.gif", "a.pdf", "a.nii.gz", "noext", "a.jpg.exe"])
def test_unsupported_image_extensions_are_400(name: str) -> None:
    code, detail = refused(lambda: checks.image_extension(name))
    assert code == 400 and "accepted" in detail


def test_label_extensions() -> None:
    assert checks.label_extension("x.nii.gz") == ".nii.gz"
    assert checks.label_extension("x.seg.nrrd") == ".nrrd"
    code, detail = refused(lambda: checks.label_extension("x.jpg"))
    assert code == 400 and "lossy" in detail


def test_upload_size(tmp_path: Path) -> None:
    empty = write(tmp_path, "e.png", b"")
    big = write(tmp_path, "b.png", b"x" * 2048)
    assert refused(lambda: checks.check_upload_size(empty, 1024))[0] == 400
    code, detail = refused(lambda: checks.check_upload_size(big, 1024))
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
    code, detail = refused(lambda: checks.check_image_file(write(tmp_path, "x.jpg", data), 10**6))
    assert code == 400 and message in detail.lower()


def test_truncated_png_is_400(tmp_path: Path) -> None:
    data = encode(Image.fromarray(rgb(200, 200)), "PNG")
    code, _ = refused(lambda: checks.check_image_file(write(tmp_path, "x.png", data[: len(data) // 2]), 10**6))
    assert code == 400


def test_a_decompression_bomb_is_413_from_its_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.png", png_header_only(100_000, 100_000))  # 10^10 pixels, 100 bytes
    code, detail = refused(lambda: checks.check_image_file(path, 40_000_000))
    assert code == 413 and "max_image_pixels" in detail


def test_an_image_over_the_pixel_limit_is_413(tmp_path: Path) -> None:
    path = write(tmp_path, "x.png", encode(Image.fromarray(rgb(100, 100)), "PNG"))
    assert refused(lambda: checks.check_image_file(path, 9_999))[0] == 413
    assert checks.check_image_file(path, 10_000) == (100, 100)


# -- labels -------------------------------------------------------------------------------------------------


def test_label_values() -> None:
    assert checks.check_label_values(np.array([[0, 255]], np.uint8)).tolist() == [[0, 1]]
    assert checks.check_label_values(np.zeros((4, 4), np.uint8)).sum() == 0  # 'no lesion' is an annotation
    assert checks.check_label_values(np.array([[True, False]])).tolist() == [[1, 0]]
    code, detail = refused(lambda: checks.check_label_values(np.array([[0, 1, 2, 255]], np.uint8)))
    assert code == 400 and "found 0, 1, 2, 255" in detail


def test_label_size_message_names_both_sizes() -> None:
    code, detail = refused(lambda: checks.check_label_size((10, 20), (48, 64), "x"))
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
    code, detail = refused(lambda: checks.read_label(colour, ".png", 10**6))
    assert code == 400 and "colour" in detail
    garbage = write(tmp_path, "g.png", b"garbage" * 100)
    assert refused(lambda: checks.read_label(garbage, ".png", 10**6))[0] == 400


def test_slicer_labels_through_itk(tmp_path: Path) -> None:
    import itk

    mask = np.zeros((1, 48, 64), np.uint8)  # Slicer's single-slice volume
    mask[0, 10:20, 5:30] = 1
    path = str(tmp_path / "l.nrrd")
    itk.imwrite(itk.image_from_array(mask), path)
    assert np.array_equal(checks.read_label(path, ".nrrd", 10**6), mask[0])
    volume = str(tmp_path / "checks.nii.gz")
    itk.imwrite(itk.image_from_array(np.zeros((3, 48, 64), np.uint8)), volume)
    code, detail = refused(lambda: checks.read_label(volume, ".nii.gz", 10**6))
    assert code == 400 and "2D slice" in detail
    assert refused(lambda: checks.read_label(write(tmp_path, "g.nrrd", b"NRRD0004\ngarbage"), ".nrrd", 10**6))[0] == 400


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


# -- infer options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", ["", None, "{}", '{"threshold": 0.4, "foreground": [[1, 2, 0]]}'])
def test_params_that_are_json_objects_pass(params: str | None) -> None:
    checks.json_object_field(params)


@pytest.mark.parametrize(
    ("params", "message"),
    [("{foreground: [[1, 2, 0]]", "not JSON"), ("[1, 2, 3]", "got list"), ('"text"', "got str"), ("3", "got int")],
)
def test_params_that_are_no_json_object_are_400(params: str, message: str) -> None:
    status, detail = refused(lambda: checks.json_object_field(params))
    assert status == 400 and message in detail


@pytest.mark.parametrize(
    "request_",
    [
        {},
        {"threshold": 0.3},
        {"threshold": "0.7", "result_extension": ".nrrd"},
        {"result_extension": ""},
        {"pixel_spacing_mm": "0.02"},
        {"pixel_spacing_mm": ""},
    ],
)
def test_infer_options_in_range_pass(request_: dict) -> None:
    checks.infer_options({"image": "lesion_001", **request_})


def test_infer_options_read_boolean_options_as_booleans() -> None:
    request_ = {"image": "lesion_001", "tta": "false", "postprocess": 1, "save_label": "TRUE"}
    checks.infer_options(request_)
    assert request_ == {"image": "lesion_001", "tta": False, "postprocess": True, "save_label": True}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": "half"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": None}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"result_extension": ".jpg"}, ".png, .nii.gz, .nrrd"),
        ({"tta": "maybe"}, "tta must be true or false, got 'maybe'"),
        ({"postprocess": 5}, "postprocess must be true or false, got 5"),
        ({"save_label": None}, "save_label must be true or false"),
        ({"image": ""}, "no image"),
        ({"pixel_spacing_mm": 0}, "pixel_spacing_mm: pixel spacing must be a positive number"),
        ({"pixel_spacing_mm": "-0.1"}, "pixel_spacing_mm: pixel spacing must be a positive number"),
        ({"pixel_spacing_mm": "wide"}, "got 'wide'"),
    ],
)
def test_infer_options_out_of_range_are_400(request_: dict, message: str) -> None:
    status, detail = refused(lambda: checks.infer_options({"image": "lesion_001", **request_}))
    assert status == 400 and message in detail


# -- masks a client sends (previous_mask) ---------------------------------------------------------------------


def _png_base64(img: Image.Image) -> str:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _canvas_mask(lesion: np.ndarray) -> Image.Image:
    """What a browser's canvas writes for a mask drawn white on transparent: RGBA, the skin (0, 0, 0, 0)."""
    pixels = np.zeros((*lesion.shape, 4), np.uint8)
    pixels[lesion] = 255
    return Image.fromarray(pixels, "RGBA")


def test_a_sent_mask_reads_the_same_from_grey_1_bit_rgb_and_a_canvas_rgba() -> None:
    lesion = np.zeros((30, 40), bool)
    lesion[5:20, 8:30] = True
    grey = Image.fromarray(lesion.astype(np.uint8) * 255)
    for img in (grey, grey.convert("1"), grey.convert("RGB"), grey.convert("LA"), _canvas_mask(lesion)):
        assert np.array_equal(checks.png_mask(_png_base64(img), "previous_mask", (30, 40)), lesion), img.mode
    data_url = checks.PNG_DATA_PREFIX + _png_base64(_canvas_mask(lesion))
    assert np.array_equal(checks.png_mask(data_url, "previous_mask", (30, 40)), lesion)


def test_a_transparent_pixel_is_skin_whatever_its_colour() -> None:
    pixels = np.full((10, 10, 4), 255, np.uint8)
    pixels[:, :5, 3] = 0  # left half transparent (white under it)
    got = checks.png_mask(_png_base64(Image.fromarray(pixels, "RGBA")), "previous_mask", (10, 10))
    assert not got[:, :5].any() and got[:, 5:].all()


@pytest.mark.parametrize("mode", ["P", "I;16"])
def test_a_sent_mask_of_another_mode_is_a_400_naming_it(mode: str) -> None:
    with pytest.raises(HTTPException) as e:
        checks.png_mask(_png_base64(Image.new("L", (40, 30)).convert(mode)), "previous_mask", (30, 40))
    assert e.value.status_code == 400 and "previous_mask" in e.value.detail
