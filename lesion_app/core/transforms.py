"""MONAI transforms for 2D dermoscopy: loading, orientation, intensity, labels, augmentation, restoring.

Orientation: every array here is in numpy/PIL order, (C, H, W) with rows first. MONAI's PILReader is
used with ``reverse_indexing=False`` for that reason; its default (W, H) order would make weights that
predict transposed masks in any ordinary numpy pipeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
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
from PIL import Image

from lesion_app.core.zoom import ZoomIn
from lesion_app.io.images import binarize, is_itk_file, open_image, read_itk_slice, to_gray, to_rgb

#: Where the loader records each image's original (H, W) so predictions can be restored to it.
ORIGINAL_SIZE_KEY = "original_size"
#: Where the click model's loader keeps the photograph for the zoom-in: (3, H', W') uint8, the photograph at its
#: size or, past :data:`ZOOM_SOURCE_SIDE` on its longer side, area-resized to it.
ZOOM_SOURCE_KEY = "zoom_source"
#: Where the automatic and click models' loaders keep the photograph itself for the measurements' colour values:
#: (H, W, 3) uint8, upright, as :func:`lesion_app.core.measurements.photograph_rgb` reads it (no second decode).
PHOTOGRAPH_KEY = "photograph"
#: The longest side kept for the zoom-in (a crop of at least 200 px of it fills the 256 px network input).
ZOOM_SOURCE_SIDE = 1024


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
                img = open_image(name)
            images.append(self.converter(img) if callable(self.converter) else img)
        return images if len(names) > 1 else images[0]


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


def shrink_to_side(image: torch.Tensor, side: int, mode: str = "area") -> torch.Tensor:
    """A channel-first (C, H, W) image resized (``mode``: MONAI's and torch's names) so that its longer side is at
    most ``side``, in its own dtype; unchanged when it already is."""
    h, w = image.shape[1:]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = F.interpolate(image[None].float(), size=size, mode=mode)[0]
    return resized.round().to(image.dtype) if not image.is_floating_point() else resized.to(image.dtype)


class KeepZoomSourced(MapTransform):
    """Keeps a channel-first [0, 255] image under :data:`ZOOM_SOURCE_KEY` as uint8, its longer side at most
    :data:`ZOOM_SOURCE_SIDE` (area resize), before it is resized for the network."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = shrink_to_side(torch.as_tensor(d[key]).as_subclass(torch.Tensor).float(), ZOOM_SOURCE_SIDE)
            d[ZOOM_SOURCE_KEY] = image.round().clamp(0, 255).to(torch.uint8)
        return d


