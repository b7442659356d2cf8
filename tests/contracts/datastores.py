"""What every datastore of the app must do, whatever holds the photographs (a folder, a DICOMweb server):
list them, refuse what a request cannot name, take a final label round trip, and refuse a bad label without
changing anything.

A subclass gives two fixtures: ``datastore`` (a fresh datastore) and ``photo`` (an image id in it and the
photograph's upright (H, W)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monailabel.interfaces.datastore import Datastore
from PIL import Image

from lesion_app.io.images import read_mask
from tests.support.errors import refused


def l_shape(shape: tuple[int, int]) -> np.ndarray:
    """An L in the top-left part of an image of ``shape``: a flip or transpose anywhere would move it."""
    h, w = shape
    m = np.zeros(shape, np.uint8)
    m[h // 10 : h // 2, w // 16 : w // 6] = 1
    m[h // 2 - h // 10 : h // 2, w // 16 : w // 2] = 1
    return m


def label_file(tmp_path: Path, mask: np.ndarray, name: str = "label.png") -> str:
    path = tmp_path / name
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)
    return str(path)


class DatastoreContract:
    """The datastore behaviour every implementation shares."""

    def test_lists_its_photographs(self, datastore: Datastore, photo: tuple[str, tuple[int, int]]) -> None:
        image_id, _ = photo
        assert image_id in datastore.list_images()
        assert (image_id in datastore.get_labeled_images()) != (image_id in datastore.get_unlabeled_images())
        assert Path(datastore.get_image_uri(image_id)).is_file()

    def test_unknown_and_malformed_ids(self, datastore: Datastore) -> None:
        assert refused(lambda: datastore.get_image_uri("no_such_image"))[0] == 404
        assert refused(lambda: datastore.get_image_uri("../etc/passwd"))[0] == 400

    def test_a_final_label_round_trips(
        self, datastore: Datastore, photo: tuple[str, tuple[int, int]], tmp_path: Path
    ) -> None:
        image_id, size = photo
        mask = l_shape(size)
        datastore.save_label(image_id, label_file(tmp_path, mask * 255), "final", {})
        assert image_id in datastore.get_labeled_images()
        assert image_id not in datastore.get_unlabeled_images()
        (item,) = [
            d
            for d in datastore.datalist()
            if Path(d["image"]).resolve() == Path(datastore.get_image_uri(image_id)).resolve()
        ]
        assert np.array_equal(read_mask(item["label"]), mask.astype(bool))

    def test_bad_labels_are_refused_and_change_nothing(
        self, datastore: Datastore, photo: tuple[str, tuple[int, int]], tmp_path: Path
    ) -> None:
        image_id, (h, w) = photo
        before = sorted(datastore.get_labeled_images())
        code, detail = refused(
            lambda: datastore.save_label(image_id, label_file(tmp_path, np.zeros((w, h))), "final", {})
        )
        assert code == 400 and "transposed" in detail
        sevens = np.zeros((h, w), np.uint8)
        sevens[: h // 2] = 7
        code, detail = refused(lambda: datastore.save_label(image_id, label_file(tmp_path, sevens), "final", {}))
        assert code == 400 and "0/1 or 0/255" in detail
        garbage = tmp_path / "garbage.png"
        garbage.write_bytes(b"not a png" * 50)
        assert refused(lambda: datastore.save_label(image_id, str(garbage), "final", {}))[0] == 400
        assert sorted(datastore.get_labeled_images()) == before
