"""Infer task of the click model ``deepedit``: the photograph and the clinician's clicks in, the corrected mask out.

It takes what 3D Slicer's MONAI Label module sends on a click (``foreground`` and ``background`` as ``[i, j, k]``
points on the single-slice volume of the photograph's stored pixel grid, ``label``, ``slice``, ``roi`` when a box
was placed); with no click it segments automatically. The segmentation is the one predictor's
(:class:`lesion_app.core.predictor.Predictor`) on the click model's input (:func:`lesion_app.core.clicks.click_input`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from lesion_app.core.checkpoint import model_meta
from lesion_app.core.clicks import ClickConfig, ClickEffect, Point
from lesion_app.core.predictor import Prepared, prepared_from
from lesion_app.core.transforms import ORIGINAL_SIZE_KEY, PHOTOGRAPH_KEY, ZOOM_SOURCE_KEY, infer_transforms
from lesion_app.io.images import (
    SWAPPING_ORIENTATIONS,
    exif_orientation,
    stored_point_to_upright,
    stored_to_upright,
)
from lesion_app.lib.infers.segmentation import SegmentationInfer
from lesion_app.server import checks

#: The masks kept for the previous-mask input, at the photograph's size, packed 8 pixels a byte (32 kB for 512x512).
STATES_KEPT = 128
#: Photographs kept prepared (read, upright, resized: (3, 256, 256) float32, 768 kB, and the zoom-in's copy, at most
#: 3 MB) for the next click on them.
PREPARED_KEPT = 8
#: Points one request may hold, positive and negative together: after a restart each costs a replayed network pass
#: (about 60-90 ms on 2 CPU threads), and the robot user of the evaluation stops at 20.
MAX_POINTS = 100


def file_version(path: str) -> tuple[int, int] | None:
    """(modification time in ns, size in bytes) of a file, None if there is none: with its path, what tells two
    versions of a photograph or a model file apart in this task's caches."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def keep_recent(cache: OrderedDict, key: Any, value: Any, limit: int) -> None:
    """Stores ``value`` as the most recent entry of ``cache`` and drops the least recent beyond ``limit``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


class DeepEditInfer(SegmentationInfer):
    """The click model's infer task (MONAI Label type ``deepedit``, 2D, one label ``lesion``).

    Clicks are checked (400 for malformed lists, points outside the photograph or on another slice), moved from
    the stored grid to the upright photograph (its EXIF orientation) and answered by
    :meth:`lesion_app.core.predictor.Predictor.click`; a box (``roi``,
    ``[i0, i1, j0, j1, k0, k1]``) limits the mask to it. What a click does besides the network's guidance input,
    the network refined to agree with it (f-BRS), a prior on the logits around it and a seed disk taking its label
    (:class:`lesion_app.core.clicks.ClickEffect`), comes from the config (``--conf``) or the request
    (``click_radius``, ``click_prior``, ``click_prior_sigma``, ``click_brs_iterations``, ``click_zoom``).
    ``previous_mask`` (a base64 PNG on the stored grid) is the mask the next click refines; without it the mask the
    server made for the clicks before is.
    The clean-up keeps every region a positive click is in and every hole a negative click cut.
    """

    def __init__(self, members: list[list[str]], spatial_size: Any, description: str, config: dict | None = None):
        super().__init__(members, spatial_size, description, config, infer_type=InferType.DEEPEDIT)
        #: the masks made for earlier requests, by photograph, model version and clicks (least recent first)
        self._states: OrderedDict[tuple, np.ndarray] = OrderedDict()
        #: the prepared input of recent photographs, by file version (least recent first)
        self._prepared: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._prepared_lock = threading.Lock()

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        """A click session sends the same photograph with every click: its prepared input is kept per version of the
        file (:data:`PREPARED_KEPT` photographs), so a click does not decode and resize the photograph again. An
        upload is prepared each time."""
        path = data.get("image_path")
        version = file_version(path) if isinstance(path, str) and not checks.is_upload(path) else None
        key = (path, version) if version else None
        with self._prepared_lock:
            kept = self._prepared.get(key) if key else None
            if kept is not None:
                self._prepared.move_to_end(key)
        if kept is not None:
            return {**data, **{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kept.items()}}
        data = super().run_pre_transforms(data, transforms)
        if key:
            with self._prepared_lock:
                prepared = {k: data[k] for k in ("image", ORIGINAL_SIZE_KEY, ZOOM_SOURCE_KEY, PHOTOGRAPH_KEY)}
                prepared["image"] = torch.as_tensor(prepared["image"]).clone()
                keep_recent(self._prepared, key, prepared, PREPARED_KEPT)
        return data

    def pre_transforms(self, data: dict | None = None) -> list:
        """The automatic models' loading, keeping the photograph for the zoom-in and the measurements."""
        return list(infer_transforms(self.spatial_size, zoom_source=True, keep_photograph=True).transforms)

    def click_config(self) -> ClickConfig:
        """How the model being served reads clicks (from its file's meta)."""
        path = self._serving[0] if self._serving else self.get_path()
        if not path:
            raise checks.unavailable("the click model has no loadable model file")
        return ClickConfig.of(model_meta(path, os.stat(path).st_mtime))

    @staticmethod
    def stored_grid(data: dict[str, Any]) -> tuple[int, tuple[int, int]]:
        """(the photograph's EXIF orientation, the (rows, columns) of its stored pixel grid: Slicer's grid)."""
        h, w = data[ORIGINAL_SIZE_KEY]
        path = data.get("image_path")
        orientation = exif_orientation(path) if isinstance(path, str) else 1
        return orientation, ((w, h) if orientation in SWAPPING_ORIENTATIONS else (h, w))

    @staticmethod
    def click_effect(data: dict[str, Any]) -> ClickEffect:
        """The request's ``click_radius``, ``click_prior``, ``click_prior_sigma`` and ``click_brs_iterations`` (the
        config's where it has none); 400 for a value that is not a number within :attr:`ClickEffect.LIMITS`."""
        try:
            return ClickEffect.of(data)
        except ValueError as e:
            raise checks.bad_request(str(e)) from None

    def upright_clicks(self, data: dict[str, Any]) -> tuple[list[Point], list[Point]]:
        """The request's positive and negative clicks as (row, col) on the upright photograph; 400 for more than
        :data:`MAX_POINTS`."""
        orientation, stored = self.stored_grid(data)
        if data.get("slice") not in (None, "", 0, "0"):
            raise checks.bad_request(f"slice {data['slice']!r}: the photograph is one slice (0)")

        def upright(name: str) -> list[Point]:
            points = checks.click_points(data.get(name), name, stored)
            return [tuple(int(v) for v in stored_point_to_upright(r, c, orientation, stored)) for r, c in points]

        fg, bg = upright("foreground"), upright("background")
        if len(fg) + len(bg) > MAX_POINTS:
            raise checks.bad_request(f"{len(fg) + len(bg)} points: at most {MAX_POINTS} per request")
        return fg, bg

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        predictor = self.predictor(data, str(device))
        cfg = self.click_config()
        fg, bg = self.upright_clicks(data)
        data["positive_clicks"], data["negative_clicks"] = fg, bg
        prepared = prepared_from(data)
        effect = self.click_effect(data)
        previous = self.sent_previous_mask(data)
        if previous is None and (cfg.prev_mask or effect.zoom):  # what the network reads or the zoom-in frames
            previous = self.previous_mask(predictor, prepared, fg, bg, cfg, effect, data)
        result = predictor.click(prepared, fg, bg, cfg, effect, previous)
        self._remember(data, fg, bg, result.state)
        data["probabilities"] = result.probabilities
        data["pred"] = self.within_roi(result.mask, data)
        return data

    def sent_previous_mask(self, data: dict[str, Any]) -> np.ndarray | None:
        """The request's ``previous_mask`` (the mask the client shows, a base64 PNG on the photograph's stored pixel
        grid, :func:`lesion_app.server.checks.png_mask`) upright, (H, W) bool; None when the request has none. It
        is the previous mask of this click instead of the server's remembered state, so a click refines what the
        client shows. 400 for data that is no such PNG."""
        value = data.get("previous_mask")
        if value in (None, ""):
            return None
        orientation, stored = self.stored_grid(data)
        return stored_to_upright(checks.png_mask(value, "previous_mask", stored), orientation)

    def _state_key(self, data: dict[str, Any], fg: list[Point], bg: list[Point]) -> tuple:
        model = self._serving[0] if self._serving else ""
        photo = str(data.get("image_path"))
        return photo, file_version(photo), model, file_version(model) if model else None, tuple(fg), tuple(bg)

    def _remember(self, data: dict[str, Any], fg: list[Point], bg: list[Point], state: np.ndarray) -> None:
        keep_recent(self._states, self._state_key(data, fg, bg), (np.packbits(state), state.shape), STATES_KEPT)

    def _recall(self, data: dict[str, Any], fg: list[Point], bg: list[Point]) -> np.ndarray | None:
        kept = self._states.get(self._state_key(data, fg, bg))
        if kept is None:
            return None
        packed, shape = kept
        return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)

    def previous_mask(
        self,
        predictor: Any,
        prepared: Prepared,
        fg: list[Point],
        bg: list[Point],
        cfg: ClickConfig,
        effect: ClickEffect,
        data: dict[str, Any],
    ) -> np.ndarray | None:
        """The network's own mask before the newest click, (H, W) bool: what a model trained with its previous mask
        reads (RITM's iterative scheme) and what the zoom-in frames. 3D Slicer sends every click each time, the
        newest last in its list: the mask made for the clicks without it is kept from the request before; after a
        restart (or out of order) the clicks are replayed one by one, foreground first."""
        if not fg and not bg:
            return None
        for parent in ((fg[:-1], bg), (fg, bg[:-1])):
            if (fg, bg) != parent and (state := self._recall(data, *parent)) is not None:
                return state
        clicks = [(p, True) for p in fg] + [(p, False) for p in bg]
        previous = None
        for n in range(len(clicks)):
            sofar_fg = [p for p, positive in clicks[:n] if positive]
            sofar_bg = [p for p, positive in clicks[:n] if not positive]
            previous = predictor.click(prepared, sofar_fg, sofar_bg, cfg, effect, previous, answer=False).state
            self._remember(data, sofar_fg, sofar_bg, previous)
        return previous

    def within_roi(self, mask: np.ndarray, data: dict[str, Any]) -> np.ndarray:
        """The mask cleared outside 3D Slicer's box (``roi`` as [i0, i1, j0, j1, k0, k1] on the stored grid)."""
        roi = data.get("roi")
        if not roi:
            return mask
        if not isinstance(roi, list | tuple) or len(roi) < 4 or not all(isinstance(v, int | float) for v in roi):
            raise checks.bad_request(f"roi must be [i0, i1, j0, j1, k0, k1], got {roi!r}")
        orientation, stored = self.stored_grid(data)
        i0, i1, j0, j1 = (float(v) for v in roi[:4])
        corners = [stored_point_to_upright(r, c, orientation, stored) for r in (j0, j1) for c in (i0, i1)]
        rows, cols = [p[0] for p in corners], [p[1] for p in corners]
        box = np.zeros_like(mask)
        box[max(0, round(min(rows))) : round(max(rows)) + 1, max(0, round(min(cols))) : round(max(cols)) + 1] = 1
        return mask * box

    def result(self, data: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
        clicks = {
            "foreground": len(data.get("positive_clicks", [])),
            "background": len(data.get("negative_clicks", [])),
        }
        return {**super().result(data, mask), "clicks": clicks}
