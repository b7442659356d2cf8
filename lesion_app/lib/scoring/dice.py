"""Dice between the model's proposal (label tag ``original``) and the clinician's correction (``final``).

A low value marks a photograph where the model was weak, which is worth looking at before training.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lesion_app.core.metrics import dice
from lesion_app.io.images import read_mask
from lesion_app.lib.scoring.uncertainty import store_infos

logger = logging.getLogger(__name__)

DICE_KEY = "dice_original_final"


class DiceScoring(ScoringMethod):
    """Stores ``dice_original_final`` in the info of every image that has both an original and a final label."""

    def __init__(self) -> None:
        super().__init__("Dice between the model's proposal (label tag 'original') and the saved 'final' label")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        tag_y = request.get("y", DefaultLabelTag.FINAL.value)
        tag_pred = request.get("y_pred", DefaultLabelTag.ORIGINAL.value)
        result: dict[str, float] = {}
        now = int(time.time())
        for image_id in datastore.list_images():
            y_id = datastore.get_label_by_image_id(image_id, tag_y)
            pred_id = datastore.get_label_by_image_id(image_id, tag_pred)
            if not (y_id and pred_id):
                continue
            try:
                y = read_mask(datastore.get_label_uri(y_id, tag_y))
                pred = read_mask(datastore.get_label_uri(pred_id, tag_pred))
                value = round(dice(pred, y), 6)
            except Exception as e:  # one unreadable label must not stop the others
                logger.error(f"dice: cannot score {image_id} ({type(e).__name__}: {e})")
                continue
            result[image_id] = value
        store_infos(datastore, {i: {DICE_KEY: value, "dice_ts": now} for i, value in result.items()})  # one write
        logger.info(f"dice scoring: {len(result)} image(s) in {time.time() - start:.2f}s: {result}")
        return result
