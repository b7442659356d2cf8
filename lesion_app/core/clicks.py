"""Clicks for the click-guided (DeepEdit-style) model: guidance maps, the robot user, training-time click
simulation and the interactive-segmentation metrics (NoC).

Conventions:

- a click is a point ``(row, col)`` on a grid; a positive click marks lesion, a negative one skin;
- the network sees (N, C, h, w): RGB in [0, 1], a foreground and a background guidance map and, for models
  trained with it, the previous 0/1 mask; ``C`` is 5 or 6;
- guidance maps are MONAI's DeepGrow guidance (:class:`monai.apps.deepgrow.transforms.AddGuidanceSignald`,
  which works in 2D): every click an impulse, smoothed by a Gaussian of ``sigma`` pixels at the network's
  size, each map min-max normalised so an isolated click peaks at 1 and a map without clicks is 0;
- the robot user (Xu et al. 2016, *Deep Interactive Object Selection*; Sofiiuk et al. 2022, RITM) clicks on
  the photograph at its original size, at the pixel of the largest error region farthest from that region's
  border: positive in missed lesion, negative in false lesion.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.apps.deepgrow.transforms import AddGuidanceSignald
from scipy import ndimage
from torch import nn

from lesion_app.core.losses import LOSSES
from lesion_app.core.metrics import Scores, iou, mean_scores, score
from lesion_app.core.networks import build_network

Point = tuple[int, int]
#: The disk around each click that takes the click's label (:func:`click_constraints`), pixels at the network's
#: size; chosen on ISIC's selection split (``lesion-evaluate-clicks ../shared/data/isic --split selection
#: --click-radius 0 4 8 12 --limit 60``: NoC@90 8.98, 8.25, 8.30, 9.27; docs/clicks_selection.md).
CLICK_RADIUS = 4.0
#: The click prior (:func:`click_prior`): a click adds this much to the lesion logit at its point (a negative click
#: subtracts it), fading as a Gaussian of ``CLICK_PRIOR_SIGMA`` pixels at the network's size; chosen on ISIC's
#: selection split (``lesion-evaluate-clicks ../shared/data/isic --split selection --click-prior 0 2 3 4
#: --click-prior-sigma 25 35 --limit 60``: NoC@90 8.25 without a prior, 5.77 with 3 over 35 px, 5.72-6.28 for the
#: others; docs/clicks_prior_selection.md).
CLICK_PRIOR = 3.0
CLICK_PRIOR_SIGMA = 35.0
#: L-BFGS iterations of the backpropagating refinement (f-BRS, :mod:`lesion_app.core.brs`) per click, 0: off;
#: chosen on ISIC's selection split (``lesion-evaluate-clicks ../shared/data/isic --split selection
#: --click-brs-iterations 0 5 10 20 --limit 60``: NoC@90 5.77, 4.93, 4.75, 4.98; docs/clicks_brs_selection.md) as the
#: most that keeps a click within 100 ms through the server on 2 CPU threads (10 took 110 ms).
CLICK_BRS_ITERATIONS = 5
#: RITM's zoom-in after the first click (:class:`lesion_app.core.zoom.ZoomIn`), 1: on, 0: off.
CLICK_ZOOM = 0
#: 8-connectivity for error regions and lesion components.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ClickConfig:
    """How a click model reads clicks, and how training simulates them (stored in the model file's meta).

    Args:
        sigma: guidance Gaussian standard deviation, in pixels at the network's input size (``encoding``
            ``"gaussian"``).
        prev_mask: the network also sees the previous 0/1 mask (6 input channels) or not (5).
        p_auto: per training batch, the probability of no clicks at all (the automatic mode).
        max_iters: K: each batch runs k ~ U{0..K} no-grad passes, each adding a click in the model's own errors.
        p_first: per image, the probability that the batch starts with clicks inside the lesion (and, with
            ``max_initial`` above 1, around it) before the no-grad passes.
        encoding: how a click becomes its map: ``"gaussian"`` (MONAI DeepGrow's smoothed impulses, ``sigma``) or
            ``"disk"`` (RITM's binary disks of ``disk_radius``).
        disk_radius: the disk's radius, pixels at the network's input size.
        max_initial: RITM's multi-point start: up to this many positive clicks inside the lesion (k with
            probability proportional to 0.7^k) and up to one fewer negative ones in the skin around it; 1: one
            positive click.
        p_zero_prev: per image, the probability that the previous mask the gradient step sees is zeros (RITM's
            ``prev_mask_drop_prob``).
        zoom_crop: per image, the probability that training sees the box the zoom-in at inference shows
            (:class:`lesion_app.core.transforms.RandZoomInCropd`) instead of the whole photograph.
        loss: the training loss, a name of :data:`lesion_app.core.losses.LOSSES`: the paper's ``"hybrid"``
            Jaccard + SSIM + focal, or RITM's normalised focal loss ``"nfl"``.
    """

    sigma: float = 6.0
    prev_mask: bool = False
    p_auto: float = 0.25
    max_iters: int = 4
    p_first: float = 0.5
    encoding: str = "gaussian"
    disk_radius: float = 5.0
    max_initial: int = 1
    p_zero_prev: float = 0.0
    loss: str = "hybrid"
    zoom_crop: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown click training loss {self.loss!r}; one of {sorted(LOSSES)}")

    @property
    def in_channels(self) -> int:
        """RGB, two guidance maps, and the previous mask if the model reads one."""
        return 6 if self.prev_mask else 5

    def as_dict(self) -> dict[str, Any]:
        """The fields, as the model file's meta stores them under ``clicks``."""
        return asdict(self)

    @classmethod
    def of(cls, meta: dict[str, Any]) -> ClickConfig:
        """The configuration a model file's meta stores under ``clicks``.

        Raises:
            ValueError: the file is not a click model.
        """
        if "clicks" not in meta:
            raise ValueError("not a click model: its meta has no 'clicks'")
        return cls(**meta["clicks"])


# -- guidance maps and network input --------------------------------------------------------------------------


def guidance_maps(fg: Sequence[Point], bg: Sequence[Point], size: Sequence[int], sigma: float) -> np.ndarray:
    """(2, h, w) float32 foreground and background guidance maps of clicks on an (h, w) grid."""
    add = AddGuidanceSignald(image="image", guidance="guidance", sigma=sigma, number_intensity_ch=0)
    empty = np.zeros((1, int(size[0]), int(size[1])), dtype=np.float32)
    guidance = [[[int(r), int(c)] for r, c in fg], [[int(r), int(c)] for r, c in bg]]
    return np.asarray(add({"image": empty, "guidance": guidance})["image"], dtype=np.float32)


def disk_maps(fg: Sequence[Point], bg: Sequence[Point], size: Sequence[int], radius: float) -> torch.Tensor:
    """(2, h, w) float32 foreground and background maps of clicks on an (h, w) grid as RITM encodes them: 1 within
    ``radius`` pixels of a click, 0 elsewhere."""
    return torch.stack([(nearest_squared_distance(p, size) <= radius**2).float() for p in (fg, bg)])


def click_maps(fg: Sequence[Point], bg: Sequence[Point], size: Sequence[int], cfg: ClickConfig) -> torch.Tensor:
    """(2, h, w) float32 foreground and background maps of clicks in the model's ``cfg.encoding``."""
    if cfg.encoding == "disk":
        return disk_maps(fg, bg, size, cfg.disk_radius)
    return torch.from_numpy(guidance_maps(fg, bg, size, cfg.sigma))


def click_input(
    images: torch.Tensor,
    fgs: Sequence[Sequence[Point]],
    bgs: Sequence[Sequence[Point]],
    cfg: ClickConfig,
    prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, cfg.in_channels, h, w): ``images`` (N, 3, h, w), the click maps of each image's clicks and, when the
    model reads it, ``prev`` (N, 1, h, w) 0/1 (None: no previous mask, zeros)."""
    size = tuple(images.shape[-2:])
    maps = torch.stack([click_maps(f, b, size, cfg) for f, b in zip(fgs, bgs)])
    parts = [images, maps.to(images.device, images.dtype)]
    if cfg.prev_mask:
        parts.append(prev.to(images.device, images.dtype) if prev is not None else torch.zeros_like(images[:, :1]))
    return torch.cat(parts, dim=1)


def nearest_squared_distance(points: Sequence[Point], size: Sequence[int]) -> torch.Tensor:
    """(h, w) float32: each pixel's squared distance to the nearest of ``points`` on an (h, w) grid; inf without
    points. A click asks for the same grids several times (f-BRS, the prior, the seed disks), so the last few are
    kept; each call gets its own copy."""
    return _nearest_squared_distance(tuple((int(r), int(c)) for r, c in points), int(size[0]), int(size[1])).clone()


@functools.lru_cache(maxsize=8)
def _nearest_squared_distance(points: tuple[Point, ...], h: int, w: int) -> torch.Tensor:
    if not points:
        return torch.full((h, w), float("inf"))
    at = torch.tensor(points, dtype=torch.float32)
    rows = (torch.arange(h, dtype=torch.float32).view(1, -1) - at[:, :1]) ** 2
    cols = (torch.arange(w, dtype=torch.float32).view(1, -1) - at[:, 1:]) ** 2
    return (rows[:, :, None] + cols[:, None, :]).amin(0)


def click_constraints(probs: torch.Tensor, fg: Sequence[Point], bg: Sequence[Point], radius: float) -> torch.Tensor:
    """``probs`` (..., h, w) with a disk of ``radius`` pixels (network grid) around each click set to its label: 1 for
    a positive click, 0 for a negative one, the nearest click winning where disks overlap (a positive one at equal
    distance). The clicks act as hard seeds, as in graph cuts and the random walker, so every click changes the
    mask where it was placed even where the network would not follow it. ``radius`` 0 leaves ``probs`` as they
    are."""
    if radius <= 0 or not (fg or bg):
        return probs
    to_fg, to_bg = nearest_squared_distance(fg, probs.shape[-2:]), nearest_squared_distance(bg, probs.shape[-2:])
    inside = (torch.minimum(to_fg, to_bg) <= radius**2).to(probs.device)
    label = (to_fg <= to_bg).to(probs.device, probs.dtype)
    return torch.where(inside, label, probs)


def click_prior(
    probs: torch.Tensor, fg: Sequence[Point], bg: Sequence[Point], strength: float, sigma: float
) -> torch.Tensor:
    """``probs`` (..., h, w) with each click's prior added to the logits: ``strength`` times a Gaussian of ``sigma``
    pixels (network grid) around a positive click, minus the same around a negative one. Clicks of one kind do not
    add up (the nearest counts), so the prior of many clicks in one place stays ``strength``. Where the network
    is unsure (near the boundary) the mask follows the click over a neighbourhood of about ``sigma``; where it is
    sure, only close to the click. ``strength`` 0 leaves ``probs`` as they are."""
    if strength <= 0 or not (fg or bg):
        return probs
    size = probs.shape[-2:]
    bump_fg, bump_bg = (torch.exp(-nearest_squared_distance(p, size) / (2.0 * sigma**2)) for p in (fg, bg))
    shift = (strength * (bump_fg - bump_bg)).to(probs.device, torch.float32)
    return torch.sigmoid(torch.logit(probs.float(), eps=1e-6) + shift).to(probs.dtype)


@dataclass(frozen=True)
class ClickEffect:
    """What a click does besides the network's guidance input: the network refined to agree with the clicks
    (f-BRS, :func:`lesion_app.core.brs.refined_logits`), then on its probabilities a prior on the logits around
    each click (:func:`click_prior`) and a seed disk that takes its label (:func:`click_constraints`).

    Args:
        radius: the seed disk's radius, pixels at the network's size (0: off).
        prior: the prior's strength, logits (0: off).
        prior_sigma: the prior's Gaussian standard deviation, pixels at the network's size.
        brs_iterations: L-BFGS iterations of the refinement per click, a whole number (0: off).
        zoom: 1: once :attr:`lesion_app.core.zoom.ZoomIn.skip_clicks` clicks are past, the network sees the box
            around the lesion (RITM's zoom-in, :class:`lesion_app.core.zoom.ZoomIn`), and the pixels above are
            pixels of that box's grid; 0: off.

    Raises:
        ValueError: a value outside :attr:`LIMITS`, or a fractional ``brs_iterations`` or ``zoom``.
    """

    radius: float = CLICK_RADIUS
    prior: float = CLICK_PRIOR
    prior_sigma: float = CLICK_PRIOR_SIGMA
    brs_iterations: int = CLICK_BRS_ITERATIONS
    zoom: int = CLICK_ZOOM

    #: accepted range of each field, inclusive
    LIMITS = {
        "radius": (0.0, 64.0),
        "prior": (0.0, 20.0),
        "prior_sigma": (1.0, 128.0),
        "brs_iterations": (0, 50),
        "zoom": (0, 1),
    }

    def __post_init__(self) -> None:
        for name, (low, high) in self.LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"click_{name} must be a number from {low:g} to {high:g}, got {value!r}")
        for name in ("brs_iterations", "zoom"):
            if getattr(self, name) != int(getattr(self, name)):
                raise ValueError(f"click_{name} must be a whole number, got {getattr(self, name)!r}")
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ClickEffect:
        """The effect that ``values`` names (``click_radius``, ``click_prior``, ``click_prior_sigma``,
        ``click_brs_iterations``, ``click_zoom``, as numbers or numeric strings; the defaults where absent), as a
        request or ``--conf`` gives it.

        Raises:
            ValueError: naming the option, for a value that is not a number within :attr:`LIMITS`.
        """
        fields = {name: values.get(f"click_{name}", default) for name, default in asdict(cls()).items()}
        for name, value in fields.items():
            if isinstance(value, str):
                with contextlib.suppress(ValueError):  # a string that is no number stays one: the check names it
                    fields[name] = float(value)
        return cls(**fields)

    def apply(self, probs: torch.Tensor, fg: Sequence[Point], bg: Sequence[Point]) -> torch.Tensor:
        """``probs`` (..., h, w), the (refined) network's, after the clicks' prior and seed disks."""
        return click_constraints(click_prior(probs, fg, bg, self.prior, self.prior_sigma), fg, bg, self.radius)

    def describe(self) -> str:
        """A short name of the setting, for tables."""
        parts = [f"f-BRS {self.brs_iterations} it."] if self.brs_iterations else []
        parts += [f"seed disks of {self.radius:g} px"] if self.radius else []
        parts += [f"prior {self.prior:g} logits over {self.prior_sigma:g} px"] if self.prior else []
        parts += ["zoom-in"] if self.zoom else []
        return ", ".join(parts) or "network alone"


def to_grid(row: float, col: float, shape: Sequence[int], size: Sequence[int]) -> Point:
    """A pixel of an (H, W) photograph on the network's (h, w) grid (pixel centres, as bilinear resizing maps them)."""
    h, w = shape
    r = min(int(size[0]) - 1, max(0, int((row + 0.5) * size[0] / h)))
    c = min(int(size[1]) - 1, max(0, int((col + 0.5) * size[1] / w)))
    return r, c


def from_grid(row: int, col: int, size: Sequence[int], shape: Sequence[int]) -> Point:
    """The photograph's (H, W) pixel at the centre of the network's (h, w) grid cell (row, col), the inverse of
    :func:`to_grid` up to the cell."""
    return int((row + 0.5) * shape[0] / size[0]), int((col + 0.5) * shape[1] / size[1])


def click_network(
    automatic: dict[str, Any], cfg: ClickConfig, fusion: str = "early"
) -> tuple[nn.Module, dict[str, Any], list[str]]:
    """A click model made from an automatic model's file (its checkpoint dict): (network, network spec, the names of
    its new parameters, which the automatic model did not have).

    Every weight is copied. With ``fusion`` ``"early"`` the first convolution gets zero weights for the extra input
    channels; with ``"conv1s"`` the click maps enter through RITM's click stem
    (:class:`lesion_app.core.networks.unet.ClickStem`, a U-Net's only), whose output is scaled by 0.05 at first.
    Either way the new network starts close to the automatic one and training teaches it to read the clicks.
    """
    kwargs = {**automatic["network"]["kwargs"], "in_channels": cfg.in_channels}
    if fusion != "early":
        kwargs["click_fusion"] = fusion
    spec = {"arch": automatic["network"]["arch"], "kwargs": kwargs}
    network = build_network(spec["arch"], **spec["kwargs"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in automatic["model"].items()}
    if fusion == "early":
        first = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3)
        weight = state[first]
        extra = weight.new_zeros(weight.shape[0], cfg.in_channels - 3, *weight.shape[2:])
        state[first] = torch.cat([weight, extra], 1)
    missing, unexpected = network.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"the automatic model has weights the click network lacks: {unexpected[:3]}")
    return network, spec, list(missing)


# -- regions and the robot user -----------------------------------------------------------------------------------


def largest_component(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(the largest 8-connected component of a boolean mask, its area in pixels); (None, 0) if empty."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return None, 0
    areas = np.bincount(labels.ravel())[1:]
    k = int(np.argmax(areas))
    return labels == k + 1, int(areas[k])


def inner_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every region pixel to the nearest pixel outside it, the image edge counting
    as outside (as RITM pads it), so a click never lands on the photograph's edge; 0 outside the region."""
    out = np.zeros(region.shape, dtype=np.float64)
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return out
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    out[r0:r1, c0:c1] = ndimage.distance_transform_edt(np.pad(region[r0:r1, c0:c1], 1))[1:-1, 1:-1]
    return out


def largest_error(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """(the largest error region, whether it is missed lesion): the biggest 8-connected component among the false
    negatives and the false positives (ties: the missed lesion); (None, False) when they agree everywhere."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    fn, fn_area = largest_component(truth & ~pred)
    fp, fp_area = largest_component(pred & ~truth)
    if fn_area == 0 and fp_area == 0:
        return None, False
    return (fn, True) if fn_area >= fp_area else (fp, False)


def robot_click(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, bool] | None:
    """The standard robot user's next click ``(row, col, positive)`` on (H, W) masks, or None when nothing is
    wrong: the pixel of the largest error region farthest from its border (the first in row-major order)."""
    region, positive = largest_error(pred, truth)
    if region is None:
        return None
    dist = inner_distance(region)
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c), positive


def sample_in_region(region: np.ndarray, rng: np.random.Generator, power: float = 2.0) -> Point:
    """A random pixel of ``region``, with probability proportional to (distance to its border) ** power: the
    training counterpart of the robot's farthest pixel, spread over the interior (MONAI's AddRandomGuidanced
    weighs by exp(distance), which at 256 px is practically the robot's argmax)."""
    w = inner_distance(region).ravel() ** power
    idx = int(rng.choice(w.size, p=w / w.sum()))
    r, c = np.unravel_index(idx, region.shape)
    return int(r), int(c)


# -- training: clicks simulated in the model's own errors ----------------------------------------------------------


class ClickSimulation:
    """The click model's batch input during training, as DeepEdit and RITM simulate clicks (an
    :data:`lesion_app.core.training.loop.InputFn`).

    With probability ``p_auto`` a batch gets no clicks. Otherwise each image starts (probability ``p_first``) with
    clicks inside the lesion and, for ``max_initial`` above 1, in the skin around it (RITM's multi-point sampler,
    :meth:`initial_clicks`), or none; then k ~ U{0..K} passes of the network in eval mode without gradients each add
    one click in the largest error region of its own prediction, which becomes the previous mask (RITM's iterative
    training); with probability ``p_zero_prev`` an image's previous mask is then zeros. The loop makes its one
    gradient step on the returned input.
    """

    #: the skin band around the lesion where initial negative clicks fall, pixels at the network's size
    NEGATIVE_BAND = 40

    def __init__(self, cfg: ClickConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def initial_clicks(self, truth: np.ndarray) -> tuple[list[Point], list[Point]]:
        """The clicks an image starts with, (positive, negative), on its (h, w) boolean ``truth``."""
        cfg, rng = self.cfg, self.rng
        region, _ = largest_component(truth)
        if region is None or rng.random() >= cfg.p_first:
            return [], []
        counts = np.arange(1, max(1, cfg.max_initial) + 1)
        odds = 0.7 ** (counts - 1.0)
        n_pos = int(rng.choice(counts, p=odds / odds.sum()))
        fg = [sample_in_region(region, rng) for _ in range(n_pos)]
        bg: list[Point] = []
        n_neg = int(rng.choice(counts - 1, p=odds / odds.sum())) if cfg.max_initial > 1 else 0
        if n_neg:
            band = ndimage.binary_dilation(truth, iterations=self.NEGATIVE_BAND) & ~truth
            if band.any():
                bg = [sample_in_region(band, rng, power=1.0) for _ in range(n_neg)]
        return fg, bg

    def __call__(self, network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg, rng = self.cfg, self.rng
        n = images.shape[0]
        truth = labels[:, 0].detach().cpu().numpy() > 0.5
        fgs: list[list[Point]] = [[] for _ in range(n)]
        bgs: list[list[Point]] = [[] for _ in range(n)]
        prev: torch.Tensor | None = None
        if rng.random() < cfg.p_auto:
            return click_input(images, fgs, bgs, cfg)
        for i in range(n):
            fgs[i], bgs[i] = self.initial_clicks(truth[i])
        steps = int(rng.integers(0, cfg.max_iters + 1))
        if steps:
            was_training = network.training
            network.eval()
            try:
                with torch.no_grad():
                    for _ in range(steps):
                        pred = network(click_input(images, fgs, bgs, cfg, prev)) > 0
                        prev = pred.to(images.dtype)
                        for i, p in enumerate(pred[:, 0].cpu().numpy()):
                            region, positive = largest_error(p, truth[i])
                            if region is not None:
                                (fgs[i] if positive else bgs[i]).append(sample_in_region(region, rng))
            finally:
                network.train(was_training)
        if prev is not None and cfg.p_zero_prev > 0:
            keep = torch.from_numpy(rng.random(n) >= cfg.p_zero_prev).to(prev.device, prev.dtype)
            prev = prev * keep.view(-1, 1, 1, 1)
        return click_input(images, fgs, bgs, cfg, prev)


# -- the robot's session and the metrics ---------------------------------------------------------------------------

#: ``predict(fg, bg, state) -> (mask at the photograph's size, new state)``; clicks on the network grid.
SessionPredictor = Callable[[list[Point], list[Point], Any], tuple[np.ndarray, Any]]


def robot_session(
    predict: SessionPredictor, truth: np.ndarray, size: Sequence[int], max_clicks: int = 20
) -> tuple[list[float], list[tuple[int, int, bool]]]:
    """The robot user's clicks on one photograph: (IoU after 0..max_clicks clicks, the clicks at original size).

    ``predict`` is asked first with no clicks (the automatic mask), then after each click with every click so far
    on the network's ``size`` grid and the state it returned last (its previous mask). Once the mask is perfect
    no more clicks are made and its IoU carries on.
    """
    fg: list[Point] = []
    bg: list[Point] = []
    mask, state = predict(fg, bg, None)
    ious, clicks = [iou(mask, truth)], []
    for _ in range(max_clicks):
        click = robot_click(mask, truth)
        if click is None:
            ious.append(ious[-1])
            continue
        clicks.append(click)
        (fg if click[2] else bg).append(to_grid(click[0], click[1], truth.shape, size))
        mask, state = predict(list(fg), list(bg), state)
        ious.append(iou(mask, truth))
    return ious, clicks


def noc(ious: np.ndarray, target: float, max_clicks: int = 20) -> np.ndarray:
    """Number of clicks per image to reach IoU ``target`` (NoC@target), ``max_clicks`` when never reached.

    ``ious`` is (N, max_clicks + 1), column k the IoU after k clicks; column 0 is the automatic mask, so an image
    already good enough costs 0 clicks.
    """
    reached = np.asarray(ious)[:, : max_clicks + 1] >= target
    return np.where(reached.any(axis=1), reached.argmax(axis=1), max_clicks)


def never_reached(ious: np.ndarray, target: float = 0.90, max_clicks: int = 20) -> np.ndarray:
    """Per image, whether IoU never reaches ``target`` within ``max_clicks`` clicks."""
    return ~(np.asarray(ious)[:, : max_clicks + 1] >= target).any(axis=1)


class ClickValidation:
    """The validation of a click model after an epoch (a :data:`lesion_app.core.training.loop.ValidateFn`):
    the robot user clicks ``clicks`` times on each validation image at the network's size, and the scores are
    means over the images and over 0..clicks clicks (``iou`` picks the best epoch and is what the gate compares);
    ``iou@k`` is the mean IoU after k clicks.
    """

    def __init__(self, cfg: ClickConfig, clicks: int = 3) -> None:
        self.cfg = cfg
        self.clicks = clicks

    @torch.inference_mode()
    def __call__(self, network: nn.Module, loader: Any, device: torch.device | str = "cpu") -> dict[str, float]:
        network.eval()
        per_step: list[list[Scores]] = [[] for _ in range(self.clicks + 1)]
        for batch in loader:
            images = batch["image"].to(device)
            truth = (batch["label"][:, 0] > 0.5).numpy()
            fgs: list[list[Point]] = [[] for _ in range(len(images))]
            bgs: list[list[Point]] = [[] for _ in range(len(images))]
            prev: torch.Tensor | None = None
            for step in range(self.clicks + 1):
                pred = network(click_input(images, fgs, bgs, self.cfg, prev)) > 0
                prev = pred.float()
                for i, p in enumerate(pred[:, 0].cpu().numpy()):
                    per_step[step].append(score(p, truth[i]))
                    click = robot_click(p, truth[i])
                    if click is not None:
                        (fgs[i] if click[2] else bgs[i]).append(click[:2])
        means = [mean_scores(s) for s in per_step]
        out = {k: float(np.mean([m[k] for m in means])) for k in means[0]}
        out.update({f"iou@{k}": m["iou"] for k, m in enumerate(means)})
        return out


def training_options(meta: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """What a training run of this model needs besides the loop's defaults, from its model file's meta: for a
    click model the click simulation, the click validation, its loss, its share of zoom-in views and the ``clicks``
    entry its new file keeps; for an automatic model nothing."""
    if "clicks" not in meta:
        return {}
    cfg = ClickConfig.of(meta)
    return {
        "inputs": ClickSimulation(cfg, seed),
        "validate": ClickValidation(cfg),
        "loss": LOSSES[cfg.loss](),
        "zoom_crop": cfg.zoom_crop,
        "meta": {"clicks": cfg.as_dict()},
    }
