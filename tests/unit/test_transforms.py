from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesion_app.core.transforms import (
    ORIGINAL_SIZE_KEY,
    LimitSided,
    RandColorJitterd,
    RandZoomInCropd,
    adjust_hue,
    binarize,
    infer_transforms,
    restore_size,
    train_transforms,
    val_transforms,
)


def asymmetric_mask(h: int = 300, w: int = 420) -> np.ndarray:
    """An L shape in the upper left plus a dot lower right: wrong under any flip or transpose."""
    mask = np.zeros((h, w), np.uint8)
    mask[30:200, 40:90] = 1
    mask[150:200, 40:250] = 1
    mask[240:280, 350:400] = 1
    return mask


def write_pair(folder: Path, mask: np.ndarray, label_scale: int = 1, suffix: str = ".jpg") -> dict[str, str]:
    """A photograph whose red channel is the mask (so image and label must stay aligned), and its label."""
    rgb = np.stack([mask * 200 + 30, np.full_like(mask, 90), np.full_like(mask, 60)], axis=-1).astype(np.uint8)
    image, label = folder / f"img{suffix}", folder / "img_label.png"
    Image.fromarray(rgb).save(image)
    Image.fromarray((mask * label_scale).astype(np.uint8)).save(label)
    return {"image": str(image), "label": str(label)}


def test_orientation_round_trip(tmp_path: Path) -> None:
    """Load, resize to 256, restore: the mask comes back where it was (rows first, no transpose)."""
    mask = asymmetric_mask()
    pair = write_pair(tmp_path, mask, label_scale=255)
    data = val_transforms((256, 256))(pair)
    assert data["image"].shape == (3, 256, 256) and data["label"].shape == (1, 256, 256)
    assert data[ORIGINAL_SIZE_KEY] == mask.shape
    # the image's red channel and the label agree at network resolution
    red = (data["image"][0] > 0.5).float()
    assert float((red == data["label"][0]).float().mean()) > 0.99
    restored = restore_size(data["label"], data[ORIGINAL_SIZE_KEY])[0].numpy() > 0.5
    iou = (restored & (mask > 0)).sum() / (restored | (mask > 0)).sum()
    assert iou > 0.97
    assert not np.array_equal(restored, restored[::-1]) and restored[40, 60] and not restored[260, 60]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_any_image_mode_loads_as_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("I;16", "CMYK") else "x.png")
    img.save(path)
    data = infer_transforms((64, 64))({"image": str(path)})
    assert data["image"].shape == (3, 64, 64)
    assert float(data["image"].min()) >= 0.0 and float(data["image"].max()) <= 1.0
    assert float(data["image"].max()) > 0.5  # intensities were not lost in the conversion
    assert data[ORIGINAL_SIZE_KEY] == (40, 60)


def test_exif_rotated_photo_is_loaded_upright(tmp_path: Path) -> None:
    mask = asymmetric_mask(60, 90)
    rgb = np.stack([mask * 255] * 3, axis=-1).astype(np.uint8)
    stored = Image.fromarray(np.rot90(rgb, k=-1).copy())  # stored rotated, EXIF says rotate back
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    data = infer_transforms((64, 64))({"image": str(path)})
    assert data[ORIGINAL_SIZE_KEY] == (60, 90)


@pytest.mark.parametrize("encoding", [1, 255])
def test_labels_are_binarised_whatever_their_encoding(tmp_path: Path, encoding: int) -> None:
    pair = write_pair(tmp_path, asymmetric_mask(), label_scale=encoding)
    label = val_transforms((256, 256))(pair)["label"]
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    assert binarize(np.array([0, 1, 2, 128, 255])).tolist() == [0, 0, 0, 1, 1]
    assert binarize(torch.tensor([0.0, 0.4, 0.6, 1.0])).tolist() == [0, 0, 1, 1]
    assert binarize(np.zeros((0,))).size == 0


def test_train_transforms_keep_image_and_label_aligned(tmp_path: Path) -> None:
    pair = write_pair(tmp_path, asymmetric_mask(), label_scale=255, suffix=".png")
    transform = train_transforms((128, 128))
    transform.set_random_state(seed=3)
    for _ in range(6):
        data = transform(pair)
        assert data["image"].shape == (3, 128, 128) and data["label"].shape == (1, 128, 128)
        assert set(torch.unique(data["label"]).tolist()) <= {0.0, 1.0}
        # the red channel (lesion 230 vs background 30, jittered) still marks the label
        red = data["image"][0]
        assert float(red[data["label"][0] > 0].mean()) > float(red[data["label"][0] == 0].mean()) + 0.2


