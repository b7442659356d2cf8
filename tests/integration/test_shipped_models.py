"""The shipped models on real dermoscopy images they were validated on (never trained on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesion_app.core.data import split
from lesion_app.core.metrics import score
from lesion_app.core.predictor import Predictor
from lesion_app.io.images import read_mask
from lesion_app.io.layout import find_pairs
from tests.support.paths import MODEL_DIR

pytestmark = pytest.mark.data

#: Predicting "everything is lesion" or a centred disc scores about 0.3-0.4 mean IoU on ISIC. On these 24
#: validation images the shipped models score 0.83 (unet) and 0.87 (deeplabv3), on the whole split 0.815 and
#: 0.828; a regression of a few points fails here.
MIN_MEAN_IOU = {"unet": 0.80, "deeplabv3": 0.84}
N_IMAGES = 24


@pytest.mark.parametrize("model", ["unet", "deeplabv3"])
def test_shipped_model_segments_real_lesions(isic: Path, model: str) -> None:
    predictor = Predictor.from_files([MODEL_DIR / f"pretrained_{model}.pt"], postprocess=False)
    _, val = split(find_pairs(isic), 0.2)
    ious = [score(predictor.mask(p["image"]), read_mask(p["label"])).iou for p in val[:N_IMAGES]]
    assert np.mean(ious) > MIN_MEAN_IOU[model], f"{model}: mean IoU {np.mean(ious):.3f} on {N_IMAGES} images"
    assert predictor.metas[0]["val"]["iou"] > 0.8
