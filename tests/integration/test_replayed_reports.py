"""Failures found by replaying public bug reports (issue 16), each kind tested on the real server: the reported case
and at least one other member of its kind.

1. every image and label encoding (bit depth, palette, container) reads to the same pixels;
2. information another process writes into the datastore file (scoring) is merged, never lost;
3. the folder listing applies the upload rules (no hidden or AppleDouble files, valid ids) and logs what it skips;
4. (every strategy under any sequence of requests: tests/integration/test_active_learning.py)
5. labels found on disk pass the upload checks; one that fails is left out of training, shown, never deleted;
6. the server starts whatever state its bookkeeping file is in, and keeps a damaged one aside;
7. paths with spaces and non-ASCII letters: tests/unit/test_programs.py (programs) and here (serving them).

Issue 25 (a second round), numbered as its items:

1. links: nothing outside the studies folder is written or deleted through a link; linked parts work;
2. a clinic's size: strategies never score in the request; the scoring runs in the background, in batches;
3. trainings across restarts: a training ends with its server; a lock keeps one per model;
4. (a save from OHIF is listed at once: tests/integration/test_dicomweb.py)
5. a stopping server starts nothing new;  6. a user's scoring request is queued, never lost;
7. names with several dots keep distinct ids;  8. /docs offline;  9. errors name the user's file or id;
10. DELETE takes image=;  11. the start-up log says what is offered;  12. the gate's decision in words;
(14: tests/unit/test_data_location.py). Issue 26's picks per annotator are here too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from apps.make_sample_data import draw_study
from apps.research.local_server import Server, free_port, server_process
from lesion_app.core.metrics import iou
from tests.support.paths import REPO, SAMPLE_DATA
from tests.support.servers import NO_SCORING
from tests.support.waiting import answers, start_scoring, train_and_wait, wait_for

pytestmark = pytest.mark.server

CONF = {"models": "unet", "threads": "1", "train_epochs": "1"}
ENV = NO_SCORING


def shape_of(image_id: str) -> tuple[int, int]:
    """The (H, W) of a sample-data photograph (labels must have it)."""
    with Image.open(next(SAMPLE_DATA.glob(f"{image_id}.*"))) as img:
        return img.height, img.width


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def high_bit_depth(rgb: np.ndarray, suffix: str, folder: Path) -> bytes:
    """The photograph as a 16-bit RGB file holding 12-bit values (0-4080), as raw converters export."""
    path = folder / f"photo16{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(rgb.astype(np.uint16) * 16, isVector=True), str(path))
    return path.read_bytes()


def upload(url: str, image_id: str, data: bytes, name: str) -> None:
    r = httpx.put(f"{url}/datastore/", params={"image": image_id}, files={"file": (name, data)}, timeout=60)
    assert r.status_code == 200, r.text


def infer_mask(url: str, image_id: str) -> np.ndarray:
    r = httpx.post(f"{url}/infer/unet", params={"image": image_id, "output": "image"}, timeout=120)
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content))) > 0


def put_label(url: str, image_id: str, data: bytes, tag: str = "final") -> httpx.Response:
    files = {"label": ("label.png", data, "image/png")}
    return httpx.put(f"{url}/datastore/label", params={"image": image_id, "tag": tag}, files=files, timeout=60)


def image_info(url: str, image_id: str) -> dict[str, Any]:
    store = httpx.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()
    return store["objects"][image_id]["image"]["info"]


def finished_training(url: str, timeout: float = 300) -> dict[str, Any]:
    """The train status once the training is no longer submitted or running."""

    def done() -> dict[str, Any] | None:
        status = httpx.get(f"{url}/train/", params={"check_if_running": "false"}, timeout=30).json()
        return None if status.get("status") in ("SUBMITTED", "RUNNING") else status

    return wait_for(done, timeout, "the training")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_process(tmp_path_factory.mktemp("replayed"), CONF, env=ENV) as s:
        yield s


# -- 1. one rule for every encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_high_bit_depth_colour_photograph_segments_as_its_8_bit_version(
    server: Server, tmp_path: Path, suffix: str
) -> None:
    rgb, truth = draw_study(np.random.default_rng(161), (384, 512))
    upload(server.url, f"eight_bit{suffix[1:]}", png(rgb), "eight.png")
    upload(server.url, f"sixteen_bit{suffix[1:]}", high_bit_depth(rgb, suffix, tmp_path), f"photo16{suffix}")
    reference = infer_mask(server.url, f"eight_bit{suffix[1:]}")
    assert iou(reference, truth) > 0.5  # the lesion is found at all
    assert iou(infer_mask(server.url, f"sixteen_bit{suffix[1:]}"), reference) > 0.98


def test_labels_in_any_encoding_are_the_same_label(server: Server) -> None:
    """A 0/1 mask saved as 8-bit, as 16-bit 0/65535 and as a palette PNG: the same stored label."""
    h, w = shape_of("lesion_006")
    mask = np.zeros((h, w), np.uint8)
    mask[60:200, 100:300] = 1
    palette = Image.fromarray(mask, mode="L").convert("P")
    encodings = {
        "8-bit": png(mask * 255),
        "16-bit": png(mask.astype(np.uint16) * 65535),
        "palette": (lambda b: (palette.save(b, format="PNG"), b.getvalue())[1])(io.BytesIO()),
    }
    stored = server.workdir / "studies" / "labels" / "final" / "lesion_006.png"
    for name, data in encodings.items():
        r = put_label(server.url, "lesion_006", data)
        assert r.status_code == 200, f"{name}: {r.text}"
        assert np.array_equal(np.asarray(Image.open(stored)), mask), name


# -- 2. what another process writes is merged, never lost ----------------------------------------------------------


def test_scores_written_by_the_background_scoring_are_kept(server: Server) -> None:
    h, w = shape_of("lesion_007")
    final = np.zeros((h, w), np.uint8)
    final[100:250, 150:380] = 1
    original = np.zeros((h, w), np.uint8)
    original[100:250, 150:300] = 1
    assert put_label(server.url, "lesion_007", png(original * 255), "original").status_code == 200
    assert put_label(server.url, "lesion_007", png(final * 255)).status_code == 200
    assert httpx.post(f"{server.url}/scoring/dice", json={}, timeout=60).status_code == 202  # a background process
    dice = wait_for(lambda: image_info(server.url, "lesion_007").get("dice_original_final"), 120, "the Dice score")
    assert dice == pytest.approx(2 * 150 * 150 / (150 * 230 + 150 * 150), abs=1e-3)
    other = np.zeros(shape_of("lesion_009"), np.uint8)
    other[100:200, 100:200] = 255
    assert put_label(server.url, "lesion_009", png(other)).status_code == 200  # the server writes its file
    assert image_info(server.url, "lesion_007")["dice_original_final"] == dice
    on_disk = json.loads((server.workdir / "studies" / "datastore_v2.json").read_text())
    assert on_disk["objects"]["lesion_007"]["image"]["info"]["dice_original_final"] == dice


def test_uncertainty_scores_written_in_the_background_are_kept(server: Server, tmp_path: Path) -> None:
    assert start_scoring(server.url, "uncertainty", {"force": True}).status_code == 202  # after the Dice scoring
    score = wait_for(lambda: image_info(server.url, "lesion_008").get("uncertainty_ts"), 180, "uncertainty scores")
    rgb, _ = draw_study(np.random.default_rng(5), (96, 128))
    upload(server.url, "another_photo", png(rgb), "another.png")
    assert image_info(server.url, "lesion_008")["uncertainty_ts"] == score


# -- 3, 5 and 6: what is found on disk --------------------------------------------------------------------------


def studies_with_odd_files(root: Path) -> Path:
    """sample-data plus what copies from other machines and hands leave in a studies folder."""
    studies = root / "studies"
    shutil.copytree(SAMPLE_DATA, studies)
    (studies / "._lesion_000.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # macOS AppleDouble metadata
    (studies / ".hidden.png").write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
    shutil.copy(SAMPLE_DATA / "lesion_001.jpg", studies / "-starts-with-a-dash.jpg")
    shutil.copy(SAMPLE_DATA / "lesion_002.jpg", studies / "UPPER_CASE.JPG")
    shutil.copy(SAMPLE_DATA / "lesion_003.png", studies / "lesion_001.png")  # the same id as lesion_001.jpg
    (studies / "labels" / "final" / "._lesion_001.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    # labels copied in by hand: lesion_005 is 512x384, its label 384x512 (transposed); lesion_004's holds 0/7
    (studies / "labels" / "final" / "lesion_005.png").write_bytes(png(np.zeros(shape_of("lesion_005")[::-1], np.uint8)))
    sevens = np.zeros(shape_of("lesion_004"), np.uint8)
    sevens[100:200, 100:200] = 7
    (studies / "labels" / "final" / "lesion_004.png").write_bytes(png(sevens))
    return studies


def test_the_folder_listing_applies_the_upload_rules(tmp_path: Path) -> None:
    studies_with_odd_files(tmp_path)
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
        handed_out = {httpx.post(f"{server.url}/activelearning/first", timeout=30).json()["id"] for _ in range(3)}
        info = httpx.get(f"{server.url}/info/", timeout=30).json()
        log = server.log_text()
    assert "UPPER_CASE" in listed, "an upper-case suffix is a photograph too"
    assert not {"._lesion_000", ".hidden", "-starts-with-a-dash"} & set(listed)
    assert all(not i.startswith((".", "-")) for i in handed_out)
    for name in ("._lesion_000.jpg", ".hidden.png", "-starts-with-a-dash.jpg"):
        assert f"skipped {tmp_path / 'studies' / name}" in log
    # issue 25, 7: two files one id cannot tell apart are reported, never resolved silently
    assert f"skipped {tmp_path / 'studies' / 'lesion_001.png'}: its id 'lesion_001' is lesion_001.jpg's" in log
    assert info["datastore"]["id_clashes"] == {"lesion_001.png": "lesion_001.jpg"}
    assert listed["lesion_001"]["image"]["ext"] == ".jpg"


def test_a_hand_placed_label_that_fails_the_checks_is_shown_and_left_out_of_training(tmp_path: Path) -> None:
    studies = studies_with_odd_files(tmp_path)
    final = studies / "labels" / "final"
    kept = {name: (final / name).read_bytes() for name in ("lesion_004.png", "lesion_005.png")}
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        info = httpx.get(f"{server.url}/info/", timeout=30).json()
        invalid = info["datastore"]["invalid_labels"]
        assert set(invalid) == {"lesion_004", "lesion_005"}
        assert "transposed" in invalid["lesion_005"] and "0/1 or 0/255" in invalid["lesion_004"]
        assert httpx.post(f"{server.url}/train/unet", json={"max_epochs": 1}, timeout=60).status_code == 200
        status = finished_training(server.url)
    details = "\n".join(status.get("details", []))
    assert status["status"] == "DONE", details[-2000:]
    assert "left out lesion_005" in details and "left out lesion_004" in details
    assert "4 train, 4 val" in details  # sample-data's four good labels only
    assert {name: (final / name).read_bytes() for name in kept} == kept, "a refused label was changed or deleted"


@pytest.mark.parametrize(
    "damage", ["cut in half", "empty", "not the datastore's schema"], ids=["half", "empty", "schema"]
)
def test_a_damaged_datastore_file_is_kept_aside_and_rebuilt_from_the_files(tmp_path: Path, damage: str) -> None:
    with server_process(tmp_path, CONF, env=ENV) as server:  # writes a complete datastore_v2.json
        assert (
            put_label(server.url, "lesion_009", png(np.eye(*shape_of("lesion_009"), dtype=np.uint8) * 255)).status_code
            == 200
        )
    path = tmp_path / "studies" / "datastore_v2.json"
    text = path.read_text()
    damaged = {"cut in half": text[: len(text) // 2], "empty": "", "not the datastore's schema": "[1, 2]"}[damage]
    path.write_text(damaged)
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        info = httpx.get(f"{server.url}/info/", timeout=30).json()["datastore"]
        log = server.log_text()
    assert info["total"] == 10 and info["completed"] == 5  # every photograph and label, lesion_009's included
    aside = list((tmp_path / "studies").glob("datastore_v2.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == damaged, "the damaged file is kept, as it was"
    assert f"kept aside as {aside[0]}" in log
    assert json.loads(path.read_text())["objects"], "a new, complete datastore file"


# -- 7. paths with spaces and accents ---------------------------------------------------------------------------


@contextmanager
def lesion_serve(studies: Path, models: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``lesion-serve`` on a copy of sample-data at ``studies``: its URL and process once it answers; stopped after."""
    shutil.copytree(SAMPLE_DATA, studies)
    port = free_port()
    command = [sys.executable, "-m", "apps.serve", "--studies", str(studies), "--port", str(port)]
    command += ["--conf", "models", "unet", "--conf", "model_dir", str(models)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), 90, f"lesion-serve on {studies}:\n{log.read_text()[-2000:]}")
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_lesion_serve_serves_a_folder_with_spaces_and_accents(tmp_path: Path) -> None:
    with lesion_serve(tmp_path / "derm photos é ü", tmp_path / "my models", tmp_path / "serve.log") as (url, _):
        assert httpx.get(f"{url}/info/", timeout=30).json()["datastore"]["total"] == 10
        assert infer_mask(url, "lesion_000").any()


