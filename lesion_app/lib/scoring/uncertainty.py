"""Uncertainty scoring: every unlabelled photograph gets the served model's uncertainty in its datastore info.

Scores live in the datastore's image info (as MONAI Label's epistemic scoring keeps them), with the model
file's name and modification time, so a score made with an older model is recognisable and recomputed.
The scoring runs in MONAI Label's background process, at a low CPU priority, in batches (at most
:data:`BATCH_SIZE` photographs or :data:`BATCH_SECONDS`) with one datastore write per batch: a run stopped at
any point (a SIGTERM, a training, the server's end) keeps every finished batch, and the next run starts where
it stopped. Strategies never score: they answer from the scores at hand (:func:`scores_at_hand`) and say how
many are missing or stale.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lesion_app.core.uncertainty import ENTROPY_KEY, SCORE_KEY, VERSION_KEY, UncertaintyEstimator

logger = logging.getLogger(__name__)

#: Photographs scored between two writes of the datastore file at most...
BATCH_SIZE = 32
#: ... and seconds at most: a slow machine still stores its scores every few seconds.
BATCH_SECONDS = 5.0
#: The niceness of a scoring process: the server's requests come first.
BACKGROUND_NICENESS = 10


def image_infos(datastore: Datastore, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The info of each image, read at once where the datastore can (:class:`SharedDatastoreFile`)."""
    read_all = getattr(datastore, "image_infos", None)
    if callable(read_all):
        infos = read_all()
        return {i: infos.get(i, {}) for i in image_ids}
    return {i: datastore.get_image_info(i) for i in image_ids}


def store_infos(datastore: Datastore, infos: dict[str, dict[str, Any]]) -> None:
    """Merges each image's info, in one write of the datastore file where the datastore can.

    Scoring runs in its own process; the app's datastores re-read the file under its lock first, so labels the
    server saved meanwhile are kept.
    """
    if not infos:
        return
    write_all = getattr(datastore, "update_images_info", None)
    if callable(write_all):
        write_all(infos)
        return
    for image_id, info in infos.items():
        datastore.update_image_info(image_id, info)


class UncertaintyScoring(ScoringMethod):
    """Scores every unlabelled photograph whose score is missing or was made with another model version."""

    def __init__(self, estimator: UncertaintyEstimator, batch_size: int = BATCH_SIZE) -> None:
        super().__init__(
            f"Uncertainty of the served model per unlabelled image ({estimator.method}; "
            "1 - mean pairwise IoU of the sampled masks), in the background, in batches"
        )
        self.estimator = estimator
        self.batch_size = batch_size

    def stale(self, datastore: Datastore, image_ids: Sequence[str]) -> list[str]:
        """The images whose stored score was not made by the model version served now."""
        version = self.estimator.current()[2]
        infos = image_infos(datastore, image_ids)
        return [i for i in image_ids if infos[i].get(VERSION_KEY) != version]

    def score(self, datastore: Datastore, image_ids: Sequence[str]) -> dict[str, float]:
        """Scores each image and stores the scores batch by batch (an unreadable image is logged and left out):
        id -> uncertainty."""
        scores: dict[str, float] = {}
        batch: dict[str, dict[str, Any]] = {}
        started = time.monotonic()
        for n, image_id in enumerate(image_ids, 1):
            try:
                estimate = self.estimator.estimate(datastore.get_image_uri(image_id))
                batch[image_id] = estimate.info()
                scores[image_id] = estimate.scores["disagreement"]
            except Exception as e:  # one unreadable photograph must not stop the others being scored
                logger.error(f"uncertainty: cannot score {image_id} ({type(e).__name__}: {e})")
            if batch and (
                len(batch) >= self.batch_size or time.monotonic() - started >= BATCH_SECONDS or n == len(image_ids)
            ):
                store_infos(datastore, batch)
                print(f"uncertainty: stored a batch of {len(batch)} ({n} of {len(image_ids)} done)", flush=True)
                batch, started = {}, time.monotonic()
        return scores

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        if hasattr(os, "nice"):
            os.nice(BACKGROUND_NICENESS)  # its own process: the server's requests come first
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


def scores_at_hand(
    scoring: UncertaintyScoring, datastore: Datastore, image_ids: Sequence[str]
) -> tuple[list[tuple[float, float, str]], int]:
    """``(uncertainty, entropy, id)`` of each image with a stored score, in ``image_ids`` order, and how many of
    ``image_ids`` have none or one an older model made (those the background scoring has yet to do).

    Nothing is scored here: a request never waits for the scoring (at 10,000 photographs it takes hours).
    """
    version = scoring.estimator.current()[2]
    infos = image_infos(datastore, image_ids)
    ranked, missing = [], 0
    for image_id in image_ids:
        info = infos[image_id]
        missing += info.get(VERSION_KEY) != version
        if SCORE_KEY in info:
            ranked.append((float(info[SCORE_KEY]), float(info.get(ENTROPY_KEY, 0.0)), image_id))
    return ranked, missing
