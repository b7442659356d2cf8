"""The infer task both models share: a photograph in, a 0/1 lesion mask of the same size out."""

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
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Activationsd, AsDiscreted, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from PIL import Image

from lesion_app.lib.models import read_checkpoint
from lesion_app.lib.transforms import ORIGINAL_SIZE_KEY, RestoreSized, infer_transforms

logger = logging.getLogger(__name__)

#: Label values in every mask this app writes or reads back: 0 background, 1 lesion.
LABELS = {"lesion": 1}
RESULT_EXTENSIONS = (".png", ".nii.gz", ".nrrd")


def write_mask(mask: np.ndarray, extension: str) -> str:
    """Writes a (H, W) 0/1 mask to a new temporary file; the server streams and deletes it.

    PNG is written by Pillow in rows-first order, so it overlays the JPEG it came from. NIfTI and NRRD
    (what 3D Slicer asks for) go through ITK with unit spacing and zero origin, the geometry ITK gives
    the source PNG/JPEG, so the mask lands on the photograph in Slicer too.
    """
    if extension not in RESULT_EXTENSIONS:
        raise ValueError(f"result_extension must be one of {RESULT_EXTENSIONS}, got {extension!r}")
    fd, path = tempfile.mkstemp(suffix=extension, prefix="lesion_")
    os.close(fd)
    mask = np.ascontiguousarray(mask.astype(np.uint8))
    if extension == ".png":
        Image.fromarray(mask, mode="L").save(path)
    else:
        import itk

        itk.imwrite(itk.image_from_array(mask), path, compression=True)
    return path


@functools.lru_cache(maxsize=8)
def model_meta(path: str, mtime: float) -> dict[str, Any]:
    """The ``meta`` of a model file, read once per version of the file (``mtime`` is the cache key)."""
    try:
        return read_checkpoint(path).get("meta", {})
    except Exception:
        return {}


class LesionInferTask(BasicInferTask):
    """Resize to the network's input, predict, restore to the photograph's size, threshold at 0.5."""

    def __init__(
        self,
        path: Sequence[str],
        network: torch.nn.Module,
        roi_size: Sequence[int],
        description: str,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            path=list(path),
            network=network,
            type=InferType.SEGMENTATION,
            labels=LABELS,
            dimension=2,
            description=description,
            config={"result_extension": ".png", "threshold": 0.5, **(config or {})},
            load_strict=True,
        )
        self.roi_size = tuple(roi_size)
        self._broken: dict[str, float] = {}  # model file -> mtime of the version that failed to load

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return list(infer_transforms(self.roi_size).transforms)

    def inferer(self, data: dict | None = None) -> Inferer:
        return SimpleInferer()

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        threshold = float((data or {}).get("threshold", 0.5))
        return [
            Activationsd(keys="pred", sigmoid=True),
            RestoreSized(keys="pred"),
            AsDiscreted(keys="pred", threshold=threshold),
            SqueezeDimd(keys="pred", dim=0),
        ]

    def get_path(self, validate: bool = True) -> str | None:
        """The newest model file that exists and has not failed to load in its current version."""
        for path in reversed(self.path):
            if not validate:
                return path
            if os.path.exists(path) and self._broken.get(path) != os.stat(path).st_mtime:
                return path
        return None

    def _get_network(self, device: str, data: dict | None) -> torch.nn.Module:
        """Falls back to an older model file (the shipped one) when the newest cannot be read.

        A truncated or foreign file must not take the model offline; it is skipped until it changes.
        """
        while True:
            path = self.get_path()
            try:
                return super()._get_network(device, data)
            except Exception as e:
                if path is None:
                    raise
                self._broken[path] = os.stat(path).st_mtime
                logger.error(f"cannot load model {path} ({type(e).__name__}: {e}); trying an older one")
                if self.get_path() is None:
                    raise

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        ext = extension or data.get("result_extension") or ".png"
        mask = np.asarray(data["pred"]).astype(np.uint8)
        path = write_mask(mask, ext)
        model_path = self.get_path()
        meta = model_meta(model_path, os.stat(model_path).st_mtime) if model_path else {}
        result = {
            "model_path": Path(model_path).name if model_path else None,
            "model_epoch": meta.get("epoch"),
            "model_val_iou": (meta.get("val") or {}).get("iou"),
            "image_size": list(data[ORIGINAL_SIZE_KEY]),
            "lesion_fraction": float(mask.mean()) if mask.size else 0.0,
            "label_values": LABELS,
        }
        return path, result
