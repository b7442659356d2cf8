"""What every next-sample strategy must do: hand out an unlabelled photograph, or nothing once every photograph
is labelled, under any sequence of requests (many in a row, one left, none left), never failing.

A subclass gives ``make(datastore, tmp_path)``, the strategy under test. ``sample`` does what MONAI Label's
``/activelearning/<strategy>`` endpoint does around a strategy: the call, then the hand-out time in the image's info.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monailabel.interfaces.tasks.strategy import Strategy
from PIL import Image

from apps.make_sample_data import draw_study
from lesion_app.lib.settings import LesionSettings
from lesion_app.server.datastore import LesionDatastore, local_datastore

IMAGES = 5


def sample(strategy: Strategy, name: str, datastore: LesionDatastore) -> dict[str, Any]:
    """One ``/activelearning/<name>`` request as MONAI Label's endpoint makes it: ``{}`` when nothing is offered."""
    result = strategy({"strategy": name}, datastore)
    if not result or not result.get("id"):
        return {}
    info = datastore.get_image_info(result["id"]).get("strategy", {})
    datastore.update_image_info(result["id"], {"strategy": {**info, name: {"ts": int(time.time())}}})
    return result


def drawn_datastore(tmp_path: Path) -> LesionDatastore:
    """Five drawn 64x48 photographs, none labelled."""
    root = tmp_path / "studies"
    root.mkdir()
    rng = np.random.default_rng(7)
    for i in range(IMAGES):
        Image.fromarray(draw_study(rng, (48, 64))[0]).save(root / f"photo_{i}.png")
    return local_datastore(str(root), LesionSettings())


def label(datastore: LesionDatastore, image_id: str, tmp_path: Path) -> None:
    path = tmp_path / f"label_{image_id}.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(path)
    datastore.save_label(image_id, str(path), "final", {})


class StrategyContract:
    """Every strategy through the same sequences of requests."""

    name = ""

    def make(self, datastore: LesionDatastore, tmp_path: Path) -> Strategy:
        raise NotImplementedError

    @pytest.fixture()
    def datastore(self, tmp_path: Path) -> LesionDatastore:
        return drawn_datastore(tmp_path)

    def test_many_requests_in_a_row_each_hand_out_an_unlabelled_image(
        self, datastore: LesionDatastore, tmp_path: Path
    ) -> None:
        strategy = self.make(datastore, tmp_path)
        for _ in range(3 * IMAGES):  # more requests than images, faster than a second apart
            assert sample(strategy, self.name, datastore)["id"] in datastore.get_unlabeled_images()

    def test_labelled_images_are_never_handed_out(self, datastore: LesionDatastore, tmp_path: Path) -> None:
        strategy = self.make(datastore, tmp_path)
        for image_id in sorted(datastore.list_images())[:-1]:
            label(datastore, image_id, tmp_path)
        (last,) = datastore.get_unlabeled_images()
        assert {sample(strategy, self.name, datastore)["id"] for _ in range(IMAGES)} == {last}
        label(datastore, last, tmp_path)
        assert [sample(strategy, self.name, datastore) for _ in range(3)] == [{}, {}, {}]
