"""The infer task outside the server: restoring size and orientation, writing, falling back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose
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


def test_the_network_is_rebuilt_from_the_model_file(tmp_path: Path, photo: str) -> None:
    """A model trained without attention (or with other widths) is served as its file describes."""
    plain = tmp_path / "pretrained_unet.pt"
    save_model(plain, build_network("unet", attention=False), "unet", {"attention": False}, {"epoch": 3})
    task = make_task([plain])
    _, result = task({"image": photo, "device": "cpu"})
    network = task._get_network("cpu", None)
    assert result["model_epoch"] == 3
    assert not any(type(m).__name__ == "SpatialAttention" for m in network.modules())


def test_ensemble_averages_its_members(tmp_path: Path, photo: str) -> None:
    unet, deeplab = tmp_path / "pretrained_unet.pt", tmp_path / "pretrained_deeplabv3.pt"
    save_model(unet, build_network("unet"), "unet", {}, {"epoch": 1})
    save_model(deeplab, build_network("deeplabv3"), "deeplabv3", {}, {"epoch": 2})
    task = LesionInferTask(
        [str(unet), str(deeplab)], build_network("unet"), (64, 64), "test", members=[[str(unet)], [str(deeplab)]]
    )
    result_file, result = task({"image": photo, "device": "cpu"})
    assert result["model_paths"] == ["pretrained_unet.pt", "pretrained_deeplabv3.pt"]
    network = task._get_network("cpu", None)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        members = [torch.sigmoid(m(x)) for m in network.members]
        assert torch.allclose(torch.sigmoid(network(x)), (members[0] + members[1]) / 2, atol=1e-5)
    with Image.open(result_file) as mask:
        assert mask.size == (140, 90)


def test_tta_and_postprocess_are_request_options(tmp_path: Path) -> None:
    """Clean-up leaves one region without holes; TTA changes the probabilities of a non-symmetric network."""
    good = tmp_path / "pretrained_unet.pt"
    save_model(good, build_network("unet"), "unet", {}, {})
    task = make_task([good])
    two_blobs = np.zeros((1, 40, 40), np.float32)
    two_blobs[0, 2:12, 2:12] = 1
    two_blobs[0, 20:38, 20:38] = 1
    two_blobs[0, 25:28, 25:28] = 0  # a hole
    post = Compose(task.post_transforms({"postprocess": True})[2:])  # after sigmoid and resize
    raw = Compose(task.post_transforms({"postprocess": "false"})[2:])
    cleaned = np.asarray(post({"pred": torch.as_tensor(two_blobs)})["pred"])
    kept = np.asarray(raw({"pred": torch.as_tensor(two_blobs)})["pred"])
    assert cleaned.sum() == 18 * 18 and cleaned[:12, :12].sum() == 0
    assert np.array_equal(kept, two_blobs[0])
    assert type(task.inferer({"tta": True})).__name__ == "FlipInferer"
    assert type(task.inferer({"tta": "0"})).__name__ == "SimpleInferer"