def test_make_serve_serves_a_folder_with_spaces_and_accents(tmp_path: Path) -> None:
    """The README's first command with a studies folder named as clinicians name them."""
    if shutil.which("make") is None or not (REPO / ".venv" / ".installed").exists():
        pytest.skip("make serve needs make and the repository's .venv (make venv)")
    studies = tmp_path / "derm photos é ü"
    shutil.copytree(SAMPLE_DATA, studies)
    port = free_port()
    command = ["make", "-C", str(REPO), "serve", f"STUDIES={studies}", f"PORT={port}", f"WORKSPACE={tmp_path / 'ws'}"]
    command.append("CONF=--conf models unet")
    log = tmp_path / "make.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), 120, f"make serve on a spaced path:\n{log.read_text()[-2000:]}")
        assert httpx.get(f"{url}/info/", timeout=30).json()["datastore"]["total"] == 10
        page = httpx.get(f"{url}/worklist", timeout=30)  # a folder: the browser's worklist says what it needs
        assert page.status_code == 200 and "needs a DICOMweb studies server" in page.text and "make serve" in page.text
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as in a terminal
        process.wait(30)


# -- issue 25, 1: links in the studies folder ----------------------------------------------------------------------


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links followed) by its path relative to ``root``: its SHA-256."""
    import hashlib

    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_photographs_and_labels_that_are_links_are_never_followed_by_a_write_or_a_delete(tmp_path: Path) -> None:
    """Photographs and a label that are links to files elsewhere (a photo library, git-annex): reading and
    saving work, a save replaces the label's link by the app's own file, a delete removes the link and the app's
    files, never the file behind the link; nothing outside changes."""
    outside = tmp_path / "library"
    outside.mkdir()
    studies = tmp_path / "studies"
    shutil.copytree(SAMPLE_DATA, studies)
    for name in ("lesion_000.jpg", "lesion_001.jpg", "lesion_008.jpg"):
        (outside / name).write_bytes((studies / name).read_bytes())
        (studies / name).unlink()
        (studies / name).symlink_to(outside / name)
    (outside / "lesion_001.png").write_bytes((studies / "labels" / "final" / "lesion_001.png").read_bytes())
    (studies / "labels" / "final" / "lesion_001.png").unlink()
    (studies / "labels" / "final" / "lesion_001.png").symlink_to(outside / "lesion_001.png")
    before = tree_hashes(outside)
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        r = httpx.get(f"{server.url}/datastore/image", params={"image": "lesion_008"}, timeout=30)
        assert r.status_code == 200 and r.content == (outside / "lesion_008.jpg").read_bytes()
        assert infer_mask(server.url, "lesion_008").any()
        mask = np.zeros(shape_of("lesion_008"), np.uint8)
        mask[50:150, 60:200] = 255
        assert put_label(server.url, "lesion_008", png(mask)).status_code == 200
        assert put_label(server.url, "lesion_001", png(np.zeros(shape_of("lesion_001"), np.uint8))).status_code == 200
        assert not (studies / "labels" / "final" / "lesion_001.png").is_symlink(), "the save replaced the link"
        for image_id in ("lesion_000", "lesion_001"):
            r = httpx.delete(f"{server.url}/datastore/", params={"id": image_id}, timeout=30)
            assert r.status_code == 200, r.text
        listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert tree_hashes(outside) == before, "a file outside the studies folder changed"
    assert not (studies / "lesion_000.jpg").is_symlink() and not (studies / "lesion_001.jpg").is_symlink()
    assert not (studies / "labels" / "final" / "lesion_001.png").exists()
    assert not {"lesion_000", "lesion_001"} & set(listed) and "lesion_008" in listed
    assert np.array_equal(np.asarray(Image.open(studies / "labels" / "final" / "lesion_008.png")), mask // 255)


def test_a_studies_folder_whose_parts_are_links_to_other_folders_reads_and_saves(tmp_path: Path) -> None:
    """The studies folder, its labels/ and labels/final are links to other folders (another disk): the labels
    there are listed and served, a save lands there, a delete removes only the image's own label there."""
    disks = tmp_path / "disks"
    shutil.copytree(SAMPLE_DATA, disks / "photos")
    shutil.move(disks / "photos" / "labels", disks / "labels")
    shutil.move(disks / "labels" / "final", disks / "finals")
    (disks / "labels" / "final").symlink_to(disks / "finals")
    (disks / "photos" / "labels").symlink_to(disks / "labels")
    (disks / "unrelated.txt").write_text("not the app's")
    (tmp_path / "studies").symlink_to(disks / "photos")
    before = tree_hashes(disks)
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        info = httpx.get(f"{server.url}/info/", timeout=30).json()["datastore"]
        assert info["completed"] == 4 and not info["invalid_labels"]
        served = httpx.get(f"{server.url}/datastore/label", params={"label": "lesion_002", "tag": "final"}, timeout=30)
        assert served.status_code == 200 and served.content == (disks / "finals" / "lesion_002.png").read_bytes()
        mask = np.zeros(shape_of("lesion_009"), np.uint8)
        mask[40:120, 40:160] = 1
        r = put_label(server.url, "lesion_009", png(mask))
        assert r.status_code == 200, r.text
        r = httpx.delete(f"{server.url}/datastore/", params={"id": "lesion_003"}, timeout=30)
        assert r.status_code == 200, r.text
    after = tree_hashes(disks)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    bookkeeping = {"photos/datastore_v2.json", "photos/.lock"}
    assert changed - bookkeeping == {"photos/lesion_003.png", "finals/lesion_003.png", "finals/lesion_009.png"}
    assert "finals/lesion_009.png" in after and "finals/lesion_003.png" not in after
    assert np.array_equal(np.asarray(Image.open(disks / "finals" / "lesion_009.png")), mask)
    assert (tmp_path / "studies").is_symlink() and (disks / "photos" / "labels").is_symlink()


