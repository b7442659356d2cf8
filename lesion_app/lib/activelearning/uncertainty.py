"""The ``uncertainty`` strategy: label next the photograph the served model is least sure of."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lesion_app.core.uncertainty import ENTROPY_KEY, SCORE_KEY
from lesion_app.lib.scoring.uncertainty import UncertaintyScoring, up_to_date_scores


class Uncertainty(Strategy):
    """The unlabelled photograph with the highest uncertainty (ties: the higher mean entropy).

    Scores missing or made with an older model are computed here and then, so the answer is never based
    on a model that training has replaced (a few hundred photographs take seconds to a minute on a CPU).
    """

    def __init__(self, scoring: UncertaintyScoring) -> None:
        super().__init__("The unlabelled image the served model is least sure of (Monte Carlo dropout or flips)")
        self.scoring = scoring

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        unlabelled = datastore.get_unlabeled_images()
        if not unlabelled:
            return None
        ranked = up_to_date_scores(self.scoring, datastore, unlabelled)
        if not ranked:  # nothing could be scored (unreadable images): still offer something to label
            return {"id": unlabelled[0]}
        score, entropy, image_id = max(ranked)
        return {"id": image_id, SCORE_KEY: score, ENTROPY_KEY: entropy}
