"""The folder datastore (LesionDatastore): the shared datastore contract, then what only a folder does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion_app.lib.settings import LesionSettings
from lesion_app.server.datastore import LesionDatastore, local_datastore
from tests.contracts.datastores import DatastoreContract
from tests.support.errors import refused
from tests.support.files import folder_digest, write
from tests.support.images import encode, exif_rotated_jpeg, rgb


class TestLocalDatastore(DatastoreContract):
    @pytest.fixture()
    def datastore(self, tmp_path: Path) -> LesionDatastore:
        studies = tmp_path / "studies"
        studies.mkdir()
        (studies / "photo.jpg").write_bytes(encode(Image.fromarray(rgb(96, 128)), "JPEG"))
        return local_datastore(str(studies), LesionSettings())

    @pytest.fixture()
    def photo(self) -> tuple[str, tuple[int, int]]:
        return "photo", (96, 128)


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
        assert refused(fn)[0] == code
    assert folder_digest(studies) == before
    assert sorted(os.listdir(tmp_path)) == outside_before


def test_label_must_match_the_upright_image(store: LesionDatastore, tmp_path: Path) -> None:
    wrong = write(tmp_path, "w.png", encode(Image.fromarray(np.zeros((48, 64), np.uint8)), "PNG"))
    code, detail = refused(lambda: store.save_label("r", wrong, "final", {}))
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
        code, detail = refused(fn)
        assert code == 403 and "read_only" in detail
    assert ds.list_images() == ["a"] and ds.get_image_uri("a").endswith("a.jpg")
    ds.update_image_info("a", {"uncertainty": 0.5})  # scoring still works, in memory
    assert folder_digest(studies) == before and not (studies / "datastore_v2.json").exists()


def test_settings_parse_the_limits() -> None:
    s = LesionSettings.from_conf({"max_image_pixels": "1000", "max_upload_mb": "2.5", "read_only": "true"}, "/app")
    assert (s.max_image_pixels, s.max_upload_mb, s.read_only) == (1000, 2.5, True)
    with pytest.raises(ValueError, match="max_upload_mb"):
        LesionSettings.from_conf({"max_upload_mb": "0"}, "/app")


def test_a_removal_shows_at_once_so_the_id_can_be_used_again(tmp_path: Path) -> None:
    """With auto-reload on (the server's default), MONAI Label leaves a removed image or label listed until its file
    watcher notices; an upload under the same id right after was refused as existing."""
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "a.jpg").write_bytes(encode(Image.fromarray(rgb()), "JPEG"))
    ds = local_datastore(str(studies), LesionSettings())
    mask = np.zeros((48, 64), np.uint8)
    mask[5:15, 5:15] = 1
    ds.save_label("a", write(tmp_path, "label.png", encode(Image.fromarray(mask), "PNG")), "final", {})
    ds.remove_label("a", "final")
    assert ds.get_labeled_images() == [] and ds.datalist() == []
    ds.remove_image("a")
    assert ds.list_images() == []
    again = write(tmp_path, "again.png", encode(Image.fromarray(rgb(32, 40)), "PNG"))
    assert ds.add_image("a", again, {}) == "a" and ds.list_images() == ["a"]
    assert json.loads((studies / "datastore_v2.json").read_text())["objects"]["a"]["image"]["ext"] == ".png"