# -- issue 25, 3: trainings across restarts -------------------------------------------------------------------------


def train_stats(workdir: Path) -> dict[str, Any]:
    try:
        return json.loads((workdir / "models" / "train_stats_unet.json").read_text())
    except (OSError, ValueError):
        return {}


def test_a_training_ends_with_its_server_and_the_next_server_runs_its_own(tmp_path: Path) -> None:
    """Started as MONAI Label documents (``monailabel start_server``), a server stopped with SIGTERM during a
    training: the training process ends within 5 s; the restarted server trains, and its run's stats stay its own."""
    import psutil

    with server_process(tmp_path, CONF, env=ENV) as server:
        r = httpx.post(f"{server.url}/train/unet", json={"max_epochs": 500}, timeout=60)
        assert r.status_code == 200, r.text
        old = wait_for(
            lambda: train_stats(tmp_path).get("state") in ("STARTING", "RUNNING") and train_stats(tmp_path),
            120,
            "a run",
        )
        os.kill(server.proc.pid, signal.SIGTERM)  # the server alone, as systemd or a terminal's kill does
        server.proc.wait(30)
        wait_for(lambda: not psutil.pid_exists(old["pid"]), 5, f"the training process {old['pid']} to end")
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        r = httpx.post(f"{server.url}/train/unet", json={"max_epochs": 1}, timeout=60)
        assert r.status_code == 200, r.text
        status = finished_training(server.url)
        assert status["status"] == "DONE", "\n".join(status.get("details", []))[-2000:]
    stats = train_stats(tmp_path)
    assert stats["state"] == "DONE" and stats["pid"] != old["pid"] and len(stats["history"]) == 1


