"""The train task of the trainable models: fine-tune the served model on the datastore's final labels.

MONAI Label runs ``__call__`` in a subprocess and shows its output lines as the train status, so each epoch is
printed there; ``stats()`` serves the last run's per-epoch history from disk (``train_stats_<model>.json``).
The run is the one training loop (:func:`lesion_app.core.training.loop.fit`, as ``lesion-train`` runs it) on
the same split of the same labels (:func:`lesion_app.core.data.split` by image id); the best epoch goes to a
candidate file, and the gate (:func:`lesion_app.core.training.gate.decide`) publishes it only if it validates
no worse than the served model on the same split, so an unlucky fine-tune, scheduled or not, never makes the
served segmentation worse. A rejected candidate is kept aside in ``<model_dir>/rejected/``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, DataLoader
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask
from torch import nn

from lesion_app.core.checkpoint import network_from, network_spec, read_checkpoint
from lesion_app.core.clicks import training_options
from lesion_app.core.data import split
from lesion_app.core.networks import build_network
from lesion_app.core.training.distributed import resolve_device
from lesion_app.core.training.gate import KEPT_ASIDE, NOT_TRAINED, PUBLISHED, decide
from lesion_app.core.training.loop import EpochStats, FitConfig, Hooks, TrainingRun, fit, validate
from lesion_app.core.transforms import val_transforms
from lesion_app.io.files import atomic_write
from lesion_app.io.layout import image_id
from lesion_app.lib.settings import LesionSettings
from lesion_app.lib.trainers import run_lock
from lesion_app.server.checks import as_number

logger = logging.getLogger(__name__)

#: Below this many labelled images there is nothing to hold out: validate on the training images.
MIN_LABELS_FOR_SPLIT = 5
#: Keys of the last run's gate decision, kept in the stats while the next run is under way.
DECISION_KEYS = ("last_decision", "baseline_iou", "new_iou", "decided_at", "kept_aside", "decision")
#: States a run writes while it is under way; a run whose process is gone in one of them has died.
UNDER_WAY = ("STARTING", "RUNNING")


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts)."""
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


def decision_in_words(decision: str, new_iou: float | None, baseline_iou: float | None, labels: int) -> str:
    """What the gate decided and why, with both IoUs, for the train status (``kept_aside`` read as "it did
    nothing" to a first user)."""
    if decision == NOT_TRAINED:
        return "not trained: no epoch finished, the served model stays"
    new = f"{new_iou:.4f}"
    if baseline_iou is None:
        return f"published: trained from scratch on {labels} labels (validation IoU {new}); it now serves"
    base = f"{baseline_iou:.4f}"
    if decision == PUBLISHED:
        return (
            f"published: the new model's validation IoU {new} is at least the served model's {base} on the same "
            f"split of {labels} labels; the new model now serves"
        )
    return (
        f"kept aside: the new model's validation IoU {new} is below the served model's {base} on the same split of "
        f"{labels} labels, so the served model stays (the no-regression gate; the candidate is kept in rejected/). "
        "More labels, or more epochs (max_epochs), give the next training a better chance"
    )


def labelled_items(datastore: Datastore) -> list[dict[str, str]]:
    """The datastore's final labels as training items ``{"id", "image", "label"}``, the id being the image id
    (the file name without its extension), as ``lesion-train`` names them."""
    return [{"id": image_id(d["image"]), "image": d["image"], "label": d["label"]} for d in datastore.datalist()]


def invalid_labels(datastore: Datastore) -> dict[str, str]:
    """The final labels the datastore leaves out of training (failing the upload checks), by image id, and why."""
    listed = getattr(datastore, "invalid_labels", None)
    return listed() if callable(listed) else {}


def train_val_split(items: list[dict[str, str]], val_fraction: float) -> tuple[list, list]:
    """The run's split; with fewer than :data:`MIN_LABELS_FOR_SPLIT` labels every image trains and validates."""
    if len(items) < MIN_LABELS_FOR_SPLIT:
        logger.warning(f"only {len(items)} labelled images: validating on the training images")
        return items, items
    return split(items, val_fraction)


#: The options a training request may set: their type, the values allowed, and how the error message says so.
TRAIN_OPTIONS: dict[str, tuple[type, Callable[[float], bool], str]] = {
    "max_epochs": (int, lambda x: 1 <= x <= 100_000, "a whole number from 1 to 100000"),
    "max_minutes": (float, lambda x: 0 <= x <= 7 * 24 * 60, "a number of minutes from 0 (no limit) to 10080"),
    "batch_size": (int, lambda x: 1 <= x <= 1024, "a whole number from 1 to 1024"),
    "lr": (float, lambda x: 0 < x <= 10, "a number above 0, at most 10"),
    "val_fraction": (float, lambda x: 0 < x < 1, "a number between 0 and 1"),
}


