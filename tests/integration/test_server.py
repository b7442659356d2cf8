"""The real server over HTTP, driven by MONAI Label's own client, with the shipped models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from PIL import Image

from apps.make_sample_data import draw_study
from apps.research.local_server import running_server
from lesion_app.core.checkpoint import model_meta
from tests.support.paths import MODEL_DIR
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def client(workdir: Path) -> Iterator[MONAILabelClient]:
    with running_server(workdir, env=NO_SCORING) as url:
        yield MONAILabelClient(url, tmpdir=str(workdir / "client"))


def read_mask(path: str) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L", "masks are single-channel PNG"
        return np.asarray(img)


def labelled(workdir: Path) -> int:
    """Final labels in the served studies folder now (sample-data has 4; a test in this module saves one more)."""
    return len(list((workdir / "studies" / "labels" / "final").glob("*.png")))


def test_info_lists_the_models_and_trainers(client: MONAILabelClient, workdir: Path) -> None:
    info = client.info()
    assert set(info["models"]) == {"unet", "deeplabv3", "ensemble", "deepedit", "uncertainty"}  # uncertainty: a map
    assert set(info["trainers"]) == {"unet", "deeplabv3", "deepedit"}  # the ensemble learns through its members
    assert info["models"]["deepedit"]["type"] == "deepedit"  # 3D Slicer's SmartEdit lists it for clicks
    assert info["models"]["unet"]["config"]["postprocess"] is True and info["models"]["unet"]["config"]["tta"] is False
    assert info["labels"] == {"lesion": 1}
    photographs = [p for p in (workdir / "studies").iterdir() if p.suffix in (".jpg", ".png")]
    assert len(photographs) >= 10  # sample-data's 10, and the one a test of this module uploads
    assert info["datastore"]["total"] == len(photographs) and info["datastore"]["completed"] == labelled(workdir)


@pytest.mark.parametrize("model", ["unet", "deeplabv3"])
@pytest.mark.parametrize("image_id", ["lesion_005", "lesion_007"])  # a JPEG and a PNG
def test_infer_returns_a_binary_mask_of_the_image_size(
    client: MONAILabelClient, workdir: Path, model: str, image_id: str
) -> None:
    source = next((workdir / "studies").glob(f"{image_id}.*"))
    result_file, params = client.infer(model, image_id, {})
    mask = read_mask(result_file)
    with Image.open(source) as img:
        assert mask.shape == (img.height, img.width)
    assert set(np.unique(mask)) <= {0, 1}
    assert params["model_path"] == f"pretrained_{model}.pt"
    assert params["image_size"] == [mask.shape[0], mask.shape[1]]


def test_infer_on_a_drawn_lesion_finds_it(client: MONAILabelClient, workdir: Path) -> None:
    """An unseen drawn study with a known mask, uploaded and segmented: the lesion is found (IoU > 0.5)."""
    img, truth = draw_study(np.random.default_rng(1234), (384, 512))
    path = workdir / "upload_probe.jpg"
    Image.fromarray(img).save(path, quality=92)
    image_id = client.upload_image(str(path), image_id="upload_probe")
    assert image_id
    for model, params in [("unet", {}), ("ensemble", {"tta": True})]:
        result_file, result = client.infer(model, "upload_probe", params)
        pred = read_mask(result_file).astype(bool)
        iou = (pred & truth).sum() / (pred | truth).sum()
        assert iou > 0.5, f"{model} {params}: IoU {iou:.3f}"
    assert result["tta"] is True and result["model_paths"] == ["pretrained_unet.pt", "pretrained_deeplabv3.pt"]


def test_nrrd_result_for_slicer(client: MONAILabelClient) -> None:
    import itk

    result_file, _ = client.infer("unet", "lesion_005", {"result_extension": ".nrrd"})
    assert result_file.endswith(".nrrd")
    mask = itk.array_from_image(itk.imread(result_file))
    assert mask.shape == (384, 512)


def test_saved_label_lands_in_labels_final(client: MONAILabelClient, workdir: Path) -> None:
    mask = np.zeros((384, 512), np.uint8)
    mask[100:250, 150:380] = 1
    label = workdir / "label_upload.png"
    Image.fromarray(mask).save(label)
    before = labelled(workdir)
    client.save_label("lesion_005", str(label), tag="final")
    stored = workdir / "studies" / "labels" / "final" / "lesion_005.png"
    assert stored.exists()
    assert np.array_equal(read_mask(str(stored)), mask)
    assert client.info()["datastore"]["completed"] == before + 1 == labelled(workdir)


@pytest.mark.parametrize("model", ["unet", "deepedit"])
def test_one_epoch_training_finishes_and_the_new_model_serves(tmp_path: Path, model: str) -> None:
    """On a server of its own: the model it publishes would change what the other tests' infers serve. The click
    model trains with simulated clicks (its file says so) and its new version still reads clicks."""
    with running_server(tmp_path, {"models": model}, env=NO_SCORING) as url:
        check_one_epoch_training(MONAILabelClient(url, tmpdir=str(tmp_path / "client")), tmp_path, model)
    if model == "deepedit":
        published = tmp_path / "models" / "deepedit.pt"
        assert model_meta(str(published), published.stat().st_mtime)["clicks"]["prev_mask"] is True


def check_one_epoch_training(client: MONAILabelClient, workdir: Path, model: str = "unet") -> None:
    started = client.train_start(model, {"max_epochs": 1})
    assert started["status"] in ("SUBMITTED", "RUNNING")
    deadline = time.monotonic() + 300
    while True:
        status = client.train_status(check_if_running=False)
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.monotonic() < deadline, "training did not finish in 5 minutes"
        time.sleep(2)
    assert status["status"] == "DONE", "\n".join(status.get("details", [])[-30:])
    details = "\n".join(status["details"])
    assert "epoch 1/1" in details and "val_iou" in details
    assert (workdir / "models" / f"{model}.pt").exists()
    stats = client.info()["train_stats"][model]
    assert stats["state"] == "DONE" and len(stats["history"]) == 1
    clicks = {"foreground": [[200, 150, 0]], "background": []} if model == "deepedit" else {}
    _, params = client.infer(model, "lesion_006", clicks)
    assert params["model_path"] == f"{model}.pt"
    assert params["model_epoch"] == 1


def test_models_are_selected_with_conf(tmp_path: Path) -> None:
    with running_server(tmp_path, {"models": "deeplabv3"}, env=NO_SCORING) as url:
        info = MONAILabelClient(url).info()
    assert set(info["models"]) == {"deeplabv3", "uncertainty"} and set(info["trainers"]) == {"deeplabv3"}


def test_a_bad_conf_value_stops_the_server_with_the_option_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="--conf models"), running_server(tmp_path, {"models": "segformer"}):
        pass


@pytest.mark.parametrize("strategy", ["first", "random"])
def test_next_sample_offers_an_unlabelled_image(client: MONAILabelClient, workdir: Path, strategy: str) -> None:
    sample = client.next_sample(strategy, {})
    labelled = {p.stem for p in (workdir / "studies" / "labels" / "final").iterdir()}
    assert sample["id"] and sample["id"] not in labelled
    assert Path(sample["path"]).parent == workdir / "studies"


def test_the_infer_result_estimates_the_masks_quality_and_the_datastore_keeps_it(client: MONAILabelClient) -> None:
    """Issue 17: the predicted IoU of the served mask and the review flag, in the result and in the image's info."""
    _, result = client.infer("unet", "lesion_008", {})
    assert 0.0 <= result["predicted_iou"] <= 1.0 and isinstance(result["review"], bool)
    quality = json.loads((MODEL_DIR / "quality_unet.json").read_text())
    assert result["review"] == (result["predicted_iou"] < quality["threshold"])
    info = client.datastore()["objects"]["lesion_008"]["image"]["info"]
    assert info["predicted_iou"] == result["predicted_iou"] and info["quality_model"] == "unet"
