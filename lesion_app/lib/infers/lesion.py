"""The infer task all models share: a photograph in, a 0/1 lesion mask of the same size out."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.transforms import Activationsd, AsDiscreted, SqueezeDimd
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from PIL import Image

from lesion_app.lib.inference import AveragingNetwork, make_inferer
from lesion_app.lib.models import ModelFiles, read_checkpoint
from lesion_app.lib.postprocess import clean_mask_transforms
from lesion_app.lib.transforms import ORIGINAL_SIZE_KEY, RestoreSized, infer_transforms
from lesion_app.lib.validation import exif_orientation, itk_geometry, unreadable_image, upright_to_stored

logger = logging.getLogger(__name__)

#: Label values in every mask this app writes or reads back: 0 background, 1 lesion.
LABELS = {"lesion": 1}
RESULT_EXTENSIONS = (".png", ".nii.gz", ".nrrd")


def write_mask(mask: np.ndarray, extension: str, source: str | os.PathLike | None = None) -> str:
    """Writes a (H, W) 0/1 mask to a new temporary file; the server streams and deletes it.

    PNG is written by Pillow in rows-first order, upright, so it overlays the photograph as the app and photo
    viewers show it. NIfTI and NRRD (what 3D Slicer asks for) go through ITK on the grid ITK, and so Slicer,
    reads ``source`` on: its stored pixel order (EXIF orientation undone) and its spacing, origin and
    direction (a JPEG's JFIF density gives a spacing other than 1), so the mask lands on the lesion in Slicer.
    """
    if extension not in RESULT_EXTENSIONS:
        raise ValueError(f"result_extension must be one of {RESULT_EXTENSIONS}, got {extension!r}")
    fd, path = tempfile.mkstemp(suffix=extension, prefix="lesion_")
    os.close(fd)
    mask = np.ascontiguousarray(mask.astype(np.uint8))
    if extension == ".png":
        Image.fromarray(mask, mode="L").save(path)
        return path

    import itk

    spacing, origin, direction = [1.0, 1.0], [0.0, 0.0], np.eye(2)
    if source is not None and os.path.isfile(source):
        mask = upright_to_stored(mask, exif_orientation(source))
        try:
            spacing, origin, direction = itk_geometry(source)
        except Exception as e:  # ITK cannot read it: Slicer could not either; keep ITK's defaults
            logger.warning(f"no ITK geometry for {Path(source).name} ({e}); writing unit spacing, zero origin")
    image = itk.image_from_array(np.ascontiguousarray(mask))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction, dtype=np.float64)))
    itk.imwrite(image, path, compression=True)
    return path


@functools.lru_cache(maxsize=8)
def model_meta(path: str, mtime: float) -> dict[str, Any]:
    """The ``meta`` of a model file, read once per version of the file (``mtime`` is the cache key)."""
    try:
        return read_checkpoint(path).get("meta", {})
    except Exception:
        return {}


def _flag(value: Any) -> bool:
    """A request option as a boolean: JSON true/false, or the strings Slicer and curl send."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class LesionInferTask(BasicInferTask):
    """Resize to the network's input, predict, restore to the photograph's size, threshold, clean up.

    Each request may set ``tta`` (average the four flips) and ``postprocess`` (keep the largest region,
    fill its holes); the defaults come from the settings. ``members`` makes the task an ensemble: one
    list of candidate model files per member, the newest loadable file of each is used.
    """

    def __init__(
        self,
        path: Sequence[str],
        network: torch.nn.Module,
        roi_size: Sequence[int],
        description: str,
        config: dict[str, Any] | None = None,
        members: Sequence[Sequence[str]] | None = None,
    ) -> None:
        self.members = [list(m) for m in members] if members else [list(path)]
        super().__init__(
            path=[p for m in self.members for p in m],
            network=network,
            type=InferType.SEGMENTATION,
            labels=LABELS,
            dimension=2,
            description=description,
            config={"result_extension": ".png", "threshold": 0.5, "tta": False, "postprocess": True, **(config or {})},
            load_strict=True,
        )
        self.roi_size = tuple(roi_size)
        self._models = ModelFiles()
        self._serving: list[str] = []

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return list(infer_transforms(self.roi_size).transforms)

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        """A photograph that cannot be decoded is the request's fault (422), not the server's (500)."""
        try:
            return super().run_pre_transforms(data, transforms)
        except Exception as e:
            raise unreadable_image(data.get("image_path", data.get("image")), e) from e

    def inferer(self, data: dict | None = None) -> Inferer:
        return make_inferer(_flag((data or {}).get("tta", False)))

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        data = data or {}
        threshold = float(data.get("threshold", 0.5))
        xs = [
            Activationsd(keys="pred", sigmoid=True),
            RestoreSized(keys="pred"),
            AsDiscreted(keys="pred", threshold=threshold),
        ]
        if _flag(data.get("postprocess", True)):
            xs += clean_mask_transforms("pred")
        return [*xs, SqueezeDimd(keys="pred", dim=0)]

    def get_path(self, validate: bool = True) -> str | None:
        """The newest model file of the first member that exists and has not failed to load in this version."""
        return self._member_path(self.members[0], validate)

    def _member_path(self, paths: Sequence[str], validate: bool = True) -> str | None:
        if not validate:
            return paths[-1] if paths else None
        return self._models.newest(paths)

    def _load_member(self, paths: Sequence[str], device: str) -> tuple[str, torch.nn.Module]:
        """The newest loadable model of one member, rebuilt from the architecture its file describes."""
        try:
            return self._models.load(paths, device)
        except FileNotFoundError as e:
            raise MONAILabelException(MONAILabelError.INFERENCE_ERROR, str(e)) from e

    def _get_network(self, device: str, data: dict | None) -> torch.nn.Module:
        loaded = [self._load_member(paths, device) for paths in self.members]
        self._serving = [path for path, _ in loaded]
        networks = [net for _, net in loaded]
        return networks[0] if len(networks) == 1 else AveragingNetwork(networks).eval()

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        ext = extension or data.get("result_extension") or ".png"
        mask = np.asarray(data["pred"]).astype(np.uint8)
        source = data.get("image_path")
        path = write_mask(mask, ext, source if isinstance(source, str | os.PathLike) else None)
        serving = self._serving or [p for p in (self.get_path(),) if p]
        metas = [model_meta(p, os.stat(p).st_mtime) if os.path.exists(p) else {} for p in serving]
        first = metas[0] if metas else {}
        result = {
            "model_path": Path(serving[0]).name if serving else None,
            "model_paths": [Path(p).name for p in serving],
            "model_epoch": first.get("epoch"),
            "model_val_iou": (first.get("val") or {}).get("iou"),
            "tta": _flag(data.get("tta", False)),
            "postprocess": _flag(data.get("postprocess", True)),
            "image_size": list(data[ORIGINAL_SIZE_KEY]),
            "lesion_fraction": float(mask.mean()) if mask.size else 0.0,
            "label_values": LABELS,
        }
        return path, result
