"""Clicks as 3D Slicer's SmartEdit sends them, against the real server serving the shipped click model.

The plugin (``onClickDeepgrow`` of ``monailabel/plugins/slicer/MONAILabel/MONAILabel.py``, monailabel 0.8.5) sends
``foreground`` and ``background`` as ``[i, j, k]`` points on the single-slice volume ITK makes of the photograph
(i: column, j: row of the stored pixel grid, k = 0), ``label``, ``slice`` and the model's ``config``, and loads the
``.nrrd`` result. The photograph is drawn so the automatic mask misses a pale lobe of the lesion and includes a
dark patch of skin beside it; the same photograph is also uploaded stored sideways with EXIF orientation 6, where
the stored grid Slicer clicks on is not the upright one the model sees.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import itk
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from PIL import Image
from scipy import ndimage

from apps.make_sample_data import draw_study
from apps.research.local_server import running_server
from lesion_app.core.clicks import ClickConfig, ClickEffect
from lesion_app.core.predictor import Predictor
from tests.support.paths import MODEL_DIR
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server

SHAPE = (240, 360)  # (H, W) of the upright photograph
SOURCES = {"clicks_png": ".png", "clicks_exif": ".jpg"}


def asymmetric_study(seed: int = 203) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An upright (H, W, 3) photograph and its boolean regions: ``truth`` (the lesion with its pale lobe to the
    right), ``lobe`` (the pale part the automatic model misses) and ``patch`` (dark skin to the left, not lesion)."""
    rng = np.random.default_rng(seed)
    img, mask = draw_study(rng, SHAPE)
    img, mask = img.astype(np.float64), mask.astype(bool)
    ys, xs = np.nonzero(mask)
    cy, cx, ry, rx = ys.mean(), xs.mean(), np.ptp(ys) / 2, np.ptp(xs) / 2
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    skin = np.median(img[~ndimage.binary_dilation(mask, iterations=10)], axis=0)
    lesion = np.median(img[mask], axis=0)
    lobe = (((yy - cy) / (ry * 0.6)) ** 2 + ((xx - (cx + rx * 0.9)) / (rx * 0.6)) ** 2 < 1) & ~mask
    img[lobe] = 0.55 * skin + 0.45 * lesion + rng.normal(0, 4, (int(lobe.sum()), 3))
    patch = (((yy - cy) / (ry * 0.45)) ** 2 + ((xx - (cx - rx * 1.05)) / (rx * 0.45)) ** 2 < 1) & ~mask & ~lobe
    img[patch] = lesion * 0.8 + rng.normal(0, 4, (int(patch.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), {"truth": mask | lobe, "lobe": lobe, "patch": patch}


def centre(region: np.ndarray) -> tuple[int, int]:
    """The (row, col) of a region farthest from its border (where the robot user clicks)."""
    distance = ndimage.distance_transform_edt(region)
    r, c = np.unravel_index(int(distance.argmax()), distance.shape)
    return int(r), int(c)


def to_stored(mask: np.ndarray, name: str) -> np.ndarray:
    """An upright (H, W) array on the stored grid of source ``name`` (Slicer's and the NRRD result's grid)."""
    return np.rot90(mask, 1) if name == "clicks_exif" else mask


def slicer_point(row: int, col: int, name: str) -> list[int]:
    """An upright (row, col) as the [i, j, k] control point Slicer sends for it on the stored grid."""
    if name == "clicks_exif":  # stored = upright turned a quarter counter-clockwise: (r, c) -> (W - 1 - c, r)
        row, col = SHAPE[1] - 1 - col, row
    return [col, row, 0]


def coverage(mask: np.ndarray, region: np.ndarray) -> float:
    return float((mask.astype(bool) & region).sum() / region.sum())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def study() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return asymmetric_study()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, study: tuple) -> Iterator[MONAILabelClient]:
    """One server (the click model only) with the photograph uploaded upright (PNG) and sideways (EXIF JPEG)."""
    workdir = tmp_path_factory.mktemp("slicer_clicks")
    img, _ = study
    (workdir / "sources").mkdir()
    with running_server(workdir, {"models": "deepedit"}, env=NO_SCORING) as url:
        client = MONAILabelClient(url, tmpdir=str(workdir / "client"))
        Image.fromarray(img).save(workdir / "sources" / "clicks_png.png")
        exif = Image.Exif()
        exif[0x0112] = 6  # as phones write: stored turned a quarter, shown upright
        sideways = Image.fromarray(img).transpose(Image.Transpose.ROTATE_90)
        sideways.save(workdir / "sources" / "clicks_exif.jpg", quality=98, exif=exif.tobytes())
        for name, suffix in SOURCES.items():
            client.upload_image(str(workdir / "sources" / f"{name}{suffix}"), image_id=name)
        yield client


def smartedit(client: MONAILabelClient, name: str, foreground: list, background: list, **extra: object) -> np.ndarray:
    """One SmartEdit request as the plugin makes it; the result's (H, W) mask on the stored grid."""
    config = client.info()["models"]["deepedit"].get("config", {})
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}
    params.update(label="lesion", foreground=foreground, background=background, slice=0)
    params.update(result_extension=".nrrd", result_dtype="uint8", **extra)
    result_file, result = client.infer("deepedit", name, params)
    assert result_file.endswith(".nrrd") and result["clicks"] == {
        "foreground": len(foreground),
        "background": len(background),
    }
    volume = itk.array_from_image(itk.imread(result_file))
    return volume.reshape(volume.shape[-2:])