def test_a_training_left_running_is_stopped_at_start_and_a_second_one_refused(tmp_path: Path) -> None:
    """A training process that holds the model's lock but no server started (left by one that ended on a system
    without parent-death signals): the server stops it at its start; while another holds it, training is a 409."""
    import psutil

    hold = (
        "import sys, time; from lesion_app.lib.trainers.run_lock import RunLock, lock_path; "
        f"lock = RunLock(lock_path({str(tmp_path / 'models')!r}, 'unet')); "
        "assert lock.acquire({'pid': __import__('os').getpid(), 'run': 'left'}); print('held', flush=True); "
        "time.sleep(600)"
    )
    (tmp_path / "models").mkdir()

    def holder() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    left = holder()
    try:
        with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
            assert left.wait(20) is not None, "the leftover training was not stopped"
            assert f"pid {left.pid}" in server.log_text()
            another = holder()
            try:
                r = httpx.post(f"{server.url}/train/unet", json={"max_epochs": 1}, timeout=60)
                assert r.status_code == 409 and f"pid {another.pid}" in r.json()["detail"], r.text
            finally:
                another.kill()
                another.wait()
            r = httpx.post(f"{server.url}/train/unet", json={"max_epochs": 1}, timeout=60)
            assert r.status_code == 200, r.text
            assert finished_training(server.url)["status"] == "DONE"
    finally:
        if psutil.pid_exists(left.pid):
            left.kill()
        left.wait()


