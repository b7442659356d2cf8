"""The ``power`` strategy: the next photograph drawn at random, in proportion to its uncertainty ** beta.

A server hands out one photograph per request, and the model is retrained only every few labels, so the
images labelled between two trainings form a batch chosen with the same scores. The ``uncertainty``
strategy then hands out the top-K of those scores one by one, the redundant, atypical batch that learns
slower than random on this data (README, Active learning, simulated). Drawing each photograph with
probability proportional to ``uncertainty ** beta`` among the unlabelled ones is power sampling of that
batch (Kirsch et al., 2023; see ``selection.py``), exactly so when each photograph is labelled before the
next request: still drawn to where the model is unsure, but spread over the pool. ``beta = 0`` is uniform
random; a large ``beta`` approaches ``uncertainty``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lesion_app.core.selection import power_sample, selection_probabilities
from lesion_app.lib.activelearning.uncertainty import (
    ENTROPY_KEY,
    SCORE_KEY,
    UncertaintyScoring,
    up_to_date_scores,
)

logger = logging.getLogger(__name__)


class PowerUncertainty(Strategy):
    """An unlabelled photograph drawn with probability proportional to its stored uncertainty ** beta.

    Scores are the ``UncertaintyScoring``'s (the same as the ``uncertainty`` strategy's, refreshed on the
    spot when made with an older model). ``seed`` makes the server's sequence of draws reproducible; a
    request may give its own ``seed`` (that draw alone is then reproducible) and ``beta``.
    """

    def __init__(self, scoring: UncertaintyScoring, beta: float = 1.0, seed: int | None = None) -> None:
        if beta < 0:
            raise ValueError(f"beta must be >= 0, not {beta}")
        super().__init__(
            f"An unlabelled image drawn with probability proportional to its uncertainty ** {beta:g} "
            "(power sampling: uncertain images first, without the top-K's redundant batches)"
        )
        self.scoring = scoring
        self.beta = beta
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # a numpy Generator must not be drawn from by two threads at once

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        unlabelled = datastore.get_unlabeled_images()
        if not unlabelled:
            return None
        beta = float(request.get("beta", self.beta))
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, not {request.get('beta')!r}")
        ranked = up_to_date_scores(self.scoring, datastore, unlabelled)
        if not ranked:  # nothing could be scored (unreadable images): still offer something to label
            return {"id": unlabelled[0]}
        scores = [score for score, _, _ in ranked]
        if request.get("seed") is not None:
            (i,) = power_sample(scores, 1, np.random.default_rng(int(request["seed"])), beta)
        else:
            with self._lock:
                (i,) = power_sample(scores, 1, self._rng, beta)
        score, entropy, image_id = ranked[i]
        probability = float(selection_probabilities(scores, beta)[i])
        logger.info(f"power: {image_id} (uncertainty {score:.4f}, drawn with probability {probability:.4f})")
        return {
            "id": image_id,
            SCORE_KEY: score,
            ENTROPY_KEY: entropy,
            "probability": round(probability, 6),
            "beta": beta,
        }
