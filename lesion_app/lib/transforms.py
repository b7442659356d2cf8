"""MONAI transforms for 2D dermoscopy: loading, orientation, intensity, labels, augmentation, restoring.

Orientation: every array here is in numpy/PIL order, (C, H, W) with rows first. MONAI's PILReader is
used with ``reverse_indexing=False`` for that reason; its default (W, H) order would make weights that
predict transposed masks in any ordinary numpy pipeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandAffined,
    RandFlipd,
    RandomizableTransform,
    Resized,
    ScaleIntensityRanged,
)
from monai.utils import ensure_tuple
from PIL import Image, ImageOps

#: Where the loader records each image's original (H, W) so predictions can be restored to it.
ORIGINAL_SIZE_KEY = "original_size"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, upright as its EXIF orientation says (as viewers show it)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max()
        arr = arr * (255.0 / top) if top > 255 else arr
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def to_gray(img: Image.Image) -> Image.Image:
    """A label image as single-channel, upright like its photograph."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((arr > 0).astype(np.uint8), mode="L")
    return img.convert("L")


#: Files read through ITK: 3D Slicer's labels, and photographs the DICOMweb datastore caches with their geometry.
ITK_SUFFIXES = (".nrrd", ".nii", ".nii.gz")


def is_itk_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ITK_SUFFIXES)


def read_itk_slice(path: str | os.PathLike) -> np.ndarray:
    """The one 2D slice of an ITK file as (H, W) or (H, W, C), rows first; a single-slice volume is squeezed."""
    import itk

    image = itk.imread(str(path))
    arr = np.asarray(itk.array_from_image(image))
    components = int(image.GetNumberOfComponentsPerPixel())
    spatial = arr.shape[:-1] if components > 1 else arr.shape
    if len(spatial) < 2 or any(d != 1 for d in spatial[:-2]):
        raise ValueError(f"{Path(path).name} holds {'x'.join(map(str, spatial))} pixels, not one 2D slice")
    h, w = spatial[-2:]
    return arr.reshape(h, w, components) if components > 1 else arr.reshape(h, w)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file as a (H, W) boolean lesion mask, upright: PNG/TIFF 0/1 or 0/255, or 3D Slicer's NRRD/NIfTI.

    The one reader of label files outside the training pipeline (evaluation, figures, scoring, importers), so
    every program binarises a mask the way training does.
    """
    if is_itk_file(path):
        arr = np.squeeze(read_itk_slice(path))
    else:
        with Image.open(path) as img:
            arr = np.asarray(to_gray(img))
    return binarize(arr).astype(bool)


class PhotoReader(PILReader):
    """MONAI's PILReader that also reads one-slice NRRD/NIfTI files (rows first, like Pillow's arrays).

    The DICOMweb datastore caches photographs as RGB NRRD so that results and labels keep the DICOM frame's
    geometry; everything downstream still sees a Pillow image.
    """

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return super().verify_suffix(filename) or all(is_itk_file(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        images = []
        names = ensure_tuple(data)
        for name in names:
            if is_itk_file(name):
                img = Image.fromarray(np.ascontiguousarray(read_itk_slice(name)))
            else:
                img = Image.open(name, **{**self.kwargs, **kwargs})
            images.append(self.converter(img) if callable(self.converter) else img)
        return images if len(names) > 1 else images[0]


def binarize(label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Lesion = 1 whatever the encoding: 0/1, 0/255, or a soft or anti-aliased 8-bit mask."""
    size = label.numel() if isinstance(label, torch.Tensor) else label.size
    top = float(label.max()) if size else 0.0
    threshold = top / 2.0 if top > 1.0 else 0.5
    out = label > threshold
    return out.float() if isinstance(out, torch.Tensor) else out.astype(np.float32)


class BinarizeLabeld(MapTransform):
    """Dictionary wrapper of :func:`binarize`."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = binarize(d[key])
        return d


class RecordOriginalSized(MapTransform):
    """Stores the (H, W) of a channel-first image under ``ORIGINAL_SIZE_KEY`` before it is resized."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[ORIGINAL_SIZE_KEY] = tuple(int(s) for s in d[key].shape[1:])
        return d


def _rgb_to_gray(img: torch.Tensor) -> torch.Tensor:
    return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)


