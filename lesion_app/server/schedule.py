"""Scheduled retraining: train again after N new final labels and/or at a daily local time.

MONAI Label 0.8.5 has no such trigger of its own (``on_save_label`` only logs, ``auto_update_scoring``
re-runs scoring methods), so a small daemon thread started in ``on_init_complete`` polls the datastore.
It submits trainings through the same path as ``POST /train/<model>`` (``AsyncTask.run("train")``), so
they show in the train status, and only while no training is submitted or running: MONAI Label runs one
training process at a time and the scheduler never queues a second.

The decisions are pure functions of an injected clock (:func:`due_reason`, :func:`next_daily`,
:func:`next_due`), so they are tested without a server or real time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any, Protocol

from lesion_app.server import lifetime

logger = logging.getLogger(__name__)

#: Train task states in MONAI Label's task list that mean a training is queued or under way.
ACTIVE_STATES = ("SUBMITTED", "RUNNING")


def parse_daily_at(value: str) -> dtime | None:
    """``"HH:MM"`` (24-hour, local time) as a time of day; empty means off."""
    value = value.strip()
    if not value:
        return None
    return datetime.strptime(value, "%H:%M").time()


def last_daily(now: datetime, at: dtime) -> datetime:
    """The most recent daily ``at`` at or before ``now`` (yesterday's when today's is still to come)."""
    today = datetime.combine(now.date(), at)
    return today if today <= now else today - timedelta(days=1)


def next_daily(now: datetime, at: dtime) -> datetime:
    """The first daily ``at`` after ``now``: today's if still to come, else tomorrow's (across midnight)."""
    return last_daily(now, at) + timedelta(days=1)


@dataclass(frozen=True)
class ScheduleConfig:
    """When to retrain: after ``after_labels`` new final labels (0: never) and/or daily at ``daily_at``; the
    datastore is checked every ``poll_seconds``."""

    after_labels: int = 0
    daily_at: dtime | None = None
    poll_seconds: float = 10.0

    @property
    def enabled(self) -> bool:
        """Whether any trigger is set."""
        return self.after_labels > 0 or self.daily_at is not None


def due_reason(
    now: datetime,
    cfg: ScheduleConfig,
    new_labels: int,
    last_training: datetime | None,
    server_started: datetime,
    busy: bool,
) -> str | None:
    """Why a model should be trained now, or None.

    Never while a training is submitted or running. The daily time counts only if it passed after both the
    last training and the server's start (a time missed while the server was down does not fire at start-up),
    and only with at least one new label: retraining on unchanged data would spend CPU hours for nothing.
    """
    if busy:
        return None
    if cfg.after_labels > 0 and new_labels >= cfg.after_labels:
        return f"{new_labels} new final labels (retrain_after_labels {cfg.after_labels})"
    if cfg.daily_at is not None and new_labels > 0:
        occurrence = last_daily(now, cfg.daily_at)
        if occurrence >= server_started and (last_training is None or occurrence > last_training):
            return f"daily at {cfg.daily_at:%H:%M} with {new_labels} new final labels"
    return None


def next_due(now: datetime, cfg: ScheduleConfig, new_labels: int) -> dict[str, Any]:
    """What /info shows: how many more labels until the next training, and the next daily time (ISO, local)."""
    out: dict[str, Any] = {}
    if cfg.after_labels > 0:
        out["after_labels"] = max(0, cfg.after_labels - new_labels)
    if cfg.daily_at is not None:
        out["daily_at"] = next_daily(now, cfg.daily_at).astimezone().isoformat(timespec="minutes")
    parts = []
    if "after_labels" in out:
        parts.append(f"after {out['after_labels']} more labels" if out["after_labels"] else "now (labels)")
    if "daily_at" in out:
        parts.append(f"at {out['daily_at']}" + ("" if new_labels else " if a label arrives by then"))
    out["text"] = " or ".join(parts) if parts else "off"
    return out


class TrainerLike(Protocol):
    """What the scheduler needs of a train task: its last run's stats from disk (``started_at``, epoch seconds).

    ``read_stats``, not ``stats``: the latter adds the schedule's own status and would call back here.
    """

    def read_stats(self) -> dict[str, Any]: ...


def labels_newer_than(datalist: Sequence[Mapping[str, str]], since: float) -> int:
    """Final labels written after ``since``: new images labelled and corrections of labelled ones alike."""
    count = 0
    for item in datalist:
        try:
            if os.path.getmtime(item["label"]) > since:
                count += 1
        except OSError:
            continue
    return count


class RetrainScheduler:
    """Polls every ``cfg.poll_seconds`` and submits at most one training at a time.

    ``submit(model, reason)`` starts a training and returns whether MONAI Label accepted it; ``busy()``
    says whether any training is submitted or running; ``datalist()`` gives the final labels. The clock
    returns naive local time, and the label reference of a model is the later of its last training's
    start (from its stats, so manual trainings count too and it survives restarts) and its last submission.
    """

    def __init__(
        self,
        cfg: ScheduleConfig,
        trainers: Mapping[str, TrainerLike],
        datalist: Callable[[], Sequence[Mapping[str, str]]],
        submit: Callable[[str, str], bool],
        busy: Callable[[], bool],
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.cfg = cfg
        self.trainers = dict(trainers)
        self.datalist = datalist
        self.submit = submit
        self.busy = busy
        self.clock = clock
        self.server_started = clock()
        self._submitted: dict[str, datetime] = {}
        self._thread: threading.Thread | None = None

    def last_training(self, model: str) -> datetime | None:
        """The later of the model's last training start (its stats) and the scheduler's last submission."""
        stamps = []
        started_at = self.trainers[model].read_stats().get("started_at")
        if isinstance(started_at, (int, float)):
            stamps.append(datetime.fromtimestamp(started_at))
        if model in self._submitted:
            stamps.append(self._submitted[model])
        return max(stamps) if stamps else None

    def new_labels(self, model: str) -> int:
        """Final labels written since the model's last training (or since the server started)."""
        since = self.last_training(model) or self.server_started
        return labels_newer_than(self.datalist(), since.timestamp())

    def status(self, model: str) -> dict[str, Any]:
        """The schedule part of ``train_stats[model]`` in /info."""
        new = self.new_labels(model)
        last = self.last_training(model)
        due = next_due(self.clock(), self.cfg, new)
        return {
            "labels_since_last_training": new,
            "next_due": due["text"],
            "schedule": {
                **due,
                "retrain_after_labels": self.cfg.after_labels,
                "retrain_daily_at": f"{self.cfg.daily_at:%H:%M}" if self.cfg.daily_at else "",
                "last_training_start": last.astimezone().isoformat(timespec="seconds") if last else None,
            },
        }

    def poll_once(self) -> str | None:
        """Submits the first due model (in configured order); returns its name, or None (always while the server
        stops)."""
        if lifetime.stopping() or self.busy():
            return None
        now = self.clock()
        for model in self.trainers:
            new = self.new_labels(model)
            reason = due_reason(now, self.cfg, new, self.last_training(model), self.server_started, busy=False)
            if reason is None:
                continue
            # recorded first, so a refused or failed submission waits for new labels instead of retrying forever
            self._submitted[model] = now
            if self.submit(model, reason):
                logger.info(f"scheduled training of {model}: {reason}")
                return model
            logger.info(f"scheduled training of {model} refused (another training is running): {reason}")
            self._submitted.pop(model, None)
            return None
        return None

    def _loop(self) -> None:
        while True:
            time.sleep(self.cfg.poll_seconds)
            try:
                self.poll_once()
            except Exception:  # a bad poll must not end the thread: the next one may succeed
                logger.exception("retrain scheduler poll failed")

    def start(self) -> None:
        """Starts the polling thread (a daemon: it ends with the server); idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lesion-retrain", daemon=True)
            self._thread.start()
            logger.info(f"retrain scheduler started: {self.cfg} for {list(self.trainers)}")


def monailabel_busy() -> bool:
    """Whether MONAI Label has a training queued or running (its task list, not only live processes)."""
    from monailabel.utils.async_tasks.utils import processes, tasks

    return bool(processes("train")) or any(t.get("status") in ACTIVE_STATES for t in tasks("train"))


def monailabel_submit(model: str, reason: str) -> bool:
    """``POST /train/<model>`` without ``enqueue``: MONAI Label refuses it while another training runs."""
    from monailabel.utils.async_tasks.task import AsyncTask

    task, detail = AsyncTask.run("train", request={"model": model, "trigger": reason}, params={}, enqueue=False)
    if task is None:
        logger.info(f"train refused: {detail}")
    return task is not None


def start_scheduler(settings: Any, trainers: Mapping[str, Any], datastore: Any) -> RetrainScheduler | None:
    """The app's scheduler from its settings, started, with each scheduled trainer showing its status in /info.

    None when neither ``retrain_after_labels`` nor ``retrain_daily_at`` is set.
    """
    cfg = ScheduleConfig(
        after_labels=settings.retrain_after_labels,
        daily_at=parse_daily_at(settings.retrain_daily_at),
        poll_seconds=settings.retrain_poll_seconds,
    )
    if not cfg.enabled:
        return None
    names = list(settings.retrain_models) or list(trainers)
    missing = [m for m in names if m not in trainers]
    if missing:
        logger.warning(f"retrain_models {missing} are not served (--conf models): not scheduled")
    scheduled = {m: trainers[m] for m in names if m in trainers}
    if not scheduled:
        return None
    scheduler = RetrainScheduler(cfg, scheduled, datastore.datalist, monailabel_submit, monailabel_busy)
    for name, trainer in scheduled.items():
        trainer.schedule_status = lambda name=name: scheduler.status(name)
    scheduler.start()
    return scheduler