# -- issue 25, 2: a clinic's size -----------------------------------------------------------------------------------


def slowest_of(count: int, request: Callable[[], httpx.Response]) -> float:
    """The slowest of ``count`` requests, in seconds (each must succeed)."""
    slowest = 0.0
    for _ in range(count):
        start = time.perf_counter()
        response = request()
        assert response.status_code == 200, response.text
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


def scores_in_file(workdir: Path) -> int:
    objects = json.loads((workdir / "studies" / "datastore_v2.json").read_text())["objects"]
    return sum("uncertainty_version" in o["image"]["info"] for o in objects.values())


def test_next_sample_never_waits_for_the_scoring_which_runs_in_batches_and_stops_with_the_server(
    tmp_path: Path,
) -> None:
    """300 unscored photographs (the report: 62-95 s inside the request, the server frozen meanwhile): every strategy
    answers at once from the scores at hand, the scoring runs in the background and stores batch by batch, /info
    answers within 1 s meanwhile, a SIGTERM ends server and scoring within 5 s, the next run starts from the
    scores kept. (The figures at 1,000 and 10,000 photographs: apps/research/scale.py, docs/scale.md.)"""
    import psutil

    from apps.research.scale import scoring_pid, synthetic_studies

    count = 300
    synthetic_studies(tmp_path / "studies", count)
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        for strategy in ("uncertainty", "power", "random", "first"):
            start = time.perf_counter()
            r = httpx.post(f"{server.url}/activelearning/{strategy}", json={}, timeout=300)
            assert r.status_code == 200 and r.json()["id"].startswith("photo_"), r.text
            assert time.perf_counter() - start < 1.0, f"{strategy} took {time.perf_counter() - start:.1f}s"
            if strategy in ("uncertainty", "power"):
                assert r.json()["scores_pending"] == count, "nothing is scored inside the request"
        pid = wait_for(lambda: scoring_pid(server.proc.pid), 60, "the background scoring the strategies queued")
        wait_for(lambda: scores_in_file(tmp_path) > 0, 180, "a first batch of scores")
        assert slowest_of(20, lambda: httpx.get(f"{server.url}/info/", timeout=30)) < 1.0
        assert psutil.pid_exists(pid), "the scoring ran to its end: too few photographs to test a stop"
        start = time.perf_counter()
        os.kill(server.proc.pid, signal.SIGTERM)
        server.proc.wait(30)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 5, "the scoring")
        assert time.perf_counter() - start < 5.0
    kept = scores_in_file(tmp_path)
    assert 0 < kept < count
    with server_process(tmp_path, CONF, env=ENV, reuse=True) as server:
        r = httpx.post(f"{server.url}/activelearning/uncertainty", json={}, timeout=60)
        assert r.status_code == 200 and r.json()["scores_pending"] == count - kept, r.text