class LimitSided(MapTransform):
    """Area-resizes channel-first images whose longer side exceeds ``side`` to it (``mode`` per key, MONAI's names:
    ``"area"`` for photographs, ``"nearest"`` for labels); smaller ones stay as they are. The click training's zoom-in
    views keep photographs so, as the zoom-in at inference keeps its source (:data:`ZOOM_SOURCE_SIDE`)."""

    def __init__(self, keys: KeysCollection, side: int = ZOOM_SOURCE_SIDE, mode: Sequence[str] = ("area",)) -> None:
        super().__init__(keys)
        self.side, self.mode = side, ensure_tuple(mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for i, key in enumerate(self.key_iterator(d)):
            image = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
            d[key] = shrink_to_side(image, self.side, self.mode[min(i, len(self.mode) - 1)])
        return d


class KeepPhotographd(MapTransform):
    """Keeps a channel-first [0, 255] image under :data:`PHOTOGRAPH_KEY` as (H, W, 3) uint8, before it is resized
    for the network."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
            if image.dtype != torch.uint8:
                image = image.float().round().clamp(0, 255).to(torch.uint8)
            photograph = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
            photograph.flags.writeable = False  # shared with a click session's kept input
            d[PHOTOGRAPH_KEY] = photograph
        return d


class RandZoomInCropd(RandomizableTransform, MapTransform):
    """With probability ``prob``, the view of the photograph RITM's zoom-in gives a click network (:class:`ZoomIn`,
    Sofiiuk et al. 2022), drawn at random; otherwise the whole photograph. Either way resized to ``spatial_size``.

    Works on a (3, H, W) image and a (1, H, W) 0/1 label as the click training caches them (the photograph's size, at
    most :data:`ZOOM_SOURCE_SIDE`): the box is :meth:`ZoomIn.box` of the label, widened by a factor drawn from
    ``expansion`` (at inference :attr:`ZoomIn.expansion` around the previous mask, which is larger or smaller than the
    lesion) and its centre moved by up to ``shift`` of its sides, at least ``min_side`` pixels of the photograph as read
    (:data:`ORIGINAL_SIZE_KEY`); each side is resized on its own, as at inference (a box that is not square is
    stretched). The image is resized as inference resizes it (a box bilinearly with antialiasing, as
    :meth:`lesion_app.core.predictor.Prepared.crop` does; the whole photograph by area), the label bilinearly and
    thresholded at 0.5. A photograph without lesion is never cropped.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        prob: float = 0.5,
        expansion: tuple[float, float] = (1.1, 2.2),
        shift: float = 0.2,
        min_side: int = ZoomIn.min_side,
        label_key: str = "label",
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.expansion, self.shift, self.min_side, self.label_key = expansion, shift, min_side, label_key
        self._expansion, self._shift = ZoomIn.expansion, (0.0, 0.0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._expansion = float(self.R.uniform(*self.expansion))
        self._shift = (float(self.R.uniform(-self.shift, self.shift)), float(self.R.uniform(-self.shift, self.shift)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        label = torch.as_tensor(d[self.label_key]).as_subclass(torch.Tensor)
        h, w = label.shape[-2:]
        box = (0, h, 0, w)
        if self._do_transform:
            # ``min_side`` is pixels of the photograph as it was read, also when it is kept smaller (LimitSided)
            shrunk = max(h, w) / max(d.get(ORIGINAL_SIZE_KEY, (h, w)))
            zoom = ZoomIn(self._expansion, round(self.min_side * shrunk))
            box = zoom.box(label[0].numpy() > 0.5, [], (h, w), self._shift)
        r0, r1, c0, c1 = box
        for key in self.key_iterator(d):
            part = torch.as_tensor(d[key]).as_subclass(torch.Tensor)[None, :, r0:r1, c0:c1].float()
            if key == self.label_key:
                resized = F.interpolate(part, size=self.spatial_size, mode="bilinear", align_corners=False)
                d[key] = (resized[0] >= 0.5).float()
            elif box == (0, h, 0, w):  # the whole photograph, resized as inference resizes it
                d[key] = F.interpolate(part, size=self.spatial_size, mode="area")[0]
            else:  # the box, resized as the zoom-in at inference resizes it
                d[key] = F.interpolate(
                    part, size=self.spatial_size, mode="bilinear", align_corners=False, antialias=True
                )[0]
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


def preprocess_transforms(
    spatial_size: Sequence[int], image_key: str = "image", label_key: str | None = "label"
) -> list:
    """The paper's preprocessing: intensities to [0, 1], resized to ``spatial_size`` (256x256)."""
    keys = [image_key] + ([label_key] if label_key else [])
    modes = ["area"] + (["nearest"] if label_key else [])
    return [
        ScaleIntensityRanged(image_key, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys, spatial_size=tuple(spatial_size), mode=modes),
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


def train_transforms(spatial_size: Sequence[int], zoom_crop: float = 0.0) -> Compose:
    """Load, preprocess and augment an image/label pair (training).

    ``zoom_crop`` above 0: the click training's views, a share ``zoom_crop`` of them the box the zoom-in shows
    (:class:`RandZoomInCropd`). A dataset that caches the deterministic steps then keeps each pair as the zoom-in
    at inference keeps its source: uint8, at the photograph's size up to :data:`ZOOM_SOURCE_SIDE` on its longer side
    (about a megabyte a 512 px photograph), not at the network's.
    """
    if not zoom_crop:
        return Compose(load_transforms() + preprocess_transforms(spatial_size) + augment_transforms())
    keep = [
        EnsureTyped(["image", "label"], dtype=torch.uint8, track_meta=False),
        LimitSided(["image", "label"], ZOOM_SOURCE_SIDE, mode=("area", "nearest")),
    ]
    view = [
        RandZoomInCropd(["image", "label"], spatial_size, prob=zoom_crop),
        ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    return Compose(load_transforms() + keep + view + augment_transforms())


def val_transforms(spatial_size: Sequence[int]) -> Compose:
    """Load and preprocess an image/label pair (validation at the training resolution)."""
    return Compose(load_transforms() + preprocess_transforms(spatial_size))


def infer_transforms(
    spatial_size: Sequence[int], image_key: str = "image", zoom_source: bool = False, keep_photograph: bool = False
) -> Compose:
    """Load and preprocess a photograph alone: (3, h, w) in [0, 1] plus its original size and, with ``zoom_source``,
    the photograph the click model's zoom-in crops (:class:`KeepZoomSourced`), with ``keep_photograph`` the
    photograph itself for the measurements (:class:`KeepPhotographd`)."""
    keep = [KeepZoomSourced(image_key)] if zoom_source else []
    keep += [KeepPhotographd(image_key)] if keep_photograph else []
    return Compose(load_transforms(image_key, None) + keep + preprocess_transforms(spatial_size, image_key, None))


def restore_size(probs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Probabilities of shape (C, h, w) resized bilinearly to the original (H, W), before thresholding.

    Resizing probabilities and thresholding afterwards gives smooth borders; resizing a hard mask
    with nearest neighbours would give a staircase.
    """
    if tuple(probs.shape[1:]) == tuple(size):
        return probs
    return F.interpolate(probs[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


def mask_to_grid(mask: np.ndarray, spatial_size: Sequence[int]) -> torch.Tensor:
    """A (H, W) 0/1 mask at the photograph's size on the network's (h, w) grid: (1, 1, h, w) float32 0/1, a cell
    lesion where at least half of the photograph's pixels it covers are (area resize, as the photograph is
    resized)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return (F.interpolate(m, size=tuple(int(s) for s in spatial_size), mode="area") >= 0.5).float()
