"""Scheduled retraining through the real server: two saved labels start a training by themselves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from PIL import Image

from apps.research.local_server import running_server
from lesion_app.core.checkpoint import read_checkpoint
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server

CONF = {
    "models": "unet",
    "retrain_after_labels": "2",
    "retrain_poll_seconds": "1",
    "train_epochs": "1",
    "train_batch_size": "4",
    "threads": "2",
}


def save_label(client: MONAILabelClient, workdir: Path, image_id: str) -> None:
    """A 0/1 PNG of the image's size with a box in the middle, saved as a final label over HTTP."""
    with Image.open(next((workdir / "studies").glob(f"{image_id}.*"))) as img:
        width, height = img.size
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    path = workdir / f"{image_id}_label.png"
    Image.fromarray(mask).save(path)
    client.save_label(image_id, str(path), tag="final")


def train_tasks(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/train/", params={"all": True}, timeout=10)
    return response.json() if response.status_code == 200 else []


def test_two_new_labels_start_a_gated_training(tmp_path: Path) -> None:
    with running_server(tmp_path, CONF, env=NO_SCORING) as url:
        client = MONAILabelClient(url, tmpdir=str(tmp_path / "client"))
        stats = client.info()["train_stats"]["unet"]
        assert stats["labels_since_last_training"] == 0 and stats["next_due"] == "after 2 more labels"

        save_label(client, tmp_path, "lesion_005")
        time.sleep(3)  # three polls: one label is not enough
        assert train_tasks(url) == []
        assert client.info()["train_stats"]["unet"]["labels_since_last_training"] == 1

        save_label(client, tmp_path, "lesion_007")
        deadline = time.monotonic() + 300
        while not (tasks := train_tasks(url)) or tasks[-1]["status"] in ("SUBMITTED", "RUNNING"):
            assert time.monotonic() < deadline, "the scheduled training did not start and finish in 5 minutes"
            time.sleep(1)
        task = tasks[-1]
        assert task["status"] == "DONE", "\n".join(task.get("details", []))
        assert task["request"]["model"] == "unet" and "2 new final labels" in task["request"]["trigger"]

        time.sleep(3)  # no second training: the count starts again from this training's start
        assert len(train_tasks(url)) == 1
        stats = client.info()["train_stats"]["unet"]

    assert stats["state"] == "DONE" and len(stats["history"]) == 1 and stats["labels"] == 6
    assert stats["labels_since_last_training"] == 0 and stats["next_due"] == "after 2 more labels"
    baseline, new = stats["baseline_iou"], stats["new_iou"]
    assert 0.0 <= baseline <= 1.0 and 0.0 <= new <= 1.0
    served = tmp_path / "models" / "unet.pt"
    rejected = list((tmp_path / "models" / "rejected").glob("unet_*.pt"))
    if stats["last_decision"] == "published":
        assert new >= baseline and rejected == []
        meta = read_checkpoint(served)["meta"]
        assert meta["val"]["iou"] == new and meta["val"]["iou"] >= meta["baseline_iou"] == baseline
    else:
        assert stats["last_decision"] == "kept_aside" and new < baseline
        assert not served.exists(), "a worse model must not replace the served (shipped) one"
        assert [str(p) for p in rejected] == [stats["kept_aside"]]
