"""The one prediction path: photograph -> network input -> lesion probabilities -> mask at the photograph's size.

Every caller segments through :class:`Predictor`: the server's infer tasks (automatic, ensemble, click-guided),
the uncertainty estimate, ``lesion-evaluate``, ``lesion-predict``, the benchmark, the figures and the simulator.
So a mask from a program and one from the server agree pixel for pixel for the same options.

The steps, each a method so that callers can cache between them:

1. :meth:`Predictor.prepare`: read the photograph (EXIF applied, any encoding as 8-bit RGB), scale to [0, 1],
   resize to ``spatial_size`` (the paper's 256x256); remember the original (H, W);
2. :meth:`Predictor.member_probabilities`: each member network's sigmoid probabilities at ``spatial_size``,
   optionally averaged over the four flips (test-time augmentation, run as one batch);
3. the members' mean (an ensemble averages probabilities, not logits);
4. :meth:`Predictor.restore`: bilinear resize of the probabilities to the original size, then threshold and
   optional clean-up (largest region, holes filled) in :meth:`Predictor.mask_from`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose
from torch import nn

from lesion_app.core.brs import refinable, refined_logits
from lesion_app.core.checkpoint import load_model
from lesion_app.core.clicks import ClickConfig, ClickEffect, Point, click_input, from_grid, to_grid
from lesion_app.core.postprocess import clean_mask
from lesion_app.core.transforms import (
    ORIGINAL_SIZE_KEY,
    ZOOM_SOURCE_KEY,
    infer_transforms,
    mask_to_grid,
    restore_size,
)
from lesion_app.core.zoom import ZoomIn

#: Flips averaged by test-time augmentation: none, left-right, up-down, both (dims of an (N, C, H, W) batch).
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
#: The network input side the shipped models were trained at (the paper's 256x256).
DEFAULT_SPATIAL_SIZE = (256, 256)


def _flip(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.flip(dims) if dims else x


@torch.inference_mode()
def flip_probabilities(network: nn.Module, x: torch.Tensor, count: int = 4) -> torch.Tensor:
    """Sigmoid probabilities of ``network`` for the first ``count`` flips of ``x`` (N, C, h, w), each flipped back:
    (count, N, 1, h, w) in the order of :data:`FLIP_DIMS` (the plain pass first). One batched pass."""
    n, dims = x.shape[0], FLIP_DIMS[:count]
    probs = torch.sigmoid(network(torch.cat([_flip(x, d) for d in dims])))
    return torch.stack([_flip(p, d) for p, d in zip(probs.split(n), dims)])


@torch.inference_mode()
def network_probabilities(network: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """(N, 1, h, w) sigmoid probabilities of one network for a batch (N, C, h, w); ``tta``: mean of the flips."""
    if tta:
        return flip_probabilities(network, x).mean(0)
    return torch.sigmoid(network(x))


@dataclass(frozen=True)
class Prepared:
    """A photograph ready for the networks: ``image`` (3, h, w) float32 in [0, 1] at the spatial size, its
    ``original_size`` (H, W) upright and, for the click model's zoom-in, ``source``: the photograph (3, H', W')
    uint8 (:data:`lesion_app.core.transforms.ZOOM_SOURCE_KEY`; None: no zoom-in possible)."""

    image: torch.Tensor
    original_size: tuple[int, int]
    source: torch.Tensor | None = None

    @property
    def batch(self) -> torch.Tensor:
        """(1, 3, h, w)."""
        return self.image[None].float()

    def crop(self, box: tuple[int, int, int, int], size: Sequence[int]) -> torch.Tensor:
        """(1, 3, h, w) float32 in [0, 1]: the part ``box`` = (row0, row1, col0, col1), half-open rows and columns
        of the upright photograph, resized to ``size`` (bilinear, antialiased)."""
        if self.source is None:
            raise ValueError("this photograph was prepared without its zoom-in source")
        h, w = self.original_size
        sh, sw = self.source.shape[-2:]
        r0, r1, c0, c1 = box
        rows = slice(int(r0 * sh / h), max(int(r0 * sh / h) + 1, round(r1 * sh / h)))
        cols = slice(int(c0 * sw / w), max(int(c0 * sw / w) + 1, round(c1 * sw / w)))
        part = self.source[None, :, rows, cols].float() / 255.0
        return F.interpolate(part, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


@dataclass(frozen=True)
class ClickResult:
    """One click's answer at the photograph's (H, W): ``probabilities`` float32 after the clicks' effect,
    ``mask`` uint8 0/1 after the clean-up (both None for a replayed click), and ``state``, bool: the network's own
    mask, the next click's previous mask."""

    probabilities: np.ndarray | None
    mask: np.ndarray | None
    state: np.ndarray


@functools.lru_cache(maxsize=4)
def _photo_transforms(spatial_size: tuple[int, int], zoom_source: bool = False) -> Compose:
    return infer_transforms(spatial_size, zoom_source=zoom_source)


