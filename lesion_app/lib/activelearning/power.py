"""The ``power`` strategy: the next photograph drawn at random, in proportion to its uncertainty ** beta.

A server hands out one photograph per request, and the model is retrained only every few labels, so the
images labelled between two trainings form a batch chosen with the same scores. The ``uncertainty``
strategy then hands out the top-K of those scores one by one, the redundant, atypical batch that learns
slower than random on this data (docs/results.md, Active learning, simulated). Drawing each photograph with
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
from lesion_app.lib.activelearning import picks
from lesion_app.lib.activelearning.uncertainty import ENTROPY_KEY, PENDING_KEY, SCORE_KEY
from lesion_app.lib.scoring.uncertainty import UncertaintyScoring, scores_at_hand
from lesion_app.server import checks

logger = logging.getLogger(__name__)


#: The largest ``beta`` a request may ask for: beyond it the draw is the ``uncertainty`` strategy's top pick anyway,
#: and far beyond it the weights overflow.
MAX_BETA = 100.0


def request_options(request: dict[str, Any], default_beta: float) -> tuple[float, int | None]:
    """A request's ``beta`` (a number from 0 to :data:`MAX_BETA`, ``default_beta`` when absent) and ``seed`` (a whole
    number from 0 to 2**32 - 1, or None).

    Raises:
        HTTPException: 400 naming the option, for any other value.
    """
    beta, seed = request.get("beta", default_beta), request.get("seed")
    number = checks.as_number(beta)
    if not 0.0 <= number <= MAX_BETA:
        raise checks.bad_request(f"beta must be a number from 0 to {MAX_BETA:g}, got {beta!r}")
    if seed is None:
        return number, None
    digits = str(seed).strip()
    if isinstance(seed, bool) or not digits.isdigit() or int(digits) >= 2**32:
        raise checks.bad_request(f"seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}")
    return number, int(digits)


class PowerUncertainty(Strategy):
    """An unlabelled photograph drawn with probability proportional to its stored uncertainty ** beta.

    Scores are those at hand (the ``uncertainty`` strategy's, older models' included; never computed here); a
    photograph without one weighs as the mean score at hand (all alike when none has one). ``seed`` makes the
    server's sequence of draws reproducible; a request may give its own ``seed`` (that draw alone is then
    reproducible) and ``beta``.
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
        unlabelled = picks.unlabelled(request, datastore)
        if not unlabelled:
            return None
        beta, seed = request_options(request, self.beta)
        ranked, pending = scores_at_hand(self.scoring, datastore, unlabelled)
        known = {image_id: (score, entropy) for score, entropy, image_id in ranked}
        neutral = float(np.mean([s for s, _ in known.values()])) if known else 1.0
        ranked = [(*known.get(i, (neutral, 0.0)), i) for i in unlabelled]
        scores = [score for score, _, _ in ranked]
        if seed is not None:
            (i,) = power_sample(scores, 1, np.random.default_rng(seed), beta)
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
            PENDING_KEY: pending,
        }
