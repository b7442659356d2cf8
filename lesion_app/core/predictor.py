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
from monai.transforms import Compose
from torch import nn

from lesion_app.core.brs import refinable, refined_logits
from lesion_app.core.checkpoint import load_model
from lesion_app.core.clicks import ClickConfig, ClickEffect, Point, click_input, from_grid
from lesion_app.core.postprocess import clean_mask
from lesion_app.core.transforms import ORIGINAL_SIZE_KEY, infer_transforms, restore_size

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
    """A photograph ready for the networks: ``image`` (3, h, w) float32 in [0, 1] at the spatial size, and
    its ``original_size`` (H, W) upright."""

    image: torch.Tensor
    original_size: tuple[int, int]

    @property
    def batch(self) -> torch.Tensor:
        """(1, 3, h, w)."""
        return self.image[None].float()


@functools.lru_cache(maxsize=4)
def _photo_transforms(spatial_size: tuple[int, int]) -> Compose:
    return infer_transforms(spatial_size)


def prepare(image_path: str | Path, spatial_size: Sequence[int] = DEFAULT_SPATIAL_SIZE) -> Prepared:
    """Reads one photograph (EXIF applied, any encoding as 8-bit RGB), scales it to [0, 1] and resizes it to
    ``spatial_size``; raises what the reader raises for a file it cannot decode."""
    data = _photo_transforms((int(spatial_size[0]), int(spatial_size[1])))({"image": str(image_path)})
    size = tuple(int(s) for s in data[ORIGINAL_SIZE_KEY])
    return Prepared(torch.as_tensor(data["image"]).float(), (size[0], size[1]))


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

    def prepare(self, image_path: str | Path) -> Prepared:
        """:func:`prepare` at this predictor's spatial size."""
        return prepare(image_path, self.spatial_size)

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

    def probabilities(self, image_path: str | Path, tta: bool | None = None) -> np.ndarray:
        """Lesion probability per pixel of the photograph, (H, W) float32 at its original (upright) size."""
        prepared = self.prepare(image_path)
        return self.restore(self.batch_probabilities(prepared.batch, tta)[0], prepared.original_size)

    def mask(self, image_path: str | Path) -> np.ndarray:
        """The (H, W) uint8 0/1 lesion mask, as the server returns it with the same options."""
        return self.mask_from(self.probabilities(image_path))