def test_info_offers_the_click_model_to_smartedit(client: MONAILabelClient) -> None:
    model = client.info()["models"]["deepedit"]
    assert model["type"] == "deepedit" and model["dimension"] == 2 and model["labels"] == {"lesion": 1}


@pytest.mark.parametrize("name", list(SOURCES))
def test_a_positive_click_on_the_missed_lobe_adds_it(client: MONAILabelClient, study: tuple, name: str) -> None:
    _, regions = study
    lobe, truth = to_stored(regions["lobe"], name), to_stored(regions["truth"], name)
    automatic = smartedit(client, name, [], [])
    clicked = smartedit(client, name, [slicer_point(*centre(regions["lobe"]), name)], [])
    assert automatic.shape == clicked.shape == truth.shape
    assert coverage(automatic, lobe) < 0.65, "the automatic mask already has the lobe: the test shows nothing"
    assert coverage(clicked, lobe) > coverage(automatic, lobe) + 0.2
    assert iou(clicked, truth) > iou(automatic, truth)


@pytest.mark.parametrize("name", list(SOURCES))
def test_a_negative_click_on_the_dark_patch_takes_from_it(client: MONAILabelClient, study: tuple, name: str) -> None:
    _, regions = study
    patch = to_stored(regions["patch"], name)
    automatic = smartedit(client, name, [], [])
    clicked = smartedit(client, name, [], [slicer_point(*centre(regions["patch"]), name)])
    assert coverage(automatic, patch) > 0.7, "the automatic mask leaves the patch out: the test shows nothing"
    assert coverage(clicked, patch) < coverage(automatic, patch) - 0.08
    untouched = ~ndimage.binary_dilation(patch, iterations=30)
    assert iou(clicked[untouched], automatic[untouched]) > 0.9  # the click acts where it was placed


def test_a_negative_click_inside_the_lesion_opens_a_hole_there(client: MONAILabelClient, study: tuple) -> None:
    """The clean-up fills a lesion's holes, but not the one a clinician cut with a negative click."""
    _, regions = study
    row, col = centre(regions["truth"])
    automatic = smartedit(client, "clicks_png", [], [])
    clicked = smartedit(client, "clicks_png", [], [slicer_point(row, col, "clicks_png")])
    assert automatic[row, col] == 1, "the automatic mask has no lesion where the click goes: the test shows nothing"
    assert clicked[row, col] == 0
    hole = ndimage.binary_fill_holes(clicked) & ~clicked.astype(bool)
    assert hole[row, col]  # a hole inside the mask, not a cut from its edge
    assert iou(clicked | hole, automatic) > 0.95  # the rest of the mask is as it was


def test_the_sideways_photograph_gives_the_same_mask_turned(client: MONAILabelClient, study: tuple) -> None:
    _, regions = study
    point = centre(regions["lobe"])
    upright = smartedit(client, "clicks_png", [slicer_point(*point, "clicks_png")], [])
    sideways = smartedit(client, "clicks_exif", [slicer_point(*point, "clicks_exif")], [])
    assert iou(to_stored(upright, "clicks_exif"), sideways) > 0.95
    assert iou(upright, np.rot90(sideways, -1)) > 0.95 and upright.shape == SHAPE


