"""Uncertainty scoring: every unlabelled photograph gets the served model's uncertainty in its datastore info.

Scores live in the datastore's image info (as MONAI Label's epistemic scoring keeps them), with the model
file's name and modification time, so a score made with an older model is recognisable and recomputed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lesion_app.core.uncertainty import ENTROPY_KEY, SCORE_KEY, VERSION_KEY, UncertaintyEstimator

logger = logging.getLogger(__name__)


def store_info(datastore: Datastore, image_id: str, info: dict[str, Any]) -> None:
    """Updates one image's info, first re-reading the datastore file if another process changed it.

    Scoring runs in its own process; without the re-read its stale copy of the datastore would overwrite
    labels the server saved meanwhile.
    """
    reload = getattr(datastore, "_init_from_datastore_file", None)
    if callable(reload):
        reload()
    datastore.update_image_info(image_id, info)


class UncertaintyScoring(ScoringMethod):
    """Scores every unlabelled photograph whose score is missing or was made with another model version."""

    def __init__(self, estimator: UncertaintyEstimator) -> None:
        super().__init__(
            f"Uncertainty of the served model per unlabelled image ({estimator.method}; "
            "1 - mean pairwise IoU of the sampled masks)"
        )
        self.estimator = estimator

    def stale(self, datastore: Datastore, image_ids: Sequence[str]) -> list[str]:
        """The images whose stored score was not made by the model version served now."""
        version = self.estimator.current()[2]
        return [i for i in image_ids if datastore.get_image_info(i).get(VERSION_KEY) != version]

    def score(self, datastore: Datastore, image_ids: Sequence[str]) -> dict[str, float]:
        """Scores and stores each image (an unreadable one is logged and left out): id -> uncertainty."""
        scores = {}
        for image_id in image_ids:
            try:
                estimate = self.estimator.estimate(datastore.get_image_uri(image_id))
            except Exception as e:  # one unreadable photograph must not stop the others being scored
                logger.error(f"uncertainty: cannot score {image_id} ({type(e).__name__}: {e})")
                continue
            store_info(datastore, image_id, estimate.info())
            scores[image_id] = estimate.scores["disagreement"]
        return scores

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        unlabelled = datastore.get_unlabeled_images()
        todo = list(unlabelled) if request.get("force") else self.stale(datastore, unlabelled)
        scores = self.score(datastore, todo)
        names, mtime, _ = self.estimator.current()
        summary = {
            "total": len(unlabelled),
            "skipped": len(unlabelled) - len(todo),
            "executed": len(scores),
            "model": names,
            "model_mtime": mtime,
            "latency": round(time.time() - start, 3),
        }
        logger.info(f"uncertainty scoring: {summary}")
        return summary


def up_to_date_scores(
    scoring: UncertaintyScoring, datastore: Datastore, image_ids: Sequence[str]
) -> list[tuple[float, float, str]]:
    """``(uncertainty, entropy, id)`` of each image whose score the served model made, in ``image_ids`` order.

    Images without an up-to-date score are scored first; those that cannot be (unreadable) are left out.
    """
    stale = scoring.stale(datastore, image_ids)
    if stale:
        logger.info(f"uncertainty: scoring {len(stale)} image(s) without an up-to-date score first")
        scoring.score(datastore, stale)
    version = scoring.estimator.current()[2]
    ranked = []
    for image_id in image_ids:
        info = datastore.get_image_info(image_id)
        if info.get(VERSION_KEY) == version:
            ranked.append((info.get(SCORE_KEY, 0.0), info.get(ENTROPY_KEY, 0.0), image_id))
    return ranked
