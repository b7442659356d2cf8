"""Backpropagating refinement: make the click network agree with the clicks by optimising a few numbers at test time.

f-BRS (Sofiiuk, Petrov, Barinova & Konushin, "f-BRS: Rethinking Backpropagating Refinement for Interactive
Segmentation", CVPR 2020): a click network does not always follow a click; instead of re-running it with other
inputs, a per-channel scale and bias of one of its inner feature maps are optimised with L-BFGS so that the pixels
around every click get the click's label, with an L2 penalty keeping them near the identity. The refined features
change the mask wherever the photograph looks like the clicked place; here that change is kept to the clicks'
neighbourhood (:data:`BRS_REACH`), so a click never moves the boundary across the photograph. The scale and bias
are fitted to all the clicks together, from the identity each time, so a new click can also move the boundary near
the earlier clicks.

Here the features are the input of the last decoder block of :class:`lesion_app.core.networks.LesionUNet`
(:meth:`~lesion_app.core.networks.LesionUNet.trunk`). An output pixel reads only the features within the network's
``tail_reach`` of it, so the optimisation runs on small windows around the clicks (exactly, up to the window's own
border, which lies beyond that reach) and one full pass of the tail applies the result: a few milliseconds per
iteration on a CPU instead of a full backward pass.

Our choices, made on the selection split carved from ISIC's training part (docs/clicks_brs_selection.md): a click's
disk of :data:`BRS_RADIUS` pixels, a hinge that only pulls pixels on the wrong side of :data:`BRS_MARGIN` (so a
network that already agrees with the clicks is left exactly as it is; a hinge on logits instead was no better), the
penalty weight :data:`BRS_PENALTY` (0.001 and 0.1 no better) and the reach :data:`BRS_REACH` (NoC@90 on the first
60 photographs 4.93 without a limit, 5.35, 4.80, 5.03 and 4.77 with 20, 25, 35 and 70 px).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lesion_app.core.clicks import Point, nearest_squared_distance

#: Pixels (at the network's size) around a click that must take its label.
BRS_RADIUS = 3.0
#: A positive click's disk must reach this probability, a negative one's stay below 1 minus it.
BRS_MARGIN = 0.8
#: Weight of the L2 penalty on the scale's and bias's distance from the identity (scale 1, bias 0).
BRS_PENALTY = 1e-2
#: The refined logits replace the network's own near the clicks, fading as a Gaussian of this many pixels (at the
#: network's size) around the nearest click, so that a click changes the mask around it and not across the
#: photograph (wider reaches changed the mask more than 30 px from a negative click on a drawn test photograph).
BRS_REACH = 25.0


def refinable(network: nn.Module) -> bool:
    """Whether ``network`` splits into ``trunk`` and ``tail`` with a ``tail_reach`` (the U-Net does)."""
    return all(hasattr(network, name) for name in ("trunk", "tail", "tail_reach"))


def _windows(points: Sequence[Point], features: Sequence[int], side: int) -> list[tuple[int, int]]:
    """Top-left corners (on the feature grid, half the network's size) of ``side``-square windows centred on the
    points where the feature map allows, shifted inside it at its edges."""
    corners = []
    for r, c in points:
        r0 = min(max(r // 2 - side // 2, 0), max(features[0] - side, 0))
        c0 = min(max(c // 2 - side // 2, 0), max(features[1] - side, 0))
        corners.append((r0, c0))
    return corners


def refined_logits(
    network: nn.Module, x: torch.Tensor, fg: Sequence[Point], bg: Sequence[Point], iterations: int
) -> torch.Tensor:
    """The click network's logits (1, 1, h, w) for its input ``x`` (1, C, h, w) after f-BRS on the clicks ``fg`` and
    ``bg`` ((row, col) on the (h, w) grid) with at most ``iterations`` L-BFGS iterations, within :data:`BRS_REACH`
    of the clicks; 0 iterations or no clicks: the plain pass. The network's weights are read, never changed
    (thread-safe).

    Raises:
        ValueError: a network that :func:`refinable` rejects, or a batch of more than one image.
    """
    if not refinable(network):
        raise ValueError(f"{type(network).__name__} cannot be refined: it has no trunk/tail split")
    if x.shape[0] != 1:
        raise ValueError(f"refinement takes one image at a time, got a batch of {x.shape[0]}")
    with torch.inference_mode(False):  # callers may be in inference mode; autograd needs ordinary tensors
        return _refine(network, x.clone(), fg, bg, iterations)


def _refine(
    network: nn.Module, x: torch.Tensor, fg: Sequence[Point], bg: Sequence[Point], iterations: int
) -> torch.Tensor:
    with torch.no_grad():
        features = network.trunk(x)
        plain = network.tail(features)
    if iterations <= 0 or not (fg or bg):
        return plain
    size = x.shape[-2:]
    side = 2 * (network.tail_reach + math.ceil(BRS_RADIUS / 2) + 1)
    corners = _windows([*fg, *bg], features.shape[-2:], side)
    positive, negative = (nearest_squared_distance(p, size) <= BRS_RADIUS**2 for p in (fg, bg))

    def crops(t: torch.Tensor, scale: int) -> torch.Tensor:
        return torch.stack([t[..., scale * r : scale * (r + side), scale * c : scale * (c + side)] for r, c in corners])

    windows = crops(features[0], 1)  # (k, C', side, side)
    pos, neg = crops(positive, 2), crops(negative, 2)  # (k, 2 side, 2 side) at the network's size
    channels = features.shape[1]
    with torch.enable_grad():
        params = torch.zeros(2 * channels, requires_grad=True)

        def modulate(f: torch.Tensor) -> torch.Tensor:
            return f * (1 + params[:channels]).view(1, -1, 1, 1) + params[channels:].view(1, -1, 1, 1)

        def closure() -> torch.Tensor:
            p = torch.sigmoid(network.tail(modulate(windows))[:, 0])
            loss = torch.relu(BRS_MARGIN - p)[pos].square().sum() / max(int(pos.sum()), 1)
            loss = loss + torch.relu(p - (1 - BRS_MARGIN))[neg].square().sum() / max(int(neg.sum()), 1)
            loss = loss + BRS_PENALTY * params.square().sum()
            params.grad = torch.autograd.grad(loss, params)[0]
            return loss.detach()

        optimiser = torch.optim.LBFGS([params], lr=1, max_iter=iterations, line_search_fn="strong_wolfe")
        optimiser.step(closure)
    with torch.no_grad():
        refined = network.tail(modulate(features))
    weight = torch.exp(-nearest_squared_distance([*fg, *bg], size) / (2.0 * BRS_REACH**2)).to(plain.dtype)
    return plain + weight * (refined - plain)
