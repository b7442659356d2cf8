"""The infer task of every automatic model (``unet``, ``deeplabv3``, ``ensemble``): photograph in, 0/1 mask out.

MONAI Label's :class:`BasicInferTask` runs the request (pre transforms, inferer, writer, latencies, saving the
``original`` label); the segmentation itself is :class:`lesion_app.core.predictor.Predictor`'s, so the server
and the programs give the same mask for the same options.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lesion_app.core.checkpoint import ModelFiles, model_meta
from lesion_app.core.predictor import Predictor
from lesion_app.core.quality import QUALITY_FLIPS, QualityModel, quality_features
from lesion_app.core.transforms import ORIGINAL_SIZE_KEY, PHOTOGRAPH_KEY, infer_transforms
from lesion_app.io.images import write_mask
from lesion_app.server.checks import SPACING_OPTION, flag, unreadable_image
from lesion_app.server.measuring import mask_measurements

logger = logging.getLogger(__name__)

#: Label values in every mask this app writes or reads back: 0 background, 1 lesion.
LABELS = {"lesion": 1}
#: The config key that carries ``--conf pixel_spacing_mm`` (a request's ``pixel_spacing_mm`` and a DICOM
#: calibration come first).
CONF_SPACING = "conf_pixel_spacing_mm"


class SegmentationInfer(BasicInferTask):
    """Resize to the network's input, predict, restore to the photograph's size, threshold, clean up.

    Each request may set ``tta`` (average the four flips), ``postprocess`` (keep the largest region, fill
    its holes) and ``threshold``; the defaults come from ``config``. ``members`` holds one list of candidate
    model files per ensemble member, oldest first (the shipped weights, then the server's); the newest file
    of each that loads is used, so a model trained by the server is served as soon as it is published.
    """

    def __init__(
        self,
        members: Sequence[Sequence[str]],
        spatial_size: Sequence[int],
        description: str,
        config: dict[str, Any] | None = None,
        infer_type: InferType = InferType.SEGMENTATION,
        quality: str | None = None,
    ) -> None:
        self.members = [list(m) for m in members]
        self.quality = QualityModel.load(quality) if quality and os.path.exists(quality) else None
        super().__init__(
            path=[p for m in self.members for p in m],
            network=None,
            type=infer_type,
            labels=LABELS,
            dimension=2,
            description=description,
            config={"result_extension": ".png", "threshold": 0.5, "tta": False, "postprocess": True, **(config or {})},
            load_strict=True,
        )
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self._models = ModelFiles()
        self._serving: list[str] = []

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return list(infer_transforms(self.spatial_size, keep_photograph=True).transforms)

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        """A photograph that cannot be decoded is the request's fault (422), not the server's (500)."""
        try:
            return super().run_pre_transforms(data, transforms)
        except Exception as e:
            raise unreadable_image(data.get("image_path", data.get("image")), e) from e

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return []

    def get_path(self, validate: bool = True) -> str | None:
        """The newest model file of the first member that exists and has not failed to load in this version."""
        paths = self.members[0]
        if not validate:
            return paths[-1] if paths else None
        return self._models.newest(paths)

    def networks(self, device: str) -> list[torch.nn.Module]:
        """The newest loadable network of each member, each rebuilt from the architecture its file describes."""
        loaded = []
        for paths in self.members:
            try:
                loaded.append(self._models.load(paths, device))
            except FileNotFoundError as e:
                raise MONAILabelException(MONAILabelError.INFERENCE_ERROR, str(e)) from e
        self._serving = [path for path, _ in loaded]
        return [net for _, net in loaded]

    def predictor(self, data: dict[str, Any], device: str) -> Predictor:
        """The request's predictor: this task's networks with the request's options over the config's."""
        return Predictor(
            self.networks(device),
            self.spatial_size,
            tta=flag(data.get("tta", False)),
            postprocess=flag(data.get("postprocess", True)),
            threshold=float(data.get("threshold", 0.5)),
        )

    def network_input(self, data: dict[str, Any], device: str) -> torch.Tensor:
        """The (1, C, h, w) batch the networks see: the photograph alone for the automatic models."""
        return torch.as_tensor(data["image"])[None].float().to(device)

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        device = str(device)
        predictor = self.predictor(data, device)
        x = self.network_input(data, device)
        if self.quality is None:
            probs = predictor.batch_probabilities(x)[0].cpu()
        else:  # the first flips serve the estimate, all four test-time augmentation when asked for
            flips = predictor.flips(x, 4 if predictor.tta else QUALITY_FLIPS)[:, 0].cpu()
            probs = flips.mean(0) if predictor.tta else flips[0]
            data["quality"] = self.quality.assess(quality_features(flips[:, 0].numpy()))
        data["probabilities"] = predictor.restore(probs, data[ORIGINAL_SIZE_KEY])
        data["pred"] = predictor.mask_from(data["probabilities"])
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        ext = extension or data.get("result_extension") or ".png"
        mask = np.asarray(data["pred"]).astype(np.uint8)
        source = data.get("image_path")
        path = write_mask(mask, ext, source if isinstance(source, str | os.PathLike) else None)
        return path, self.result(data, mask)

    def result(self, data: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
        """The result JSON: which model files served, the options, the photograph's size, the lesion's share and its
        ``measurements`` (:mod:`lesion_app.server.measuring`, on the photograph the loader kept: spacing from the
        request, the DICOM, ``--conf``)."""
        serving = self._serving or [p for p in (self.get_path(),) if p]
        metas = [model_meta(p, os.stat(p).st_mtime) if os.path.exists(p) else {} for p in serving]
        first = metas[0] if metas else {}
        return {
            "model_path": Path(serving[0]).name if serving else None,
            "model_paths": [Path(p).name for p in serving],
            "model_epoch": first.get("epoch"),
            "model_val_iou": (first.get("val") or {}).get("iou"),
            "tta": flag(data.get("tta", False)),
            "postprocess": flag(data.get("postprocess", True)),
            "image_size": list(data[ORIGINAL_SIZE_KEY]),
            "lesion_fraction": float(mask.mean()) if mask.size else 0.0,
            "label_values": LABELS,
            **data.get("quality", {}),
            "measurements": mask_measurements(
                mask,
                data["image_path"],
                data.get(SPACING_OPTION),
                self._config.get(CONF_SPACING),
                data.get(PHOTOGRAPH_KEY),
            ),
        }
