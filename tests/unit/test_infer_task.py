"""The segmentation infer task outside the server: the shared infer-task contract, then model files, writers,
ensembles and request options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesion_app.core.checkpoint import network_spec, save_model
from lesion_app.core.networks import build_network
from lesion_app.io.images import write_mask
from lesion_app.lib.infers.segmentation import SegmentationInfer
from tests.contracts.infer_tasks import InferTaskContract


@pytest.fixture()
def photo(tmp_path: Path) -> str:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)).save(path)
    return str(path)


def make_task(paths: list[Path]) -> SegmentationInfer:
    return SegmentationInfer([[str(p) for p in paths]], (64, 64), "test")


class TestSegmentationInfer(InferTaskContract):
    @pytest.fixture()
    def task(self, tmp_path: Path) -> SegmentationInfer:
        model = tmp_path / "pretrained_unet.pt"
        save_model(model, build_network("unet"), network_spec("unet"), {"epoch": 1})
        return make_task([model])


class TestEnsembleInfer(InferTaskContract):
    @pytest.fixture()
    def task(self, tmp_path: Path) -> SegmentationInfer:
        members = []
        for arch in ("unet", "deeplabv3"):
            save_model(tmp_path / f"pretrained_{arch}.pt", build_network(arch), network_spec(arch), {})
            members.append([str(tmp_path / f"pretrained_{arch}.pt")])
        return SegmentationInfer(members, (64, 64), "test")


def test_mask_has_the_photograph_size(tmp_path: Path, photo: str) -> None:
    good = tmp_path / "pretrained_unet.pt"
    save_model(good, build_network("unet"), network_spec("unet", {}), {"epoch": 7})
    result_file, result = make_task([good])({"image": photo, "device": "cpu"})
    with Image.open(result_file) as mask:
        assert mask.size == (140, 90) and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 1}
    assert result["model_path"] == "pretrained_unet.pt" and result["model_epoch"] == 7
    assert result["image_size"] == [90, 140]


def test_an_unreadable_newest_model_falls_back_to_the_shipped_one(tmp_path: Path, photo: str) -> None:
    good, broken = tmp_path / "pretrained_unet.pt", tmp_path / "unet.pt"
    save_model(good, build_network("unet"), network_spec("unet", {}), {"epoch": 1})
    broken.write_bytes(good.read_bytes()[:1000])  # truncated, as after a crash mid-copy
    task = make_task([good, broken])
    _, result = task({"image": photo, "device": "cpu"})
    assert result["model_path"] == "pretrained_unet.pt"
    # once the file is replaced by a good one, it is used again
    save_model(broken, build_network("unet"), network_spec("unet", {}), {"epoch": 2})
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
    save_model(plain, build_network("unet", attention=False), network_spec("unet", {"attention": False}), {"epoch": 3})
    task = make_task([plain])
    _, result = task({"image": photo, "device": "cpu"})
    (network,) = task.networks("cpu")
    assert result["model_epoch"] == 3
    assert not any(type(m).__name__ == "SpatialAttention" for m in network.modules())


def test_ensemble_averages_its_members(tmp_path: Path, photo: str) -> None:
    unet, deeplab = tmp_path / "pretrained_unet.pt", tmp_path / "pretrained_deeplabv3.pt"
    save_model(unet, build_network("unet"), network_spec("unet", {}), {"epoch": 1})
    save_model(deeplab, build_network("deeplabv3"), network_spec("deeplabv3", {}), {"epoch": 2})
    task = SegmentationInfer([[str(unet)], [str(deeplab)]], (64, 64), "test")
    result_file, result = task({"image": photo, "device": "cpu"})
    assert result["model_paths"] == ["pretrained_unet.pt", "pretrained_deeplabv3.pt"]
    predictor = task.predictor({"tta": False}, "cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        members = [torch.sigmoid(m(x)) for m in predictor.networks]
        assert len(members) == 2
        assert torch.allclose(predictor.batch_probabilities(x), (members[0] + members[1]) / 2, atol=1e-5)
    with Image.open(result_file) as mask:
        assert mask.size == (140, 90)


def test_tta_and_postprocess_are_request_options(tmp_path: Path) -> None:
    """Clean-up leaves one region without holes; TTA changes the probabilities of a non-symmetric network."""
    good = tmp_path / "pretrained_unet.pt"
    save_model(good, build_network("unet"), network_spec("unet", {}), {})
    task = make_task([good])
    two_blobs = np.zeros((40, 40), np.float32)
    two_blobs[2:12, 2:12] = 1
    two_blobs[20:38, 20:38] = 1
    two_blobs[25:28, 25:28] = 0  # a hole
    cleaned = task.predictor({"postprocess": True}, "cpu").mask_from(two_blobs)
    kept = task.predictor({"postprocess": "false"}, "cpu").mask_from(two_blobs)
    assert cleaned.sum() == 18 * 18 and cleaned[:12, :12].sum() == 0
    assert np.array_equal(kept, two_blobs)
    assert task.predictor({"tta": True}, "cpu").tta and not task.predictor({"tta": "0"}, "cpu").tta
    x = torch.rand(1, 3, 64, 64)
    with_flips = task.predictor({"tta": True}, "cpu").batch_probabilities(x)
    without = task.predictor({"tta": False}, "cpu").batch_probabilities(x)
    assert not torch.allclose(with_flips, without)
