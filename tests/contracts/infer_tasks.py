"""What every infer task that returns a lesion mask must do, called as MONAI Label calls it: a single-channel 0/1
PNG at the photograph's upright size (EXIF applied, any aspect), the result JSON naming the model file, and a
photograph that cannot be decoded answered 422.

A subclass gives ``task`` (the infer task under test, on fresh model files) and may add ``params`` (what every
request carries, e.g. no clicks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monailabel.interfaces.tasks.infer_v2 import InferTask
from PIL import Image

from tests.support.errors import refused
from tests.support.images import exif_rotated_jpeg, rgb


class InferTaskContract:
    """The shared behaviour of the mask-returning infer tasks."""

    params: dict[str, Any] = {}

    @pytest.fixture()
    def photos(self, tmp_path: Path) -> dict[str, tuple[str, tuple[int, int]]]:
        """A non-square JPEG, a PNG, and a JPEG whose EXIF orientation turns it: path and upright (H, W)."""
        Image.fromarray(rgb(90, 140)).save(tmp_path / "wide.jpg")
        Image.fromarray(rgb(120, 64)).save(tmp_path / "tall.png")
        (tmp_path / "turned.jpg").write_bytes(exif_rotated_jpeg(48, 64))
        return {
            "wide": (str(tmp_path / "wide.jpg"), (90, 140)),
            "tall": (str(tmp_path / "tall.png"), (120, 64)),
            "turned": (str(tmp_path / "turned.jpg"), (64, 48)),
        }

    def infer(self, task: InferTask, image: str, **params: Any) -> tuple[str, dict[str, Any]]:
        return task({"image": image, "device": "cpu", **self.params, **params})

    @pytest.mark.parametrize("kind", ["wide", "tall", "turned"])
    def test_a_0_1_mask_of_the_upright_photographs_size(
        self, task: InferTask, photos: dict[str, tuple[str, tuple[int, int]]], kind: str
    ) -> None:
        path, (h, w) = photos[kind]
        result_file, result = self.infer(task, path)
        with Image.open(result_file) as mask:
            assert mask.mode == "L" and mask.size == (w, h)
            assert set(np.unique(np.asarray(mask))) <= {0, 1}
        assert result["image_size"] == [h, w]
        assert result["model_path"]

    def test_an_undecodable_photograph_is_422(self, task: InferTask, tmp_path: Path) -> None:
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
        code, detail = refused(lambda: self.infer(task, str(broken)))
        assert code == 422 and "broken.jpg" in detail