# -- issue 26: picks per annotator ----------------------------------------------------------------------------------


def pick(url: str, annotator: str | None = None, **body: Any) -> str:
    """The id a ``first`` next sample answers for ``annotator`` (None: a request without one)."""
    if annotator is not None:
        body["annotator"] = annotator
    r = httpx.post(f"{url}/activelearning/first", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_a_pick_is_reserved_until_saved_or_skipped_and_released_by_save_and_next(server: Server) -> None:
    listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    free = sorted(i for i, o in listed.items() if "final" not in o["labels"])
    assert len(free) >= 4
    assert pick(server.url, "ana") == free[0] and pick(server.url, "ana") == free[0], "the same unsaved pick again"
    assert pick(server.url, "ben") == free[1] and pick(server.url, "ben") == free[1], "not ana's"
    assert pick(server.url) == free[0], "without an annotator: as before"
    assert pick(server.url, "ana", skip=free[0]) == free[2], "neither ana's skipped one nor ben's"
    assert pick(server.url, "ben", skip=free[1]) == free[0], "ana's skip released it"
    photo = httpx.get(f"{server.url}/datastore/image", params={"image": free[0]}, timeout=30).content
    mask = np.zeros(Image.open(io.BytesIO(photo)).size[::-1], np.uint8)
    assert put_label(server.url, free[0], png(mask)).status_code == 200
    assert pick(server.url, "ben") == free[3], "saved: ben's next; ana's reservation and ben's skip still hold"
    assert pick(server.url, "ana") == free[2]
    # Save and next asks for the pick after the photograph being saved, while it is saved
    assert pick(server.url, "ana", after=free[2]) == free[1], "not the one being saved, nor ben's"
    assert pick(server.url, "carl") == free[2], "released and kept from no one: a failed save leaves it offered"
    r = httpx.post(f"{server.url}/activelearning/first", json={"annotator": "ana", "after": "../x"}, timeout=30)
    assert r.status_code == 400 and "after" in r.text
    r = httpx.post(f"{server.url}/activelearning/first", json={"annotator": "ana", "skip": "no_such_photo"}, timeout=30)
    assert r.status_code == 404 and "no_such_photo" in r.text
    r = httpx.post(f"{server.url}/activelearning/first", json={"annotator": ["ana"]}, timeout=30)
    assert r.status_code == 400 and "annotator" in r.text


# -- issue 25, 6: the app's own work never makes a user's request fail ----------------------------------------------


def scoring_tasks(url: str) -> list[dict[str, Any]]:
    tasks = httpx.get(f"{url}/scoring/", params={"all": True}, timeout=30).json()
    return tasks if isinstance(tasks, list) else [tasks]


def test_a_scoring_request_while_the_apps_own_scoring_runs_is_queued_and_run(server: Server) -> None:
    """The app's background scoring runs (as after a training); a user's Dice scoring is queued (202 with its id,
    listed at /scoring/) and runs after it; only a run inside the request is refused, with Retry-After."""
    own = httpx.post(f"{server.url}/scoring/uncertainty", json={"force": True}, timeout=60)
    assert own.status_code == 202, own.text
    wait_for(
        lambda: any(t["id"] == own.json()["id"] and t["status"] == "RUNNING" for t in scoring_tasks(server.url)),
        60,
        "the background scoring to run",
    )
    r = httpx.post(f"{server.url}/scoring/dice", json={}, timeout=60)
    assert r.status_code == 202, r.text
    mine = r.json()["id"]
    assert any(t["id"] == mine for t in scoring_tasks(server.url))
    sync = httpx.post(f"{server.url}/scoring/dice", params={"run_sync": True}, json={}, timeout=60)
    assert sync.status_code == 429 and int(sync.headers["Retry-After"]) > 0 and "Already" not in sync.text
    done = wait_for(
        lambda: next(
            (
                t
                for t in scoring_tasks(server.url)
                if t["id"] == mine and t["status"] != "SUBMITTED" and t["status"] != "RUNNING"
            ),
            None,
        ),
        300,
        "the queued Dice scoring",
    )
    assert done["status"] == "DONE"
    assert httpx.post(f"{server.url}/scoring/nothing", json={}, timeout=30).status_code == 404


# -- issue 25, 5: a stopping server starts nothing new ---------------------------------------------------------------


def test_a_stopping_server_starts_no_queued_scoring(tmp_path: Path) -> None:
    """lesion-serve with a scoring running and another queued: SIGTERM stops it within 5 s, and the queued one never
    starts (it started when the running one was stopped, and held the exit for 13 s)."""
    log = tmp_path / "serve.log"
    with lesion_serve(tmp_path / "studies", tmp_path / "models", log) as (url, process):
        running = httpx.post(f"{url}/scoring/uncertainty", json={"force": True}, timeout=30).json()["id"]
        assert httpx.post(f"{url}/scoring/dice", json={}, timeout=30).status_code == 202
        wait_for(lambda: "-m scoring" in log.read_text(), 30, "the first scoring process")
        assert running and log.read_text().count("-m scoring") == 1
        start = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        assert time.perf_counter() - start < 5.0
    assert log.read_text().count("-m scoring") == 1, "a queued scoring started while the server stopped"


# -- issue 25, 7: names with several dots ---------------------------------------------------------------------------


def test_photographs_named_by_date_keep_distinct_ids(server: Server) -> None:
    """Uploads named ``patient.2024.03.12.jpg`` and ``patient.2024.03.13.jpg`` (no ``image=``): two photographs, each
    under its name without the extension, as the folder listing names them (both were id ``patient``, then a 409)."""
    rgb, _ = draw_study(np.random.default_rng(7), (96, 128))
    data = io.BytesIO()
    Image.fromarray(rgb).save(data, format="JPEG")
    for name in ("patient.2024.03.12.jpg", "patient.2024.03.13.jpg"):
        r = httpx.put(f"{server.url}/datastore/", files={"file": (name, data.getvalue())}, timeout=60)
        assert r.status_code == 200 and r.json()["image"] == name.removesuffix(".jpg"), r.text
    listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert {"patient.2024.03.12", "patient.2024.03.13"} <= set(listed) and "patient" not in listed
    assert (server.workdir / "studies" / "patient.2024.03.13.jpg").exists()


# -- issue 25, 9: errors name the user's file or id --------------------------------------------------------------


def test_errors_name_the_users_file_never_a_server_path_or_a_librarys_words(server: Server) -> None:
    """A text file named .jpg: the upload is a 400 naming the id, infer on it a 422 naming the upload; neither shows
    the server's temporary file nor Pillow's or MONAI's own message."""
    import tempfile

    text = b"not a photograph, a note saved as .jpg\n"
    files = {"file": ("notes.jpg", text)}
    r = httpx.put(f"{server.url}/datastore/", params={"image": "notes"}, files=files, timeout=60)
    assert r.status_code == 400 and "image 'notes'" in r.json()["detail"], r.text
    r2 = httpx.post(f"{server.url}/infer/unet", files={"file": ("notes.jpg", text)}, timeout=60)
    assert r2.status_code == 422 and "the uploaded file" in r2.json()["detail"], r2.text
    for answer in (r, r2):
        assert tempfile.gettempdir() not in answer.text and "Error" not in answer.text
        assert "LoadImage" not in answer.text and "identify image file" not in answer.text
    assert httpx.get(f"{server.url}/info/", timeout=30).status_code == 200


def test_a_bad_conf_value_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE_DATA, tmp_path / "studies")
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "lesion_app")]
    command += ["--studies", str(tmp_path / "studies"), "--port", str(free_port()), "--conf", "threads", "banana"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "threads" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


# -- issue 25, 10: DELETE takes image= ----------------------------------------------------------------------------


def test_a_photograph_is_removed_by_image_as_every_other_route_names_it(server: Server) -> None:
    rgb, _ = draw_study(np.random.default_rng(10), (96, 128))
    for image_id, path in (("removed_by_image", "/datastore/"), ("removed_by_route", "/datastore/image")):
        upload(server.url, image_id, png(rgb), "photo.png")
        r = httpx.delete(f"{server.url}{path}", params={"image": image_id}, timeout=30)
        assert r.status_code == 200, r.text
        assert not (server.workdir / "studies" / f"{image_id}.png").exists()
    upload(server.url, "removed_by_id", png(rgb), "photo.png")
    assert (
        httpx.delete(f"{server.url}/datastore/", params={"image": "removed_by_id", "id": "x"}, timeout=30).status_code
        == 400
    )
    assert httpx.delete(f"{server.url}/datastore/", timeout=30).status_code == 400
    assert httpx.delete(f"{server.url}/datastore/", params={"id": "removed_by_id"}, timeout=30).status_code == 200
    listed = httpx.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert not {"removed_by_image", "removed_by_route", "removed_by_id"} & set(listed)


# -- issue 25, 11: what the start-up log says ------------------------------------------------------------------------


def test_start_up_on_a_folder_logs_no_error_and_says_what_it_offers(server: Server) -> None:
    start_up = server.log_text().split("Application startup complete")[0]
    assert "[ERROR]" not in start_up, [line for line in start_up.splitlines() if "[ERROR]" in line]
    assert "worklist at /worklist" not in start_up
    assert "this server offers the API (/docs) and 3D Slicer on a folder" in start_up


# -- issue 25, 12: the gate's decision in words -------------------------------------------------------------------


def test_the_train_status_says_what_the_gate_decided_and_why(server: Server) -> None:
    details = train_and_wait(server.url)
    stats = httpx.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["unet"]
    words = stats["decision"]
    assert words.startswith({"published": "published:", "kept_aside": "kept aside:"}[stats["last_decision"]])
    assert f"{stats['new_iou']:.4f}" in words and f"{stats['baseline_iou']:.4f}" in words
    assert "served model" in words and words in details


# -- issue 25, 8: the API pages offline -----------------------------------------------------------------------------


def test_the_api_pages_need_no_other_origin(server: Server) -> None:
    """/docs and everything it loads come from the server itself (FastAPI's page loaded ReDoc from a CDN and fonts
    from Google: blank without internet)."""
    import re

    page = httpx.get(f"{server.url}/docs", timeout=30)
    assert page.status_code == 200 and "<redoc" in page.text
    assert not re.search(r"(?:https?:)?//", page.text), "the page names another origin"
    loaded = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page.text)
    assert any(url.endswith("redoc.standalone.js") for url in loaded)
    for url in loaded:
        r = httpx.get(f"{server.url}{url}", timeout=30)
        assert r.status_code == 200 and r.content, url
    assert httpx.get(f"{server.url}/docs/static/..%2f..%2fsettings.py", timeout=30).status_code == 404
