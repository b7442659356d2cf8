"""The infer task outside the server: restoring size and orientation, writing, falling back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion_app.lib.infers.lesion import LesionInferTask, write_mask
from lesion_app.lib.models import build_network, save_model


@pytest.fixture()
def photo(tmp_path: Path) -> str:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)).save(path)
    return str(path)


def make_task(paths: list[Path]) -> LesionInferTask:
    return LesionInferTask([str(p) for p in paths], build_network("unet"), (64, 64), "test")


def test_mask_has_the_photograph_size(tmp_path: Path, photo: str) -> None:
    good = tmp_path / "pretrained_unet.pt"
    save_model(good, build_network("unet"), "unet", {}, {"epoch": 7})
    result_file, result = make_task([good])({"image": photo, "device": "cpu"})
    with Image.open(result_file) as mask:
        assert mask.size == (140, 90) and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 1}
    assert result["model_path"] == "pretrained_unet.pt" and result["model_epoch"] == 7
    assert result["image_size"] == [90, 140]


def test_an_unreadable_newest_model_falls_back_to_the_shipped_one(tmp_path: Path, photo: str) -> None:
    good, broken = tmp_path / "pretrained_unet.pt", tmp_path / "unet.pt"
    save_model(good, build_network("unet"), "unet", {}, {"epoch": 1})
    broken.write_bytes(good.read_bytes()[:1000])  # truncated, as after a crash mid-copy
    task = make_task([good, broken])
    _, result = task({"image": photo, "device": "cpu"})
    assert result["model_path"] == "pretrained_unet.pt"
    # once the file is replaced by a good one, it is used again
    save_model(broken, build_network("unet"), "unet", {}, {"epoch": 2})
    _, result = task({"image": photo, "device": "cpu"})
    assert result["model_path"] == "unet.pt" and result["model_epoch"] == 2


def test_no_readable_model_is_an_error(tmp_path: Path, photo: str) -> None:
    broken = tmp_path / "pretrained_unet.pt"
    broken.write_bytes(b"not a model")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for a foreign file
        make_task([broken])({"image": photo, "device": "cpu"})


def test_nrrd_and_png_writers_keep_rows_first(tmp_path: Path) -> None:
    import itk

    mask = np.zeros((30, 50), np.uint8)
    mask[2:10, 5:40] = 1
    png, nrrd = write_mask(mask, ".png"), write_mask(mask, ".nrrd")
    assert np.array_equal(np.asarray(Image.open(png)), mask)
    image = itk.imread(nrrd)
    assert np.array_equal(itk.array_from_image(image), mask)
    assert tuple(image.GetLargestPossibleRegion().GetSize()) == (50, 30)  # ITK sizes are x first
    with pytest.raises(ValueError):
        write_mask(mask, ".jpg")
