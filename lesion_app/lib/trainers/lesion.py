"""The train task both models share: fine-tune the served model on the datastore's final labels."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask

from lesion_app.lib.data import split
from lesion_app.lib.engine import EpochStats, FitConfig, fit
from lesion_app.lib.models import atomic_write, build_network, read_checkpoint
from lesion_app.lib.settings import LesionSettings

logger = logging.getLogger(__name__)

#: Below this many labelled images there is nothing to hold out: validate on the training images.
MIN_LABELS_FOR_SPLIT = 5


class LesionTrainTask(TrainTask):
    """Trains with :func:`lesion_app.lib.engine.fit`, the same loop ``apps/train.py`` runs.

    MONAI Label runs ``__call__`` in a subprocess and shows its output lines as the train status, so
    each epoch is printed there; ``stats()`` serves the last run's per-epoch history from disk.
    """

    arch = "unet"

    def __init__(self, name: str, settings: LesionSettings, description: str) -> None:
        super().__init__(description)
        self.name = name
        self.settings = settings

    @property
    def stats_path(self) -> Path:
        return Path(self.settings.model_dir) / f"train_stats_{self.name}.json"

    def config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_epochs": s.train_epochs,
            "max_minutes": s.train_minutes,
            "batch_size": s.train_batch_size,
            "lr": s.train_lr,
            "val_fraction": s.val_fraction,
        }

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def _write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write(self.stats_path, lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=1)))

    def _start_weights(self) -> str | None:
        for path in (self.settings.published_path(self.name), self.settings.pretrained_path(self.name)):
            if os.path.exists(path):
                return path
        return None

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        conf = {**self.config(), **{k: v for k, v in request.items() if k in self.config()}}
        items = [{"image": d["image"], "label": d["label"], "id": Path(d["image"]).name} for d in datastore.datalist()]
        if not items:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "no final labels to train on: save a label first")
        if len(items) < MIN_LABELS_FOR_SPLIT:
            train_items, val_items = items, items
            logger.warning(f"only {len(items)} labelled images: validating on the training images")
        else:
            train_items, val_items = split(items, float(conf["val_fraction"]))
        start = self._start_weights()
        checkpoint = read_checkpoint(start) if start else {}
        # a model file rebuilds its own architecture, so fine-tuning keeps e.g. attention=False variants
        spec = checkpoint.get("network", {"arch": self.arch, "kwargs": {}})
        network = build_network(spec["arch"], **spec["kwargs"])
        if checkpoint:
            network.load_state_dict(checkpoint["model"])
        cfg = FitConfig(
            max_epochs=int(conf["max_epochs"]),
            batch_size=int(conf["batch_size"]),
            lr=float(conf["lr"]),
            max_minutes=float(conf["max_minutes"]) or None,
            roi_size=self.settings.roi,
            warmup_epochs=0 if start else 1,
        )
        print(
            f"training {self.name} from {start or 'scratch'}: {len(train_items)} train, {len(val_items)} val",
            flush=True,
        )
        history: list[dict[str, Any]] = []

        def report(stats: EpochStats) -> None:
            print(stats.line(), flush=True)
            history.append(asdict(stats))
            self._write_stats({"model": self.name, "state": "RUNNING", "history": history, "best_iou": stats.best_iou})

        out = self.settings.published_path(self.name)
        meta = {"trained_by": "lesion_app", "start": Path(start).name if start else None, "labels": len(items)}
        fit(network, spec["arch"], spec["kwargs"], train_items, val_items, out, cfg, report, meta=meta)
        best = max(history, key=lambda h: h["val"]["iou"]) if history else None
        result = {
            "model": self.name,
            "state": "DONE",
            "history": history,
            "best_iou": best["val"]["iou"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "published": out,
        }
        self._write_stats(result)
        print(f"done: best val IoU {result['best_iou']} at epoch {result['best_epoch']}; published {out}", flush=True)
        return result