def adjust_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotates hue by ``shift`` of a full turn, in YIQ space (a cheap, close stand-in for HSV)."""
    if shift == 0.0:
        return img
    theta = 2.0 * math.pi * shift
    cos, sin = math.cos(theta), math.sin(theta)
    to_yiq = img.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rotate = img.new_tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    matrix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, img)


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Random brightness, contrast, saturation and hue of RGB images in [0, 1], without torchvision.

    Dermoscopes differ in white balance and exposure; jittering colour makes a model trained on one
    clinic's photographs hold up on another's. Each factor is drawn from ``[1 - x, 1 + x]``, the hue
    shift from ``[-hue, hue]`` of a full turn, and the four are applied in a random order.
    """

    def __init__(
        self,
        keys: KeysCollection,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.04,
        prob: float = 0.8,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        self.hue = hue
        self._factors: dict[str, float] = {}
        self._order: list[str] = []

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._factors = {k: float(self.R.uniform(1.0 - r, 1.0 + r)) for k, r in self.ranges.items()}
        self._factors["hue"] = float(self.R.uniform(-self.hue, self.hue))
        self._order = list(self.R.permutation(list(self._factors)))

    def jitter(self, img: torch.Tensor) -> torch.Tensor:
        for name in self._order:
            f = self._factors[name]
            if name == "brightness":
                img = img * f
            elif name == "contrast":
                img = (img - _rgb_to_gray(img).mean()) * f + _rgb_to_gray(img).mean()
            elif name == "saturation":
                gray = _rgb_to_gray(img)
                img = (img - gray) * f + gray
            else:
                img = adjust_hue(img, f)
        return img.clamp(0.0, 1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.jitter(torch.as_tensor(d[key]))
        return d


def load_transforms(image_key: str = "image", label_key: str | None = "label") -> list:
    """Reads the photograph as (3, H, W) RGB in [0, 255] and the label as (1, H, W) in {0, 1}."""
    xs: list = [
        LoadImaged(image_key, reader=PhotoReader(converter=to_rgb, reverse_indexing=False), image_only=True),
        EnsureChannelFirstd(image_key, channel_dim=-1),
    ]
    if label_key:
        xs += [
            LoadImaged(label_key, reader=PhotoReader(converter=to_gray, reverse_indexing=False), image_only=True),
            EnsureChannelFirstd(label_key, channel_dim="no_channel"),
            BinarizeLabeld(label_key),
        ]
    return [*xs, RecordOriginalSized(image_key)]


def preprocess_transforms(roi_size: Sequence[int], image_key: str = "image", label_key: str | None = "label") -> list:
    """The paper's preprocessing: intensities to [0, 1], resized to ``roi_size`` (256x256)."""
    keys = [image_key] + ([label_key] if label_key else [])
    modes = ["area"] + (["nearest"] if label_key else [])
    return [
        ScaleIntensityRanged(image_key, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys, spatial_size=tuple(roi_size), mode=modes),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
    ]


def augment_transforms(image_key: str = "image", label_key: str = "label") -> list:
    """Rotation, scaling, flips and colour jitter, as in the paper."""
    keys = [image_key, label_key]
    return [
        RandAffined(
            keys,
            prob=0.8,
            rotate_range=(math.pi,),
            scale_range=(0.2, 0.2),
            mode=("bilinear", "nearest"),
            padding_mode="reflection",
        ),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandColorJitterd(image_key),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
    ]


def train_transforms(roi_size: Sequence[int]) -> Compose:
    return Compose(load_transforms() + preprocess_transforms(roi_size) + augment_transforms())


def val_transforms(roi_size: Sequence[int]) -> Compose:
    return Compose(load_transforms() + preprocess_transforms(roi_size))


def infer_transforms(roi_size: Sequence[int], image_key: str = "image") -> Compose:
    return Compose(load_transforms(image_key, None) + preprocess_transforms(roi_size, image_key, None))


def restore_size(probs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Probabilities of shape (C, h, w) resized bilinearly to the original (H, W), before thresholding.

    Resizing probabilities and thresholding afterwards gives smooth borders; resizing a hard mask
    with nearest neighbours would give a staircase.
    """
    if tuple(probs.shape[1:]) == tuple(size):
        return probs
    return F.interpolate(probs[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


class RestoreSized(MapTransform):
    """Dictionary wrapper of :func:`restore_size`, reading the size the loader recorded."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = restore_size(torch.as_tensor(d[key]), d[ORIGINAL_SIZE_KEY])
        return d
