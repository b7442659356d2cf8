"""Training requests a clinic will send by mistake: none labelled, one labelled, twice at once, infer meanwhile."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from apps.research.local_server import running_server
from tests.support.paths import REPO
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server

CONF = {"models": "unet", "train_epochs": "1", "threads": "1"}
ENV = NO_SCORING


def first_day(root: Path) -> Path:
    """sample-data without its labels in ``root/studies``: the clinic's first day."""
    shutil.copytree(REPO / "sample-data", root / "studies", ignore=shutil.ignore_patterns("labels"))
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return first_day(tmp_path_factory.mktemp("training_requests"))


@pytest.fixture(scope="module")
def url(workdir: Path) -> Iterator[str]:
    with running_server(workdir, CONF, reuse=True, env=ENV) as base:
        yield base


def finished(url: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{url}/train/", params={"check_if_running": "false"}, timeout=30).json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(1)


def label_png(workdir: Path, image: str) -> bytes:
    with Image.open(next((workdir / "studies").glob(f"{image}.*"))) as img:
        mask = np.zeros((img.height, img.width), np.uint8)
    mask[100:250, 150:350] = 1
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_training_with_no_label_fails_clearly_and_publishes_nothing(tmp_path: Path) -> None:
    """On a server of its own: another test of this module saves a label."""
    with running_server(first_day(tmp_path), CONF, reuse=True, env=ENV) as url:
        check_no_label_training(url, tmp_path)


def check_no_label_training(url: str, workdir: Path) -> None:
    assert httpx.post(f"{url}/train/unet", json={}, timeout=60).status_code == 200  # accepted: training is async
    status = finished(url)
    assert status["status"] != "DONE"
    assert "no final labels to train on" in "\n".join(status.get("details", []))
    assert httpx.get(f"{url}/info/", timeout=30).status_code == 200
    assert not (workdir / "models" / "unet.pt").exists()


def test_one_label_trains_a_second_request_is_refused_and_infer_keeps_working(url: str, workdir: Path) -> None:
    files = {"label": ("l.png", label_png(workdir, "lesion_002"), "image/png")}
    saved = httpx.put(f"{url}/datastore/label", params={"image": "lesion_002", "tag": "final"}, files=files)
    assert saved.status_code == 200, saved.text
    assert httpx.post(f"{url}/train/unet", json={"max_epochs": 2}, timeout=60).status_code == 200
    second = httpx.post(f"{url}/train/unet", json={"max_epochs": 2}, timeout=60)
    assert second.status_code == 429, second.text  # never two trainings at once
    during = httpx.post(f"{url}/infer/unet", params={"image": "lesion_005", "output": "json"}, timeout=120)
    assert during.status_code == 200 and during.json()["image_size"] == [384, 512]
    status = finished(url)
    details = "\n".join(status.get("details", []))
    assert status["status"] == "DONE", details[-3000:]
    assert "validating on the training images" in details and "epoch 2/2" in details
    decision = httpx.get(f"{url}/info/", timeout=30).json()["train_stats"]["unet"]["last_decision"]
    assert decision in ("published", "kept_aside")
