"""The no-regression gate: a trained model replaces the served one only if it validates no worse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lesion_app.core.checkpoint import read_checkpoint
from lesion_app.core.training.gate import decide
from lesion_app.lib.settings import LesionSettings
from lesion_app.lib.trainers.segmentation import SegmentationTrain
from lesion_app.server.datastore import local_datastore
from tests.support.paths import MODEL_DIR


@pytest.mark.parametrize(
    ("new", "baseline", "decision"),
    [
        (0.80, 0.79, "published"),
        (0.80, 0.80, "published"),  # not worse is good enough
        (0.79, 0.80, "kept_aside"),
        (0.10, None, "published"),  # trained from scratch: nothing served to compare with
        (None, 0.80, "not_trained"),
    ],
)
def test_decide(new: float | None, baseline: float | None, decision: str) -> None:
    assert decide(new, baseline) == decision


def trainer(tmp_path: Path, sample_data: Path, **conf: str) -> tuple[SegmentationTrain, object]:
    shutil.copytree(sample_data, tmp_path / "studies")
    defaults = {"model_dir": str(tmp_path / "models"), "pretrained_dir": str(MODEL_DIR)}
    settings = LesionSettings.from_conf({**defaults, "train_epochs": "1", **conf}, tmp_path)
    return SegmentationTrain("unet", settings, ""), local_datastore(str(tmp_path / "studies"), settings)


def test_a_regression_is_kept_aside_and_the_served_model_stays(tmp_path: Path, sample_data: Path) -> None:
    """A learning rate of 10 wrecks the shipped model in one epoch: it must not be published."""
    task, datastore = trainer(tmp_path, sample_data, train_lr="10")
    served = tmp_path / "models" / "unet.pt"
    result = task({}, datastore)
    assert result["last_decision"] == "kept_aside"
    assert result["baseline_iou"] > 0.5 and result["new_iou"] < result["baseline_iou"]
    assert not served.exists(), "the shipped model stays served"
    rejected = Path(result["kept_aside"])
    assert rejected.parent == tmp_path / "models" / "rejected" and rejected.name.startswith("unet_")
    assert read_checkpoint(rejected)["meta"]["baseline_iou"] == result["baseline_iou"]
    assert not task.candidate_path.exists()
    stats = task.stats()
    assert stats["last_decision"] == "kept_aside" and stats["baseline_iou"] == result["baseline_iou"]
    assert stats["started_at"] > 0


def test_from_scratch_publishes(tmp_path: Path, sample_data: Path) -> None:
    task, datastore = trainer(tmp_path, sample_data, pretrained_dir=str(tmp_path / "none"), spatial_size="64")
    result = task({}, datastore)
    assert result["last_decision"] == "published" and result["baseline_iou"] is None
    meta = read_checkpoint(tmp_path / "models" / "unet.pt")["meta"]
    assert meta["val"]["iou"] == result["new_iou"] and meta["epoch"] == 1


def test_a_run_that_raises_is_failed_with_its_error(tmp_path: Path, sample_data: Path) -> None:
    task, datastore = trainer(tmp_path, sample_data, train_epochs="1")
    task({}, datastore)
    decided = task.stats()["last_decision"]
    with pytest.raises(FileNotFoundError):
        task({}, BrokenDatastore())
    stats = task.stats()
    assert stats["state"] == "FAILED" and "FileNotFoundError: the studies folder is gone" in stats["error"]
    assert stats["last_decision"] == decided  # the previous run's decision is still shown


def test_a_run_whose_process_died_reads_as_failed(tmp_path: Path, sample_data: Path) -> None:
    task, _ = trainer(tmp_path, sample_data)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for state, pid, shown in (
        ("RUNNING", dead.pid, "FAILED"),
        ("STARTING", dead.pid, "FAILED"),
        ("RUNNING", os.getpid(), "RUNNING"),  # alive: still under way
        ("DONE", dead.pid, "DONE"),  # finished runs stay as they ended
    ):
        task._write_stats({"model": "unet", "state": state, "pid": pid, "started_at": 1.0})
        stats = task.stats()
        assert stats["state"] == shown
        assert ("error" in stats) == (shown == "FAILED")
    assert task.read_stats()["state"] == "DONE"  # reading never rewrites the file


class BrokenDatastore:
    def datalist(self) -> list:
        raise FileNotFoundError("the studies folder is gone")
