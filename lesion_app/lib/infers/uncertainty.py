"""Infer task ``uncertainty``: the per-pixel uncertainty map of the served model, as a picture.

MONAI Label returns one file per infer request, so the map is its own task: the result image IS the map,
an 8-bit single-channel PNG at the photograph's size (0 = the samples are sure, 255 = one bit of entropy,
a probability of 0.5), and the result JSON carries the image-level scores. A viewer overlays it on the
photograph next to the mask from the segmentation tasks to show where the border is doubtful.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from PIL import Image

from lesion_app.core.uncertainty import UncertaintyEstimator, to_uint8
from lesion_app.server.checks import unreadable_image


class UncertaintyInfer(InferTask):
    """The ``uncertainty`` infer task: an 8-bit PNG map (255 = probability 0.5) and the image's scores."""

    def __init__(self, estimator: UncertaintyEstimator, model: str) -> None:
        super().__init__(
            type=InferType.OTHERS,  # not a segmentation: viewers must not offer it as lesion labels
            labels=None,
            dimension=2,
            description=(f"Per-pixel uncertainty of '{model}' ({estimator.method}): 8-bit PNG, 255 = probability 0.5"),
            config={"method": estimator.method, "samples": estimator.samples},
        )
        self.estimator = estimator
        self.model = model

    def is_valid(self) -> bool:
        return bool(self.estimator.current()[0])

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # The map is no lesion label: never let MONAI Label save it as the 'original' proposal.
        request["save_label"] = False
        try:
            estimate = self.estimator.estimate(request["image"])
        except Exception as e:  # a photograph that cannot be decoded is the request's fault (422), not a 500
            raise unreadable_image(request["image"], e) from e
        fd, path = tempfile.mkstemp(suffix=".png", prefix="lesion_uncertainty_")
        os.close(fd)
        Image.fromarray(to_uint8(estimate.entropy_map()), mode="L").save(path)
        result = {
            "model": self.model,
            "model_paths": estimate.models,
            "method": self.estimator.method,
            "samples": len(estimate.probs),
            "uncertainty": estimate.scores["disagreement"],
            "uncertainty_entropy": estimate.scores["entropy"],
            "image_size": list(estimate.original_size),
            "scale": "0-255 = predictive entropy 0-1 bit per pixel",
        }
        return path, result
