"""The ``uncertainty`` strategy: label next the photograph the served model is least sure of."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lesion_app.core.uncertainty import ENTROPY_KEY, SCORE_KEY
from lesion_app.lib.activelearning import picks
from lesion_app.lib.scoring.uncertainty import UncertaintyScoring, scores_at_hand

#: The answer's count of unlabelled photographs whose score is missing or made by an older model; the app
#: queues the background scoring when it is not 0.
PENDING_KEY = "scores_pending"


class Uncertainty(Strategy):
    """The unlabelled photograph with the highest stored uncertainty (ties: the higher mean entropy).

    It answers at once from the scores at hand (:func:`scores_at_hand`), older models' included, and never
    scores itself; with no score at all it hands out the first unlabelled photograph. ``scores_pending`` says
    how many photographs the background scoring has yet to (re)score.
    """

    def __init__(self, scoring: UncertaintyScoring) -> None:
        super().__init__("The unlabelled image the served model is least sure of (Monte Carlo dropout or flips)")
        self.scoring = scoring

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        unlabelled = picks.unlabelled(request, datastore)
        if not unlabelled:
            return None
        ranked, pending = scores_at_hand(self.scoring, datastore, unlabelled)
        if not ranked:
            return {"id": unlabelled[0], PENDING_KEY: pending}
        score, entropy, image_id = max(ranked)
        return {"id": image_id, SCORE_KEY: score, ENTROPY_KEY: entropy, PENDING_KEY: pending}
