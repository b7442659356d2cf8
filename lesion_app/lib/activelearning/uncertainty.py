"""Uncertainty scoring and the ``uncertainty`` strategy: label next the photograph the model is least sure of.

Scores live in the datastore's image info (as MONAI Label's epistemic scoring keeps them), with the model
file's name and modification time, so a score made with an older model is recognisable and recomputed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from torch import nn

from lesion_app.lib.models import ModelFiles
from lesion_app.lib.transforms import ORIGINAL_SIZE_KEY, infer_transforms
from lesion_app.lib.uncertainty import (
    average_members,
    has_dropout,
    image_scores,
    pixel_entropy,
    sample_probabilities,
)

logger = logging.getLogger(__name__)

#: Image-info keys this module writes.
SCORE_KEY = "uncertainty"
ENTROPY_KEY = "uncertainty_entropy"
VERSION_KEY = "uncertainty_version"


@dataclass(frozen=True)
class Estimate:
    probs: np.ndarray  # (S, h, w) sampled probabilities at the network's input size
    original_size: tuple[int, int]
    scores: dict[str, float]
    models: list[str]
    model_mtime: float
    version: str

    def entropy_map(self) -> np.ndarray:
        """Per-pixel predictive entropy (bits) at the photograph's size."""
        h = torch.as_tensor(pixel_entropy(self.probs))[None, None]
        h = torch.nn.functional.interpolate(h, size=self.original_size, mode="bilinear", align_corners=False)
        return h[0, 0].clamp(0.0, 1.0).numpy()

    def info(self) -> dict[str, Any]:
        """What the datastore keeps per image."""
        return {
            SCORE_KEY: round(self.scores["disagreement"], 6),
            ENTROPY_KEY: round(self.scores["entropy"], 6),
            "uncertainty_model": self.models[0] if len(self.models) == 1 else self.models,
            "uncertainty_model_mtime": self.model_mtime,
            VERSION_KEY: self.version,
            "uncertainty_ts": int(time.time()),
        }


class UncertaintyEstimator:
    """Samples the served model on one photograph, Monte Carlo dropout or flips, at the network's input size.

    ``members`` are the served model's candidate files, as the infer task gets them (one list per ensemble
    member; the newest file that loads is used, as for inference). The networks are this object's own
    copies: dropout stays switched on in them, which must never leak into the infer tasks' networks.
    """

    def __init__(
        self, members: Sequence[Sequence[str]], roi_size: Sequence[int], method: str = "dropout", samples: int = 8
    ) -> None:
        self.members = [list(m) for m in members]
        self.roi_size = tuple(roi_size)
        self.method = method
        self.samples = samples
        self.transforms = infer_transforms(self.roi_size)
        self._models = ModelFiles(log_prefix="uncertainty: ")
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def _candidates(self, paths: Sequence[str]) -> list[tuple[str, float]]:
        return self._models.candidates(paths)

    def current(self) -> tuple[list[str], float, str]:
        """Model file names, the newest mtime among them and the version key, without loading anything."""
        chosen = [c[0] for m in self.members if (c := self._candidates(m))]
        names = [Path(p).name for p, _ in chosen]
        mtime = max((t for _, t in chosen), default=0.0)
        parts = "+".join(f"{Path(p).name}@{t:.3f}" for p, t in chosen)
        return names, mtime, f"{self.method}x{self.samples if self.method == 'dropout' else 4}:{parts}"

    def _network(self, paths: Sequence[str]) -> nn.Module:
        path, network = self._models.load(paths)
        if self.method == "dropout" and not has_dropout(network) and path not in self._warned:
            self._warned.add(path)
            logger.warning(f"uncertainty: {path} has no dropout; its samples will all agree (use tta)")
        return network

    def estimate(self, image_path: str) -> Estimate:
        data = self.transforms({"image": image_path})
        image = torch.as_tensor(data["image"]).float()
        with self._lock:  # one sampling at a time: the networks are shared by the strategy, scoring and infer
            names, mtime, version = self.current()
            networks = [self._network(m) for m in self.members]
            probs = average_members([sample_probabilities(n, image, self.method, self.samples) for n in networks])
        probs_np = probs.numpy()
        size = tuple(int(s) for s in data[ORIGINAL_SIZE_KEY])
        return Estimate(probs_np, (size[0], size[1]), image_scores(probs_np), names, mtime, version)


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
        version = self.estimator.current()[2]
        return [i for i in image_ids if datastore.get_image_info(i).get(VERSION_KEY) != version]

    def score(self, datastore: Datastore, image_ids: Sequence[str]) -> dict[str, float]:
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
