"""The train task both models share: fine-tune the served model on the datastore's final labels."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, DataLoader
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask

from lesion_app.lib.data import split
from lesion_app.lib.engine import EpochStats, FitConfig, fit, resolve_device, validate
from lesion_app.lib.models import atomic_write, build_network, read_checkpoint
from lesion_app.lib.settings import LesionSettings
from lesion_app.lib.transforms import val_transforms

logger = logging.getLogger(__name__)

#: Below this many labelled images there is nothing to hold out: validate on the training images.
MIN_LABELS_FOR_SPLIT = 5

#: Keys of the last run's gate decision, kept in the stats while the next run is under way.
DECISION_KEYS = ("last_decision", "baseline_iou", "new_iou", "decided_at", "kept_aside")

#: States a run writes while it is under way; a run whose process is gone in one of them has died.
UNDER_WAY = ("STARTING", "RUNNING")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        pass
    return True


def with_dead_run_failed(stats: dict[str, Any]) -> dict[str, Any]:
    """The stats as a reader should see them: a run still marked under way whose training process has ended
    (killed, out of memory) is ``FAILED``, not ``RUNNING`` until the next run overwrites it."""
    pid = stats.get("pid")
    if stats.get("state") in UNDER_WAY and isinstance(pid, int) and not process_alive(pid):
        return {**stats, "state": "FAILED", "error": f"the training process (pid {pid}) ended without finishing"}
    return stats


def decide(new_iou: float | None, baseline_iou: float | None) -> str:
    """The no-regression gate: publish unless the new model validates worse than the served one.

    Both IoUs come from the same validation split of the same run; ``baseline_iou`` is None when there was
    no model to start from (training from scratch), and then anything trained is better than nothing.
    """
    if new_iou is None:
        return "not_trained"
    if baseline_iou is None or new_iou >= baseline_iou:
        return "published"
    return "kept_aside"


class LesionTrainTask(TrainTask):
    """Trains with :func:`lesion_app.lib.engine.fit`, the same loop ``apps/train.py`` runs.

    MONAI Label runs ``__call__`` in a subprocess and shows its output lines as the train status, so
    each epoch is printed there; ``stats()`` serves the last run's per-epoch history from disk.

    The best epoch replaces the served model only if it validates no worse than the served model on the
    same split (:func:`decide`); otherwise it is kept aside in ``<model_dir>/rejected/``, so an unlucky
    fine-tune, scheduled or not, never makes the served segmentation worse.
    """

    arch = "unet"

    def __init__(self, name: str, settings: LesionSettings, description: str) -> None:
        super().__init__(description)
        self.name = name
        self.settings = settings
        #: set by the app's retrain scheduler (server process only) to add the schedule to ``stats()``
        self.schedule_status: Callable[[], dict[str, Any]] | None = None

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

    @property
    def candidate_path(self) -> Path:
        return Path(self.settings.model_dir) / f".candidate_{self.name}.pt"

    def rejected_path(self, when: datetime) -> Path:
        return Path(self.settings.model_dir) / "rejected" / f"{self.name}_{when:%Y%m%d-%H%M%S}.pt"

    def read_stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def stats(self) -> dict[str, Any]:
        """The last run's stats from disk, plus the retrain schedule when the server runs one (for /info)."""
        stats = with_dead_run_failed(self.read_stats())
        if self.schedule_status is not None:
            try:
                stats.update(self.schedule_status())
            except Exception:  # /info must answer even if the datastore is mid-change
                logger.exception(f"schedule status of {self.name} failed")
        return stats

    def _write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write(self.stats_path, lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=1)))

    def _start_weights(self) -> str | None:
        for path in (self.settings.published_path(self.name), self.settings.pretrained_path(self.name)):
            if os.path.exists(path):
                return path
        return None

    def baseline_iou(self, network: Any, val_items: list[dict[str, str]], cfg: FitConfig) -> float:
        """The served model's IoU on this run's validation split: the bar the new model must not fall below."""
        dataset = CacheDataset(val_items, val_transforms(cfg.roi_size), progress=False)
        scores = validate(network, DataLoader(dataset, batch_size=cfg.batch_size), resolve_device(cfg.device))
        return float(scores["iou"])

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        started_at = time.time()
        previous = {k: v for k, v in self.read_stats().items() if k in DECISION_KEYS}
        common = {"model": self.name, "started_at": started_at, "pid": os.getpid(), **previous}
        # written before reading the labels, so the scheduler counts labels from here on as new
        self._write_stats({**common, "state": "STARTING"})
        try:
            return self._train(request, datastore, common)
        except BaseException as e:
            self._write_stats({**self.read_stats(), **common, "state": "FAILED", "error": f"{type(e).__name__}: {e}"})
            raise

    def _train(self, request: dict[str, Any], datastore: Datastore, common: dict[str, Any]) -> dict[str, Any]:
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
        baseline = self.baseline_iou(network, val_items, cfg) if checkpoint else None
        print(f"served model {Path(start).name if start else None}: val_iou {baseline}", flush=True)
        history: list[dict[str, Any]] = []
        common = {**common, "labels": len(items)}

        def report(stats: EpochStats) -> None:
            print(stats.line(), flush=True)  # its " *": the best epoch so far, written to the candidate
            entry = asdict(stats)
            entry["candidate"] = entry.pop("published")  # only the gate below publishes
            history.append(entry)
            self._write_stats({**common, "state": "RUNNING", "history": history, "best_iou": stats.best_iou})

        # the best epoch goes to a candidate file; the gate below decides whether it replaces the served model
        candidate = self.candidate_path
        candidate.unlink(missing_ok=True)
        meta = {
            "trained_by": "lesion_app",
            "start": Path(start).name if start else None,
            "labels": len(items),
            "baseline_iou": baseline,
        }
        fit(network, spec["arch"], spec["kwargs"], train_items, val_items, candidate, cfg, report, meta=meta)
        best = max(history, key=lambda h: h["val"]["iou"]) if history else None
        new_iou = best["val"]["iou"] if best else None
        decision = decide(new_iou, baseline) if candidate.exists() else "not_trained"
        now = datetime.now()
        published: str | None = None
        kept_aside: str | None = None
        if decision == "published":
            published = self.settings.published_path(self.name)
            os.replace(candidate, published)  # same folder: atomic, and the new mtime makes MONAI Label reload
        elif decision == "kept_aside":
            target = self.rejected_path(now)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(candidate, target)
            kept_aside = str(target)
        result = {
            **common,
            "state": "DONE",
            "history": history,
            "best_iou": new_iou,
            "best_epoch": best["epoch"] if best else None,
            "published": published,
            "last_decision": decision,
            "baseline_iou": baseline,
            "new_iou": new_iou,
            "decided_at": now.astimezone().isoformat(timespec="seconds"),
            "kept_aside": kept_aside,
        }
        self._write_stats(result)
        message = (
            f"decision {self.name}: {decision} (new val IoU {new_iou}, served model's {baseline} on the same split)"
        )
        logger.info(message)
        print(f"done: best val IoU {new_iou} at epoch {result['best_epoch']}; {message}", flush=True)
        return result
