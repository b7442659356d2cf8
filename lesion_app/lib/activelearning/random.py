"""The ``random`` strategy: an unlabelled photograph at random, those handed out longest ago more likely."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lesion_app.lib.activelearning import picks
from lesion_app.lib.scoring.uncertainty import image_infos

logger = logging.getLogger(__name__)

#: The least weight of an image, in seconds: one handed out a moment ago can still be drawn.
MIN_WEIGHT_SECONDS = 1.0


class Random(Strategy):
    """An unlabelled photograph drawn at random, weighted by the seconds since this strategy last handed it out
    (never: since the epoch), so two annotators rarely get the same photograph.

    MONAI Label's own ``Random`` weighs the same way but with no floor: once every unlabelled image has been
    handed out within the same second all weights are 0 and the draw fails (HTTP 500 on the seventh request on a
    fresh copy of sample-data). Here every weight is at least :data:`MIN_WEIGHT_SECONDS`.
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__("An unlabelled image at random, those handed out longest ago more likely")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = picks.unlabelled(request, datastore)
        if not images:
            return None
        strategy = request.get("strategy", "random")
        now = time.time()
        infos = image_infos(datastore, images)
        last = [infos[i].get("strategy", {}).get(strategy, {}).get("ts", 0) for i in images]
        weights = [max(MIN_WEIGHT_SECONDS, now - ts) for ts in last]
        with self._lock:
            image = self._rng.choices(images, weights=weights)[0]
        logger.info(f"random: {image} of {len(images)} unlabelled")
        return {"id": image}
