"""The retrain schedule's decisions with an injected clock: no server, no real time, no training."""

from __future__ import annotations

import os
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from lesion_app.lib.settings import LesionSettings
from lesion_app.server.schedule import (
    RetrainScheduler,
    ScheduleConfig,
    due_reason,
    last_daily,
    next_daily,
    next_due,
    parse_daily_at,
)

START = datetime(2024, 3, 10, 9, 0)


def test_parse_daily_at() -> None:
    assert parse_daily_at("") is None
    assert parse_daily_at(" 02:30 ") == time(2, 30)
    with pytest.raises(ValueError):
        parse_daily_at("25:00")


@pytest.mark.parametrize(
    ("now", "at", "expected"),
    [
        (datetime(2024, 3, 10, 23, 30), time(0, 15), datetime(2024, 3, 11, 0, 15)),  # across midnight
        (datetime(2024, 3, 11, 0, 10), time(0, 15), datetime(2024, 3, 11, 0, 15)),  # later the same day
        (datetime(2024, 3, 11, 0, 15), time(0, 15), datetime(2024, 3, 12, 0, 15)),  # exactly at it: the next one
        (datetime(2024, 12, 31, 23, 59), time(23, 0), datetime(2025, 1, 1, 23, 0)),  # across the year
    ],
)
def test_next_daily(now: datetime, at: time, expected: datetime) -> None:
    assert next_daily(now, at) == expected
    assert last_daily(now, at) == expected - timedelta(days=1)


def test_due_after_n_labels_and_never_while_busy() -> None:
    cfg = ScheduleConfig(after_labels=3)
    assert due_reason(START, cfg, 2, None, START, busy=False) is None
    assert "3 new final labels" in due_reason(START, cfg, 3, None, START, busy=False)
    assert due_reason(START, cfg, 5, None, START, busy=True) is None
    assert due_reason(START, ScheduleConfig(), 100, None, START, busy=False) is None  # off by default


def test_daily_fires_once_after_the_time_with_new_labels() -> None:
    cfg = ScheduleConfig(daily_at=time(2, 0))
    started = datetime(2024, 3, 10, 20, 0)
    before, after = datetime(2024, 3, 11, 1, 59), datetime(2024, 3, 11, 2, 0, 30)
    assert due_reason(before, cfg, 1, None, started, busy=False) is None
    assert "daily at 02:00" in due_reason(after, cfg, 1, None, started, busy=False)
    assert due_reason(after, cfg, 0, None, started, busy=False) is None  # nothing new to learn from
    assert due_reason(after, cfg, 1, datetime(2024, 3, 11, 2, 0, 5), started, busy=False) is None  # trained since
    # a time missed while the server was down does not fire at start-up
    assert due_reason(after, cfg, 1, None, datetime(2024, 3, 11, 2, 0, 10), busy=False) is None


def test_next_due_text() -> None:
    both = next_due(datetime(2024, 3, 10, 23, 0), ScheduleConfig(after_labels=5, daily_at=time(1, 0)), 2)
    assert both["after_labels"] == 3
    assert both["daily_at"].startswith("2024-03-11T01:00")
    assert both["text"].startswith("after 3 more labels or at 2024-03-11T01:00")
    assert next_due(START, ScheduleConfig(), 0)["text"] == "off"


class FakeTrainer:
    def __init__(self) -> None:
        self.started_at: float | None = None

    def read_stats(self) -> dict[str, Any]:
        return {} if self.started_at is None else {"started_at": self.started_at}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def write_label(folder: Path, name: str, when: datetime) -> dict[str, str]:
    path = folder / f"{name}.png"
    path.write_bytes(b"x")
    os.utime(path, (when.timestamp(), when.timestamp()))
    return {"image": str(path), "label": str(path)}


def test_scheduler_submits_once_per_n_labels_and_not_while_a_training_runs(tmp_path: Path) -> None:
    clock = Clock(START)
    labels = [write_label(tmp_path, "old", START - timedelta(days=1))]  # there before the server: not new
    trainers = {"unet": FakeTrainer(), "deeplabv3": FakeTrainer()}
    submitted: list[str] = []
    busy = [False]

    def submit(model: str, reason: str) -> bool:
        submitted.append(model)
        busy[0] = True
        return True

    sched = RetrainScheduler(ScheduleConfig(after_labels=2), trainers, lambda: labels, submit, lambda: busy[0], clock)
    assert sched.poll_once() is None
    assert sched.status("unet")["next_due"] == "after 2 more labels"
    labels.append(write_label(tmp_path, "a", START + timedelta(minutes=1)))
    clock.now = START + timedelta(minutes=2)
    assert sched.poll_once() is None and sched.status("unet")["labels_since_last_training"] == 1
    labels.append(write_label(tmp_path, "b", START + timedelta(minutes=3)))
    clock.now = START + timedelta(minutes=4)
    assert sched.poll_once() == "unet"
    assert sched.poll_once() is None  # busy: deeplabv3 waits, nothing is queued
    trainers["unet"].started_at = (START + timedelta(minutes=4, seconds=5)).timestamp()  # the train task's stats
    busy[0] = False
    clock.now = START + timedelta(minutes=10)
    assert sched.status("unet")["labels_since_last_training"] == 0
    assert sched.poll_once() == "deeplabv3"  # its own count: still 2 new labels since the server started
    busy[0] = False
    assert sched.poll_once() is None
    assert submitted == ["unet", "deeplabv3"]


def test_a_refused_submission_is_retried_next_poll(tmp_path: Path) -> None:
    clock = Clock(START)
    labels = [write_label(tmp_path, n, START + timedelta(minutes=1)) for n in "ab"]
    answers = [False, True]
    sched = RetrainScheduler(
        ScheduleConfig(after_labels=2), {"unet": FakeTrainer()}, lambda: labels, lambda m, r: answers.pop(0),
        lambda: False, clock,
    )  # fmt: skip
    clock.now = START + timedelta(minutes=2)
    assert sched.poll_once() is None
    assert sched.poll_once() == "unet"


def test_settings_parse_and_check_the_schedule_options(tmp_path: Path) -> None:
    conf = {"retrain_after_labels": "3", "retrain_daily_at": "23:45", "retrain_models": "unet"}
    s = LesionSettings.from_conf({**conf, "retrain_poll_seconds": "1"}, tmp_path)
    assert (s.retrain_after_labels, s.retrain_daily_at, s.retrain_models, s.retrain_poll_seconds) == (
        3, "23:45", ("unet",), 1.0,
    )  # fmt: skip
    assert LesionSettings.from_conf({}, tmp_path).retrain_after_labels == 0
    for key, value in [("retrain_daily_at", "7pm"), ("retrain_models", "ensemble"), ("retrain_after_labels", "-1")]:
        with pytest.raises(ValueError, match=f"--conf {key}"):
            LesionSettings.from_conf({key: value}, tmp_path)