def train_options(defaults: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A training run's options: ``defaults`` (the trainer's :meth:`SegmentationTrain.config`) overridden by what the
    request sets (numbers or numeric strings), each as int or float.

    Raises:
        ValueError: naming the option, for a value :data:`TRAIN_OPTIONS` does not allow.
    """
    options = {**defaults, **{name: request[name] for name in TRAIN_OPTIONS if name in request}}
    for name, (kind, allowed, description) in TRAIN_OPTIONS.items():
        if name not in options:
            continue
        value = options[name]
        number = as_number(value)
        if not allowed(number) or (kind is int and number != int(number)):
            raise ValueError(f"{name} must be {description}, got {value!r}")
        options[name] = kind(number)
    return options


@dataclass
class StartingPoint:
    """The model a run fine-tunes: its file (None: from scratch), the network it describes, its spec and meta."""

    path: str | None
    network: nn.Module
    spec: dict[str, Any]
    meta: dict[str, Any]

    def options(self) -> dict[str, Any]:
        """The run's inputs, validation and kept meta for this kind of model (a click model's, or none)."""
        return training_options(self.meta)


class SegmentationTrain(TrainTask):
    """Fine-tunes the served model of ``name`` (the newest published file, else the shipped weights), rebuilt
    from the architecture its file describes, on every final label; then the gate decides."""

    def __init__(self, name: str, settings: LesionSettings, description: str, arch: str | None = None) -> None:
        super().__init__(description)
        self.name = name
        self.arch = arch or name
        self.settings = settings
        #: set by the app's retrain scheduler (server process only) to add the schedule to ``stats()``
        self.schedule_status: Callable[[], dict[str, Any]] | None = None

    # -- where things are ----------------------------------------------------------------------------------

    @property
    def stats_path(self) -> Path:
        """The last run's stats (``/info``'s ``train_stats``)."""
        return Path(self.settings.model_dir) / f"train_stats_{self.name}.json"

    @property
    def lock_path(self) -> Path:
        """The lock a run of this model holds while it runs (:mod:`lesion_app.lib.trainers.run_lock`)."""
        return run_lock.lock_path(self.settings.model_dir, self.name)

    def running_run(self) -> dict[str, Any] | None:
        """The run of this model under way in any process (its pid and run id), or None."""
        return run_lock.holder(self.lock_path)

    def stop_leftover(self) -> None:
        """At a server's start: a run still holding the lock was left by a server that ended; it is stopped, and
        its stats say so (the dead run could no longer write them)."""
        run = run_lock.stop_leftover(self.lock_path)
        if run is None:
            return
        stats = self.read_stats()
        if stats.get("run") == run.get("run") and stats.get("state") in UNDER_WAY:
            reason = f"stopped at the server's start: left running (pid {run.get('pid')}) by a server that ended"
            self._write_stats({**stats, "state": "STOPPED", "error": reason})

    @property
    def candidate_path(self) -> Path:
        """Where the run writes its best epoch before the gate decides."""
        return Path(self.settings.model_dir) / f".candidate_{self.name}.pt"

    def rejected_path(self, when: datetime) -> Path:
        """Where a candidate the gate refused is kept, named by the time of the decision."""
        return Path(self.settings.model_dir) / "rejected" / f"{self.name}_{when:%Y%m%d-%H%M%S}.pt"

    def config(self) -> dict[str, Any]:
        """The options a request may override (``POST /train/<model>`` with ``{"max_epochs": 5}``)."""
        s = self.settings
        return {
            "max_epochs": s.train_epochs,
            "max_minutes": s.train_minutes,
            "batch_size": s.train_batch_size,
            "lr": s.train_lr,
            "val_fraction": s.val_fraction,
        }

    # -- the stats file ------------------------------------------------------------------------------------

    def read_stats(self) -> dict[str, Any]:
        """The last run's stats as written ({} before any run)."""
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

    # -- the run -------------------------------------------------------------------------------------------

    def starting_point(self) -> StartingPoint:
        """The served model (published, else shipped) as a network to fine-tune, or a fresh one."""
        for path in (self.settings.published_path(self.name), self.settings.pretrained_path(self.name)):
            if os.path.exists(path):
                checkpoint = read_checkpoint(path)
                return StartingPoint(path, network_from(checkpoint), checkpoint["network"], checkpoint.get("meta", {}))
        return StartingPoint(None, build_network(self.arch), network_spec(self.arch), {})

    def fit_config(self, conf: dict[str, Any], start: StartingPoint) -> FitConfig:
        """The loop's configuration from this run's options; warm-up only when training from scratch."""
        return FitConfig(
            max_epochs=conf["max_epochs"],
            batch_size=conf["batch_size"],
            lr=conf["lr"],
            max_minutes=conf["max_minutes"] or None,
            spatial_size=self.settings.spatial,
            warmup_epochs=0 if start.path else 1,
        )

    def baseline_iou(self, start: StartingPoint, val_items: list[dict[str, str]], cfg: FitConfig) -> float:
        """The served model's IoU on this run's validation split, scored as the run scores its epochs: the bar the
        new model must not fall below."""
        dataset = CacheDataset(val_items, val_transforms(cfg.spatial_size), progress=False)
        score = start.options().get("validate", validate)
        loader = DataLoader(dataset, batch_size=cfg.batch_size)
        return float(score(start.network, loader, resolve_device(cfg.device))["iou"])

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """One run, holding the model's lock throughout: a second run of the model (another server's, one left by
        a server that ended) is refused, and only the lock's holder writes the stats, so a run writes only its
        own."""
        started_at = time.time()
        run = {"pid": os.getpid(), "run": f"{os.getpid()}-{started_at:.6f}", "started_at": started_at}
        lock = run_lock.RunLock(self.lock_path)
        if not lock.acquire(run):
            other = run_lock.holder(self.lock_path) or {}
            raise MONAILabelException(
                MONAILabelError.APP_ERROR, f"a training of {self.name} is already running (pid {other.get('pid')})"
            )
        try:
            previous = {k: v for k, v in self.read_stats().items() if k in DECISION_KEYS}
            common = {"model": self.name, **run, **previous}
            # written before reading the labels, so the scheduler counts labels from here on as new
            self._write_stats({**common, "state": "STARTING"})
            try:
                return self._train(request, datastore, common)
            except BaseException as e:
                error = f"{type(e).__name__}: {e}"
                self._write_stats({**self.read_stats(), **common, "state": "FAILED", "error": error})
                raise
        finally:
            lock.release()

    def _train(self, request: dict[str, Any], datastore: Datastore, common: dict[str, Any]) -> dict[str, Any]:
        conf = train_options(self.config(), request)
        items = labelled_items(datastore)
        left_out = invalid_labels(datastore)
        for left, reason in left_out.items():
            print(f"left out {left}: {reason}", flush=True)
        if not items:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "no final labels to train on: save a label first")
        train_items, val_items = train_val_split(items, conf["val_fraction"])
        start = self.starting_point()
        cfg = self.fit_config(conf, start)
        print(f"training {self.name} from {start.path or 'scratch'}: {len(train_items)} train, {len(val_items)} val")
        baseline = self.baseline_iou(start, val_items, cfg) if start.path else None
        print(f"served model {Path(start.path).name if start.path else None}: val_iou {baseline}", flush=True)
        common = {**common, "labels": len(items), "left_out": left_out}
        history = self._fit(start, train_items, val_items, cfg, baseline, common)
        best = max(history, key=lambda h: h["val"]["iou"]) if history else None
        new_iou = best["val"]["iou"] if best else None
        decision = decide(new_iou, baseline) if self.candidate_path.exists() else NOT_TRAINED
        now = datetime.now()
        published, kept_aside = self._apply(decision, now)
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
            "decision": decision_in_words(decision, new_iou, baseline, len(items)),
        }
        self._write_stats(result)
        message = f"decision {self.name}: {result['decision']}"
        logger.info(message)
        print(f"done: best val IoU {new_iou} at epoch {result['best_epoch']}; {message}", flush=True)
        return result

    def _fit(
        self,
        start: StartingPoint,
        train_items: list[dict[str, str]],
        val_items: list[dict[str, str]],
        cfg: FitConfig,
        baseline: float | None,
        common: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Runs the loop into the candidate file, writing the stats after every epoch; the history as dicts."""
        history: list[dict[str, Any]] = []

        def report(stats: EpochStats) -> None:
            print(stats.line(), flush=True)  # its " *": the best epoch so far, written to the candidate
            entry = asdict(stats)
            entry["candidate"] = entry.pop("published")  # only the gate publishes
            history.append(entry)
            self._write_stats({**common, "state": "RUNNING", "history": history, "best_iou": stats.best_iou})

        self.candidate_path.unlink(missing_ok=True)
        meta = {
            "trained_by": "lesion_app",
            "start": Path(start.path).name if start.path else None,
            "labels": common["labels"],
            "baseline_iou": baseline,
        }
        options = start.options()
        meta.update(options.pop("meta", {}))
        run = TrainingRun(start.network, start.spec, train_items, val_items, self.candidate_path, meta=meta, **options)
        fit(run, cfg, Hooks(on_epoch=report))
        return history

    def _apply(self, decision: str, now: datetime) -> tuple[str | None, str | None]:
        """Moves the candidate where the decision says: (published path, kept-aside path)."""
        if decision == PUBLISHED:
            published = self.settings.published_path(self.name)
            os.replace(self.candidate_path, published)  # same folder: atomic; the new mtime makes MONAI Label reload
            return published, None
        if decision == KEPT_ASIDE:
            target = self.rejected_path(now)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.candidate_path, target)
            return None, str(target)
        return None, None