def prepare(
    image_path: str | Path, spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE, zoom_source: bool = False
) -> Prepared:
    """Reads one photograph (EXIF applied, any encoding as 8-bit RGB), scales it to [0, 1] and resizes it to
    ``spatial_size``, keeping it for the zoom-in with ``zoom_source``; raises what the reader raises for a file it
    cannot decode."""
    data = _photo_transforms((int(spatial_size[0]), int(spatial_size[1])), zoom_source)({"image": str(image_path)})
    return prepared_from(data)


def prepared_from(data: dict[str, Any]) -> Prepared:
    """The :class:`Prepared` photograph of :func:`lesion_app.core.transforms.infer_transforms`' output."""
    size = tuple(int(s) for s in data[ORIGINAL_SIZE_KEY])
    source = data.get(ZOOM_SOURCE_KEY)
    return Prepared(torch.as_tensor(data["image"]).float(), (size[0], size[1]), source)


class Predictor:
    """One or more networks (averaged), with optional flip TTA and mask clean-up: photograph in, mask out.

    Args:
        networks: the ensemble's members, in eval mode; one network is an ensemble of one. Each takes
            (N, C, h, w) and returns one logit per pixel, (N, 1, h, w).
        spatial_size: the network input (h, w) photographs are resized to (MONAI's name for a resize target).
        tta: average the four flips by default.
        postprocess: keep the largest 8-connected region and fill its holes by default.
        threshold: probability above which a pixel is lesion.

    Raises:
        ValueError: no network, or a threshold outside (0, 1).

    Example::

        predictor = Predictor.from_files(["lesion_app/model/pretrained_unet.pt"], tta=True)
        mask = predictor.mask("photo.jpg")  # (H, W) uint8 0/1 at the photograph's size
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE,
        tta: bool = False,
        postprocess: bool = True,
        threshold: float = 0.5,
    ) -> None:
        if not networks:
            raise ValueError("a predictor needs at least one network")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        self.networks = [n.eval() for n in networks]
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.tta, self.postprocess, self.threshold = bool(tta), bool(postprocess), float(threshold)

    @classmethod
    def from_files(cls, model_paths: Sequence[str | Path], **options: Any) -> Predictor:
        """A predictor over the networks the model files describe (see :mod:`lesion_app.core.checkpoint`);
        ``metas`` holds each file's meta."""
        loaded = [load_model(p) for p in model_paths]
        predictor = cls([net for net, _ in loaded], **options)
        predictor.metas = [meta for _, meta in loaded]
        return predictor

    metas: list[dict[str, Any]] = []

    def prepare(self, image_path: str | Path, zoom_source: bool = False) -> Prepared:
        """:func:`prepare` at this predictor's spatial size."""
        return prepare(image_path, self.spatial_size, zoom_source)

    def member_probabilities(self, x: torch.Tensor, tta: bool | None = None) -> list[torch.Tensor]:
        """Each member's (N, 1, h, w) probabilities for a batch (N, C, h, w), flips averaged when ``tta``."""
        tta = self.tta if tta is None else tta
        return [network_probabilities(net, x, tta) for net in self.networks]

    def flips(self, x: torch.Tensor, count: int = 4) -> torch.Tensor:
        """(count, N, 1, h, w): the members' mean probabilities for the first ``count`` of the four flips of ``x``
        (undone), the first being the plain pass; what test-time augmentation averages and the quality estimate
        reads (its first :data:`lesion_app.core.quality.QUALITY_FLIPS`)."""
        return torch.stack([flip_probabilities(net, x, count) for net in self.networks]).mean(0)

    def batch_probabilities(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """(N, 1, h, w): the members' mean probability at the network's resolution."""
        return torch.stack(self.member_probabilities(x, tta)).mean(0)

    def restore(self, probs: torch.Tensor, original_size: Sequence[int]) -> np.ndarray:
        """(1, h, w) probabilities at the network's size -> (H, W) float32 at the photograph's size."""
        return restore_size(probs, original_size)[0].numpy().astype(np.float32, copy=False)

    def mask_from(
        self,
        probabilities: np.ndarray,
        threshold: float | None = None,
        postprocess: bool | None = None,
        keep: Sequence[tuple[int, int]] = (),
        holes: Sequence[tuple[int, int]] = (),
    ) -> np.ndarray:
        """The (H, W) uint8 0/1 mask of (H, W) probabilities: threshold, then the clean-up if asked for (which keeps
        the regions of the ``keep`` points, a clinician's positive clicks, as well as the largest, and leaves the holes
        of the ``holes`` points, the negative clicks, open)."""
        threshold = self.threshold if threshold is None else threshold
        postprocess = self.postprocess if postprocess is None else postprocess
        mask = (np.asarray(probabilities) > threshold).astype(np.uint8)
        return clean_mask(mask, keep, holes) if postprocess else mask

    def click_probabilities(
        self,
        x: torch.Tensor,
        fg: Sequence[Point],
        bg: Sequence[Point],
        cfg: ClickConfig,
        prev: torch.Tensor | None,
        effect: ClickEffect,
    ) -> torch.Tensor:
        """The click network's own (1, 1, h, w) probabilities for one photograph (x: (1, 3, h, w)), its clicks on
        the network's grid and ``prev``: refined to agree with the clicks (f-BRS, ``effect.brs_iterations``) where
        the predictor is one network that allows it; what the next click's previous mask is made from and what
        :meth:`click_mask` turns into the result."""
        inputs = click_input(x, [list(fg)], [list(bg)], cfg, prev)
        if effect.brs_iterations and len(self.networks) == 1 and refinable(self.networks[0]):
            return torch.sigmoid(refined_logits(self.networks[0], inputs, fg, bg, effect.brs_iterations))
        return self.batch_probabilities(inputs)

    def click_mask(
        self,
        raw: torch.Tensor,
        fg: Sequence[Point],
        bg: Sequence[Point],
        effect: ClickEffect,
        original_size: Sequence[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The click model's result from its (1, 1, h, w) probabilities (:meth:`click_probabilities`) and the clicks
        on the network's (h, w) grid: (probabilities (H, W) at ``original_size`` after the clicks' ``effect`` (the
        prior and the seed disks), the mask from them, in which the clean-up keeps every region with a positive click
        and every hole with a negative one)."""
        probabilities = self.restore(effect.apply(raw[0].cpu(), fg, bg), original_size)
        grid = raw.shape[-2:]
        keep, holes = ([from_grid(r, c, grid, original_size) for r, c in points] for points in (fg, bg))
        return probabilities, self.mask_from(probabilities, keep=keep, holes=holes)

    def click(
        self,
        prepared: Prepared,
        fg: Sequence[Point],
        bg: Sequence[Point],
        cfg: ClickConfig,
        effect: ClickEffect,
        previous: np.ndarray | None = None,
        answer: bool = True,
    ) -> ClickResult:
        """The click model's answer to the clicks ``fg`` and ``bg`` ((row, col) on the upright photograph) given the
        ``previous`` (H, W) mask (None: none yet): the one click path of the server and ``lesion-evaluate-clicks``.

        Without ``effect.zoom`` (or before its ``skip_clicks``, or for a photograph prepared without its source) the
        network sees the whole photograph at its input size; with it, the :meth:`ZoomIn.box` around the previous mask
        and the clicks. Either way the clicks, the previous mask, the f-BRS windows, the click prior and the seed disks
        are on the grid the network sees (``spatial_size`` over the whole photograph or over the box), so their
        pixel sizes (:class:`ClickEffect`) are pixels of that grid; the answer is pasted into the previous mask at
        the photograph's size. ``answer`` False: only the ``state`` (a replayed click), ``mask`` and
        ``probabilities`` None.
        """
        h, w = prepared.original_size
        box = (0, h, 0, w)
        zoom = ZoomIn()
        zooming = effect.zoom and previous is not None and prepared.source is not None
        if zooming and len(fg) + len(bg) > zoom.skip_clicks:
            box = zoom.box(previous, [*fg, *bg], (h, w))
        r0, r1, c0, c1 = box
        whole, shape = box == (0, h, 0, w), (r1 - r0, c1 - c0)
        x = prepared.batch if whole else prepared.crop(box, self.spatial_size)
        fg_grid, bg_grid = ([to_grid(r - r0, c - c0, shape, self.spatial_size) for r, c in p] for p in (fg, bg))
        prev = None if previous is None else mask_to_grid(previous[r0:r1, c0:c1], self.spatial_size)
        raw = self.click_probabilities(x.to(self._device), fg_grid, bg_grid, cfg, prev, effect)[0].cpu()
        own = self.restore(raw, shape) > 0.5
        state = own if whole else np.asarray(previous, bool).copy()
        if not whole:
            state[r0:r1, c0:c1] = own
        if not answer:
            return ClickResult(None, None, state)
        part = self.restore(effect.apply(raw, fg_grid, bg_grid), shape)
        probabilities = part if whole else np.asarray(previous, np.float32).copy()
        if not whole:
            probabilities[r0:r1, c0:c1] = part
        return ClickResult(probabilities, self.mask_from(probabilities, keep=fg, holes=bg), state)

    @property
    def _device(self) -> torch.device:
        return next(self.networks[0].parameters()).device

    def probabilities(self, image_path: str | Path, tta: bool | None = None) -> np.ndarray:
        """Lesion probability per pixel of the photograph, (H, W) float32 at its original (upright) size."""
        prepared = self.prepare(image_path)
        return self.restore(self.batch_probabilities(prepared.batch, tta)[0], prepared.original_size)

    def mask(self, image_path: str | Path) -> np.ndarray:
        """The (H, W) uint8 0/1 lesion mask, as the server returns it with the same options."""
        return self.mask_from(self.probabilities(image_path))
