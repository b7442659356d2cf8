"""Crashes of a real server, SIGKILLed with its whole process group (MONAI Label trains in a child process),
then restarted on the same workdir: what was good before the crash is still there and still served.

Every server here runs with ``--conf models unet`` and without the start-up uncertainty scoring, to keep the
test short on two cores. ``LESION_FAULT_SLEEP_BEFORE_RENAME`` (``lesion_app.io.files.atomic_write``) holds a
write between its temp file and its rename, so a kill lands exactly there.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from apps.research.local_server import Server, server_process
from lesion_app.core.checkpoint import load_model, read_checkpoint
from lesion_app.io.files import FAULT_MATCH_ENV, FAULT_SLEEP_ENV, atomic_write
from lesion_app.io.images import read_mask
from tests.support.files import folder_digest
from tests.support.paths import REPO, SAMPLE_DATA
from tests.support.servers import NO_SCORING
from tests.support.waiting import wait_for

pytestmark = pytest.mark.server

CONF = {"models": "unet", "threads": "1"}
ENV = NO_SCORING
SHIPPED = REPO / "lesion_app" / "model" / "pretrained_unet.pt"


def digests(folder: Path) -> dict[str, str]:
    """The files directly in ``folder``, leaving out the hidden temporary files an interrupted atomic write leaves
    behind (never promoted, harmless: see ``temp_files``)."""
    return folder_digest(folder, recursive=False, hidden=False)


def temp_files(workdir: Path) -> list[str]:
    """Leftovers of interrupted atomic writes (``.<name>.<random>.tmp``, the datastore's ``.part``)."""
    return sorted(str(p.relative_to(workdir)) for pattern in ("*.tmp", "*.part") for p in workdir.rglob(pattern))


def infer(server: Server, image: str = "lesion_006") -> dict[str, Any]:
    r = httpx.post(f"{server.url}/infer/unet", params={"image": image, "output": "json"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def png_bytes(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(png: bytes) -> np.ndarray:
    """A PNG label's lesion mask (the datastore stores every label as 0/1 PNG, so compare contents, not bytes)."""
    return np.asarray(Image.open(io.BytesIO(png))) > 0


def square_mask(workdir: Path, image: str) -> bytes:
    """A 0/1 PNG of the image's size with a square lesion (the datastore refuses labels of another size)."""
    with Image.open(next((workdir / "studies").glob(f"{image}.*"))) as img:
        mask = np.zeros((img.height, img.width), np.uint8)
    mask[50:150, 50:150] = 1
    return png_bytes(mask)


def put_label(url: str, image: str, data: bytes, timeout: float = 60) -> httpx.Response:
    files = {"label": (f"{image}.png", data, "image/png")}
    return httpx.put(f"{url}/datastore/label", params={"image": image, "tag": "final"}, files=files, timeout=timeout)


def publish_marked_model(path: Path, epoch: int) -> bytes:
    """The shipped weights written as a previously published ``unet.pt`` whose meta says ``epoch``."""
    checkpoint = read_checkpoint(SHIPPED)
    checkpoint["meta"] = {**checkpoint.get("meta", {}), "epoch": epoch}
    import torch

    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
    return path.read_bytes()


def train(server: Server, epochs: int) -> None:
    r = httpx.post(f"{server.url}/train/unet", json={"max_epochs": epochs}, timeout=60)
    assert r.status_code == 200, r.text


def train_details(server: Server) -> str:
    r = httpx.get(f"{server.url}/train/", params={"check_if_running": "false"}, timeout=60)
    return "\n".join(r.json().get("details", [])) if r.status_code == 200 else ""


def test_killed_mid_training_restarts_with_the_last_good_model_and_every_label(tmp_path: Path) -> None:
    models, final = tmp_path / "models", tmp_path / "studies" / "labels" / "final"
    models.mkdir()
    published = publish_marked_model(models / "unet.pt", epoch=77)  # the previous training's model
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        mask = np.zeros((384, 512), np.uint8)
        mask[120:260, 140:400] = 1
        assert put_label(server.url, "lesion_005", png_bytes(mask)).status_code == 200
        labels = digests(final)
        assert "lesion_005.png" in labels and len(labels) == 5
        train(server, epochs=30)
        wait_for(lambda: "epoch 1/30" in train_details(server), 120, "the first epoch line")
        server.kill()
    assert (models / "unet.pt").read_bytes() == published, "a killed training replaced the served model"
    assert digests(final) == labels, "a label saved before the kill changed"
    leftovers = temp_files(tmp_path)
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        result = infer(server)
        assert result["model_path"] == "unet.pt" and result["model_epoch"] == 77
        stats = httpx.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["unet"]
    assert digests(final) == labels
    # nothing cleans temp files at start; they are only ever renamed onto a target once complete
    assert temp_files(tmp_path) == leftovers
    # the dead run's file says RUNNING, but its training process is gone: /info shows it failed
    assert stats["state"] == "FAILED" and "ended without finishing" in stats["error"]


def test_killed_mid_model_publish_never_leaves_a_truncated_model(tmp_path: Path) -> None:
    """The best epoch is written as ``.candidate_unet.pt`` by ``atomic_write`` and then renamed onto ``unet.pt``;
    the kill lands after the candidate's temp file is complete and before its rename."""
    env = {**ENV, FAULT_SLEEP_ENV: "30", FAULT_MATCH_ENV: ".candidate_unet.pt"}
    models = tmp_path / "models"
    with server_process(tmp_path, CONF, env=env) as server:
        train(server, epochs=1)
        wait_for(lambda: f"holding {models / '.candidate_unet.pt'}" in server.log_text(), 120, "the held candidate")
        server.kill()
    assert not (models / "unet.pt").exists(), "nothing was published"
    assert not (models / ".candidate_unet.pt").exists()
    [tmp] = models.glob("*.candidate_unet.pt.*.tmp")
    load_model(tmp)  # complete (fsynced before the pause); it was simply never renamed
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        result = infer(server)
    assert result["model_path"] == "pretrained_unet.pt"
    load_model(REPO / "lesion_app" / "model" / result["model_path"])


def test_a_truncated_model_at_start_is_logged_and_the_shipped_one_serves(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "unet.pt").write_bytes(SHIPPED.read_bytes()[:1000])  # as after a crash mid-copy
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        result = infer(server)
        log = server.log_text()
    assert result["model_path"] == "pretrained_unet.pt"
    assert f"cannot load model {models / 'unet.pt'}" in log


def test_killed_at_random_times_while_saving_labels_every_label_is_old_or_new(tmp_path: Path) -> None:
    """A label is saved over and over, alternating two contents, and the server is killed at a random time:
    the label on disk always decodes and is one of the two (three kills)."""
    rng = np.random.default_rng(0)
    old, new = (png_bytes(rng.random((384, 512)) < p) for p in (0.3, 0.6))  # noisy: a large PNG
    final = tmp_path / "studies" / "labels" / "final"
    random.seed(1)
    for _ in range(3):
        with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
            assert put_label(server.url, "lesion_008", old).status_code == 200
            before = digests(final)
            stop = threading.Event()

            def save_repeatedly(url: str = server.url, stop: threading.Event = stop) -> None:
                i = 0
                while not stop.is_set():
                    try:
                        put_label(url, "lesion_008", new if i % 2 == 0 else old, timeout=5)
                    except httpx.HTTPError:
                        return  # the server is gone
                    i += 1

            saver = threading.Thread(target=save_repeatedly, daemon=True)
            saver.start()
            time.sleep(random.uniform(0.2, 1.5))
            server.kill()
            stop.set()
            saver.join(10)
        on_disk = read_mask(final / "lesion_008.png")  # decodes: a half-written PNG would raise
        assert np.array_equal(on_disk, decoded(old)) or np.array_equal(on_disk, decoded(new)), "a mixed label"
        assert {k: v for k, v in digests(final).items() if k != "lesion_008.png"} == {
            k: v for k, v in before.items() if k != "lesion_008.png"
        }


def test_killed_between_a_label_write_and_its_rename_keeps_the_old_label(tmp_path: Path) -> None:
    """Deterministic: the save is held between temp file and rename, then killed. Needs the datastore to save
    labels through ``lesion_app.io.files.atomic_write`` (where the hook is); skipped otherwise."""
    env = {**ENV, FAULT_SLEEP_ENV: "30", FAULT_MATCH_ENV: "lesion_008*"}
    final = tmp_path / "studies" / "labels" / "final"
    old, new = png_bytes(np.eye(384, 512)), png_bytes(1 - np.eye(384, 512))
    with server_process(tmp_path, CONF, env=ENV) as server:
        assert put_label(server.url, "lesion_008", old).status_code == 200
    with server_process(tmp_path, CONF, env=env, reuse=True) as server:
        saver = threading.Thread(target=lambda: _ignore_errors(put_label, server.url, "lesion_008", new), daemon=True)
        saver.start()
        deadline = time.monotonic() + 10
        while not (held := f"holding {final / 'lesion_008.png'}" in server.log_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        saver.join(10)
    assert held, "the save was never held between its temporary file and the rename (LESION_FAULT_* hook)"
    assert np.array_equal(read_mask(final / "lesion_008.png"), decoded(old))


def _ignore_errors(call: Callable[..., Any], *args: Any) -> None:
    with suppress(httpx.HTTPError):
        call(*args)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Makes ``path`` and the files in it unwritable, for root too (``chattr +i``); skips where it cannot."""
    targets = [path, *(p for p in path.iterdir() if p.is_file())]
    if os.geteuid() != 0:
        for p in targets:
            p.chmod(0o555 if p.is_dir() else 0o444)
        undo = [lambda p=p: p.chmod(0o755 if p.is_dir() else 0o644) for p in targets]
    else:
        done = subprocess.run(["chattr", "+i", *map(str, targets)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder read-only as root here: {done.stderr.strip()}")
        undo = [lambda: subprocess.run(["chattr", "-i", *map(str, targets)], check=True)]
    try:
        yield
    finally:
        for u in undo:
            u()


def test_a_read_only_labels_folder_gives_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    final = tmp_path / "studies" / "labels" / "final"
    with server_process(tmp_path, CONF, env=ENV) as server:
        before = digests(final)
        with read_only(final):
            replaced = put_label(server.url, "lesion_000", square_mask(tmp_path, "lesion_000"))  # an existing label
            added = put_label(server.url, "lesion_009", square_mask(tmp_path, "lesion_009"))  # a new one
            after = digests(final)
        still = httpx.get(f"{server.url}/info/", timeout=30)
        log = server.log_text()
    for r in (replaced, added):
        assert r.status_code == 503, r.text  # the server's disk, not the request: a clear reason, not a bare 500
        detail = r.json()["detail"]
        assert "cannot write" in detail and "nothing was changed" in detail
        assert "not permitted" in detail or "Permission denied" in detail, detail
    assert after == before, "a label changed or appeared in a read-only folder"
    assert still.status_code == 200, "the server stopped serving after a failed save"
    assert log is not None


@contextmanager
def small_filesystem(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``path`` (root only); skips where this machine does not allow it."""
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave_bytes: int) -> None:
    """Fills the file system of ``folder`` until ``leave_bytes`` are free."""
    free = shutil.disk_usage(folder).free
    (folder / ".filler").write_bytes(b"\0" * max(0, free - leave_bytes))


def test_a_full_disk_gives_507_and_loses_nothing(tmp_path: Path) -> None:
    """The studies folder on a 4 MB file system, filled up to 8 kB: saving a 40 kB label is refused with 507
    (the disk, not the request), the old label and the datastore file stay as they were, nothing half-written is
    left, and the server goes on serving."""
    with small_filesystem(tmp_path / "studies", 4) as studies:
        shutil.copytree(SAMPLE_DATA, studies, dirs_exist_ok=True)
        final = studies / "labels" / "final"
        with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
            before, store = digests(final), (studies / "datastore_v2.json").read_bytes()
            fill(studies, 8_000)
            noisy = png_bytes(np.random.default_rng(0).random((384, 512)) < 0.5)  # about 40 kB
            refused = put_label(server.url, "lesion_001", noisy)
            still = httpx.get(f"{server.url}/info/", timeout=30)
        assert refused.status_code == 507, refused.text
        assert "No space left on device" in refused.json()["detail"]
        assert digests(final) == before and (studies / "datastore_v2.json").read_bytes() == store
        assert temp_files(tmp_path) == [] and still.status_code == 200
