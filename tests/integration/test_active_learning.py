"""Active learning over HTTP: the uncertainty strategy, the scoring endpoints and the uncertainty map.

One server (the U-Net only, to start fast) for the whole module; the tests run in file order and the
last one labels every image.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from PIL import Image

from apps.research.local_server import running_server
from lesion_app.core.metrics import dice
from lesion_app.io.images import read_mask
from lesion_app.lib.scoring.dice import DICE_KEY
from tests.support.paths import SAMPLE_DATA

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("active_learning")


@pytest.fixture(scope="module")
def url(workdir: Path) -> Iterator[str]:
    with running_server(workdir, {"models": "unet"}) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str, workdir: Path) -> MONAILabelClient:
    return MONAILabelClient(url, tmpdir=str(workdir / "client"))


#: sample-data's images with a final label
SAMPLE_LABELLED = {p.stem for p in (SAMPLE_DATA / "labels" / "final").iterdir()}


def labelled(workdir: Path) -> set[str]:
    return {p.stem for p in (workdir / "studies" / "labels" / "final").iterdir()}


def image_info(url: str, image_id: str) -> dict[str, Any]:
    store = httpx.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()
    return store["objects"][image_id]["image"]["info"]


def run_scoring(url: str, method: str) -> Any:
    """Runs a scoring method in the server, waiting while a background one (start-up, next sample) runs."""
    deadline = time.monotonic() + 180
    while True:
        r = httpx.post(f"{url}/scoring/{method}", params={"run_sync": True}, json={}, timeout=180)
        if r.status_code != 429:
            assert r.status_code == 200, r.text
            return r.json()
        assert time.monotonic() < deadline, "a background scoring task did not finish in 3 minutes"
        time.sleep(1)


def save_label(client: MONAILabelClient, workdir: Path, image_id: str, mask: np.ndarray, tag: str) -> None:
    path = workdir / f"upload_{tag}_{image_id}.png"
    Image.fromarray(mask.astype(np.uint8)).save(path)
    client.save_label(image_id, str(path), tag=tag)


def test_info_lists_strategy_scoring_and_infer(client: MONAILabelClient) -> None:
    info = client.info()
    assert {"random", "first", "uncertainty", "power"} <= set(info["strategies"])
    assert {"uncertainty", "dice"} <= set(info["scoring"])
    assert info["models"]["uncertainty"]["type"] == "others"  # not offered as a lesion segmentation


def test_uncertainty_strategy_offers_an_unlabelled_image(client: MONAILabelClient, workdir: Path, url: str) -> None:
    unscored = client.next_sample("uncertainty", {})  # answered at once from the scores at hand (none yet)
    assert unscored["id"] not in labelled(workdir) and unscored["scores_pending"] > 0
    run_scoring(url, "uncertainty")  # the background scoring's work, here inside the request
    sample = client.next_sample("uncertainty", {})
    assert sample["id"] and sample["id"] not in labelled(workdir) and sample["scores_pending"] == 0
    assert 0.0 <= sample["uncertainty"] <= 1.0
    info = image_info(url, sample["id"])
    assert info["uncertainty_model"] == "pretrained_unet.pt" and info["uncertainty_model_mtime"] > 0


def test_power_strategy_draws_unlabelled_images_by_their_uncertainty(client: MONAILabelClient, workdir: Path) -> None:
    drawn = [client.next_sample("power", {"seed": seed}) for seed in range(6)]
    assert all(d["id"] not in labelled(workdir) and 0.0 < d["probability"] <= 1.0 for d in drawn)
    assert client.next_sample("power", {"seed": 3})["id"] == drawn[3]["id"]  # a request's seed repeats its draw
    top = max(drawn, key=lambda d: d["uncertainty"])
    assert top["probability"] == max(d["probability"] for d in drawn)  # more uncertain, more likely


def test_a_burst_of_next_sample_requests_leaves_each_scoring_method_waiting_once_at_most(url: str) -> None:
    """MONAI Label queues every scoring method after each next sample; a method already waiting in the queue is not
    queued again (a clinician's session piled up dozens of runs): 8 requests, faster than one scoring run starts,
    add at most one run per method, not 8 each (the waiting run reads the datastore when it starts)."""

    def tasks() -> list[dict[str, Any]]:
        response = httpx.get(f"{url}/scoring/", params={"all": "true"}, timeout=30)
        return response.json() if response.status_code == 200 else []

    before = {t["id"] for t in tasks()}
    for _ in range(8):
        assert httpx.post(f"{url}/activelearning/random", json={}, timeout=60).status_code == 200
    after = tasks()
    added = Counter(t["request"]["method"] for t in after if t["id"] not in before)
    waiting = Counter(t["request"]["method"] for t in after if t["status"] == "SUBMITTED")
    assert max(added.values(), default=0) <= 1 and max(waiting.values(), default=0) <= 1, (added, waiting)


def test_uncertainty_scoring_stores_scores_for_unlabelled_images(url: str, workdir: Path) -> None:
    summary = run_scoring(url, "uncertainty")
    done = labelled(workdir)
    assert summary["total"] == 10 - len(done) and summary["model"] == ["pretrained_unet.pt"]
    for image_id in [f"lesion_{i:03d}" for i in range(10)]:
        info = image_info(url, image_id)
        if image_id in SAMPLE_LABELLED:  # labelled from the start: never scored
            assert "uncertainty" not in info, image_id
        elif image_id not in done:  # (images another test labelled may keep the score they had before)
            assert "uncertainty" in info, image_id


def test_dice_scoring_compares_the_proposal_with_the_correction(
    client: MONAILabelClient, workdir: Path, url: str
) -> None:
    # the proposal, recorded by the infer request itself as label tag 'original'
    client.infer("unet", "lesion_005", {"save_label": True})
    original = workdir / "studies" / "labels" / "original" / "lesion_005.png"
    assert original.exists()
    final = read_mask(original).astype(np.uint8)
    final[: final.shape[0] // 2] = 0  # the clinician removes the top half
    save_label(client, workdir, "lesion_005", final, "final")
    result = run_scoring(url, "dice")
    expected = dice(read_mask(original), final.astype(bool))
    assert result["lesion_005"] == pytest.approx(expected, abs=1e-5) and 0.0 < expected < 1.0
    assert image_info(url, "lesion_005")[DICE_KEY] == pytest.approx(expected, abs=1e-5)


def test_uncertainty_infer_returns_an_8_bit_map_of_the_image_size(client: MONAILabelClient, workdir: Path) -> None:
    result_file, params = client.infer("uncertainty", "lesion_007", {"save_label": True})
    with Image.open(result_file) as img:
        assert img.mode == "L" and img.format == "PNG"
        uncertainty = np.asarray(img)
    with Image.open(workdir / "studies" / "lesion_007.png") as photo:
        assert uncertainty.shape == (photo.height, photo.width)
    assert uncertainty.max() > 100 and len(np.unique(uncertainty)) > 10  # a graded band, not a mask
    assert (uncertainty >= 128).mean() < 0.2  # doubt (p between 0.11 and 0.89) is at the border, not everywhere
    assert params["image_size"] == list(uncertainty.shape) and 0.0 <= params["uncertainty"] <= 1.0
    assert not (workdir / "studies" / "labels" / "original" / "lesion_007.png").exists()  # a map is no label


STRATEGIES = ("random", "first", "uncertainty", "power")


def test_every_strategy_under_any_sequence_of_requests(tmp_path: Path) -> None:
    """Issue 16's kind: many requests in a row, one image left, none left; on a server of its own, since it
    labels everything. MONAI Label's own random strategy answered 500 on the seventh request here."""
    with running_server(tmp_path, {"models": "unet"}) as base:
        client = MONAILabelClient(base, tmpdir=str(tmp_path / "client"))
        unlabelled = sorted({f"lesion_{i:03d}" for i in range(10)} - labelled(tmp_path))
        for strategy in STRATEGIES:
            for _ in range(8):  # more requests than unlabelled images, all within a few seconds
                assert client.next_sample(strategy, {})["id"] in unlabelled, strategy
        for image_id in unlabelled[:-1]:
            save_label(client, tmp_path, image_id, square_mask(tmp_path, image_id), "final")
        for strategy in STRATEGIES:
            assert [client.next_sample(strategy, {})["id"] for _ in range(3)] == [unlabelled[-1]] * 3, strategy
        save_label(client, tmp_path, unlabelled[-1], square_mask(tmp_path, unlabelled[-1]), "final")
        assert len(labelled(tmp_path)) == 10
        for strategy in STRATEGIES:
            assert [client.next_sample(strategy, {}) for _ in range(3)] == [{}, {}, {}], strategy


def square_mask(workdir: Path, image_id: str) -> np.ndarray:
    """A 0/1 mask of the photograph's size (the datastore refuses labels of another size)."""
    with Image.open(next((workdir / "studies").glob(f"{image_id}.*"))) as photo:
        mask = np.zeros((photo.height, photo.width), np.uint8)
    mask[100:250, 150:380] = 1
    return mask