@pytest.mark.parametrize(
    "params",
    [
        {"foreground": [[400, 10, 0]]},  # past the right edge of the 360-column photograph
        {"foreground": [[10]]},  # not [i, j, k]
        {"background": [[10, 10, 2]]},  # on another slice
        {"background": "10,10,0"},
        {"foreground": [[10, 10, 0]], "slice": 3},  # the photograph is one slice
        {"foreground": [[10, 10, 0]], "roi": "everything"},
        {"foreground": [[10, 10, 0]], "click_radius": -3},
        {"foreground": [[10, 10, 0]], "click_prior": "strong"},
        {"foreground": [[10, 10, 0]], "click_prior_sigma": 0},
        {"foreground": [[10, 10, 0]], "click_brs_iterations": 2.5},
        {"foreground": [[10, 10, 0]], "click_zoom": 2},
        {"foreground": [[c, 10, 0] for c in range(60)], "background": [[c, 200, 0] for c in range(41)]},  # 101 points
    ],
)
def test_bad_clicks_are_a_400_and_the_server_keeps_serving(client: MONAILabelClient, params: dict) -> None:
    base = {"foreground": [], "background": [], "result_extension": ".nrrd"}
    with pytest.raises(MONAILabelClientException) as error:
        client.infer("deepedit", "clicks_png", {**base, **params})
    assert "Status: 400" in error.value.msg, error.value.msg
    assert smartedit(client, "clicks_png", [], []).any()  # and the next request is answered


def test_a_box_limits_the_mask(client: MONAILabelClient, study: tuple) -> None:
    _, regions = study
    r, c = centre(regions["truth"])
    box = [c - 30, c + 30, r - 20, r + 20, 0, 0]  # [i0, i1, j0, j1, k0, k1] as Slicer's ROI gives it
    mask = smartedit(client, "clicks_png", [slicer_point(r, c, "clicks_png")], [], roi=box)
    rows, cols = np.nonzero(mask)
    assert mask.any() and rows.min() >= r - 20 and rows.max() <= r + 20 and cols.min() >= c - 30
    assert cols.max() <= c + 30