def test_zoom_in_crops_frame_the_lesion_as_inference_does_and_stay_aligned(tmp_path: Path) -> None:
    mask = np.zeros((300, 420), np.uint8)
    mask[100:160, 150:240] = 1  # 60 x 90 lesion: the zoom-in's box is at least 200 px a side
    pair = write_pair(tmp_path, mask, label_scale=255, suffix=".png")
    whole = train_transforms((128, 128))(pair)["label"].mean()
    crops = RandZoomInCropd(["image", "label"], (128, 128), prob=1.0)
    crops.set_random_state(seed=0)
    data = {
        "image": torch.from_numpy(np.array(Image.open(pair["image"]))).permute(2, 0, 1).float(),
        "label": torch.from_numpy(mask)[None],
    }
    for _ in range(5):
        view = crops(data)
        assert view["image"].shape == (3, 128, 128) and set(torch.unique(view["label"]).tolist()) <= {0.0, 1.0}
        # the lesion fills much more of the box than of the photograph, and the red channel still marks it
        assert float(view["label"].mean()) > 2 * float(whole)
        red = view["image"][0]
        assert float(red[view["label"][0] > 0].mean()) > float(red[view["label"][0] == 0].mean()) + 100
    never = RandZoomInCropd(["image", "label"], (128, 128), prob=0.0)(data)
    assert torch.equal(
        never["label"],
        (torch.nn.functional.interpolate(data["label"][None].float(), (128, 128), mode="bilinear")[0] >= 0.5).float(),
    )
    # the training pipeline with zoom-in views: cached at the photograph's size as uint8, views at the network's
    pipeline = train_transforms((128, 128), zoom_crop=0.5)
    pipeline.set_random_state(seed=1)
    views = [pipeline(pair) for _ in range(8)]
    assert all(v["image"].shape == (3, 128, 128) and float(v["image"].max()) <= 1.0 for v in views)
    assert len({round(float(v["label"].mean()), 3) for v in views}) > 1  # whole photographs and boxes


def test_a_large_photograph_is_kept_at_the_zoom_sources_size_and_the_box_in_its_pixels() -> None:
    """Training keeps a 2048 px photograph at 1024 px, as inference keeps the zoom-in's source, and the box's least
    side stays 200 pixels of the photograph as read (100 of the kept copy)."""
    image = torch.zeros(3, 600, 2048, dtype=torch.uint8)
    label = torch.zeros(1, 600, 2048, dtype=torch.uint8)
    label[0, 300:320, 1000:1020] = 1
    kept = LimitSided(["image", "label"], 1024, mode=("area", "nearest"))(
        {"image": image, "label": label, ORIGINAL_SIZE_KEY: (600, 2048)}
    )
    assert kept["image"].shape == (3, 300, 1024) and kept["image"].dtype == torch.uint8
    assert kept["label"].shape == (1, 300, 1024) and int(kept["label"].sum()) == 100
    crop = RandZoomInCropd(["image", "label"], (50, 50), prob=1.0, expansion=(1.0, 1.0), shift=0.0)
    view = crop(kept)
    # a 10 x 10 lesion in a box of 100 x 100 kept pixels: a tenth of each side, a hundredth of the view
    assert float(view["label"].mean()) == pytest.approx(0.01, abs=0.005)
    small = {"image": image[:, :300, :400], "label": label[:, :300, :400]}
    assert LimitSided(["image", "label"], 1024)(small)["image"].shape == (3, 300, 400)  # smaller ones stay


def test_colour_jitter_stays_in_range_and_changes_colour() -> None:
    img = torch.rand(3, 16, 16)
    jitter = RandColorJitterd("image", prob=1.0)
    jitter.set_random_state(seed=0)
    out = jitter({"image": img})["image"]
    assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, img)
    gray = torch.full((3, 2, 2), 0.5)
    assert torch.allclose(adjust_hue(gray, 0.3), gray, atol=1e-5)  # hue leaves grays alone
    assert torch.allclose(adjust_hue(img, 1.0), img, atol=1e-4)  # a full turn is the identity