def test_other_requests_are_answered_while_clicks_are_replayed(client: MONAILabelClient) -> None:
    """90 new points cost 90 network passes (the previous-mask chain is replayed); meanwhile /info, which Slicer polls,
    is answered: the inference runs off the server's event loop (MONAI Label's own endpoint blocks it)."""
    url = client.get_server_url()
    points = [[40 + 3 * (n % 30), 40 + 5 * (n // 30), 0] for n in range(90)]
    params = {"label": "lesion", "foreground": points, "background": [], "slice": 0, "result_extension": ".nrrd"}
    params["click_brs_iterations"] = 0  # 90 network passes without f-BRS: seconds, not minutes, on a loaded machine
    slow: dict[str, object] = {}

    def replayed_click() -> None:
        form = {"params": json.dumps(params)}
        slow["response"] = httpx.post(f"{url}/infer/deepedit", params={"image": "clicks_png"}, data=form, timeout=300)
        slow["at"] = time.monotonic()

    worker = threading.Thread(target=replayed_click)
    worker.start()
    time.sleep(0.5)  # the request is in
    info = httpx.get(f"{url}/info/", timeout=300)
    answered = time.monotonic()
    worker.join(timeout=300)
    assert info.status_code == 200 and "deepedit" in info.json()["models"]
    assert isinstance(slow.get("response"), httpx.Response) and slow["response"].status_code == 200
    assert answered + 1.0 < slow["at"], "/info waited for the inference"


def test_a_photograph_replaced_under_its_id_is_read_again(
    client: MONAILabelClient, study: tuple, tmp_path: Path
) -> None:
    """A click session keeps the prepared photograph between clicks; a photograph removed and uploaded again under the
    same id (mirrored here) is read again: the click on the mirrored lesion gives the mirrored mask (f-BRS off: it is
    the photograph that is checked)."""
    img, regions = study
    quick = {"click_brs_iterations": 0}
    r, c = centre(regions["truth"])
    for name, picture in (("before", img), ("after", np.ascontiguousarray(img[:, ::-1]))):
        Image.fromarray(picture).save(tmp_path / f"{name}.png")
    client.upload_image(str(tmp_path / "before.png"), image_id="clicks_swap")
    before = smartedit(client, "clicks_swap", [slicer_point(r, c, "clicks_png")], [], **quick)
    again = smartedit(client, "clicks_swap", [slicer_point(r, c, "clicks_png")], [], **quick)
    assert before.any() and np.array_equal(again, before)  # the same click again, from the kept photograph
    assert httpx.delete(f"{client.get_server_url()}/datastore/", params={"id": "clicks_swap"}).status_code == 200
    client.upload_image(str(tmp_path / "after.png"), image_id="clicks_swap")
    after = smartedit(client, "clicks_swap", [slicer_point(r, SHAPE[1] - 1 - c, "clicks_png")], [], **quick)
    assert iou(after, before[:, ::-1]) > 0.9 > iou(before, before[:, ::-1])


def png_base64(mask: np.ndarray, mode: str = "L", data_url: bool = False) -> str:
    """A (H, W) 0/1 mask as the base64 PNG a browser sends as ``previous_mask``."""
    buffer = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).convert(mode).save(buffer, "PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{text}" if data_url else text


@pytest.fixture(scope="module")
def local_predictor() -> Predictor:
    """The shipped click model in this process, on the one prediction path the server uses."""
    return Predictor.from_files([Path(MODEL_DIR) / "pretrained_deepedit.pt"])


def local_click(predictor: Predictor, photo: Path, positive: tuple[int, int], previous: np.ndarray) -> np.ndarray:
    """The mask the click model makes for one positive upright click with ``previous`` (upright, photograph size)
    as its previous mask, computed here on the one click path."""
    prepared = predictor.prepare(photo, zoom_source=True)
    cfg, effect = ClickConfig.of(predictor.metas[0]), ClickEffect(brs_iterations=0)
    return predictor.click(prepared, [positive], [], cfg, effect, previous).mask


def test_a_sent_previous_mask_is_what_the_click_refines(
    client: MONAILabelClient, study: tuple, local_predictor: Predictor, tmp_path: Path
) -> None:
    """A browser sends the mask it shows as ``previous_mask``: the network reads it instead of the server's own
    state, so the answer is the one the network gives for that previous mask (computed here on the same path, f-BRS
    off to keep it short), on the stored grid of a sideways photograph too."""
    img, regions = study
    point = centre(regions["lobe"])
    effect = {f"click_{k}": v for k, v in dataclasses.asdict(ClickEffect(brs_iterations=0)).items()}
    Image.fromarray(img).save(tmp_path / "photo.png")
    own = smartedit(client, "clicks_png", [slicer_point(*point, "clicks_png")], [], **effect)
    answers = {}
    for name, previous in (("empty", np.zeros(SHAPE, bool)), ("patch", regions["patch"] | regions["truth"])):
        sent = smartedit(
            client, "clicks_png", [slicer_point(*point, "clicks_png")], [], previous_mask=png_base64(previous), **effect
        )
        assert np.array_equal(sent, local_click(local_predictor, tmp_path / "photo.png", point, previous))
        answers[name] = sent
    assert not np.array_equal(answers["empty"], answers["patch"]), "the previous mask changed nothing"
    assert not np.array_equal(answers["patch"], own), "the answer is the server's own state's"
    sideways = smartedit(
        client,
        "clicks_exif",
        [slicer_point(*point, "clicks_exif")],
        [],
        previous_mask=png_base64(to_stored(regions["patch"] | regions["truth"], "clicks_exif"), "1", data_url=True),
        **effect,
    )
    assert iou(sideways, to_stored(answers["patch"], "clicks_exif")) > 0.95


def bad_previous_masks() -> dict[str, object]:
    jpeg = io.BytesIO()
    Image.new("L", SHAPE[::-1]).save(jpeg, "JPEG")
    png = base64.b64decode(png_base64(np.zeros(SHAPE, bool)))
    return {
        "not text": 5,
        "not base64": "not base64 at all!",
        "a JPEG": base64.b64encode(jpeg.getvalue()).decode(),
        "truncated": base64.b64encode(png[: len(png) // 2]).decode(),
        "upright, not stored": png_base64(np.zeros(SHAPE, bool)),  # for the sideways photograph (stored 240x360)
        "too small": png_base64(np.zeros((SHAPE[0] // 2, SHAPE[1] // 2), bool)),
        "palette": png_base64(np.zeros(SHAPE, bool), "P"),
    }


@pytest.mark.parametrize("case", list(bad_previous_masks()))
def test_a_bad_previous_mask_is_a_400_naming_it(client: MONAILabelClient, case: str) -> None:
    name = "clicks_exif" if case.startswith("upright") else "clicks_png"
    params = {"foreground": [[10, 10, 0]], "background": [], "result_extension": ".nrrd"}
    with pytest.raises(MONAILabelClientException) as error:
        client.infer("deepedit", name, {**params, "previous_mask": bad_previous_masks()[case]})
    assert "Status: 400" in error.value.msg and "previous_mask" in error.value.msg, error.value.msg
    assert smartedit(client, name, [], []).any()  # and the next request is answered
