"""OHIF, served by the MONAI Label server, in a real browser (Debian's Chromium, headless, via Playwright).

The server reads and writes a real Orthanc; a label saved through the server becomes a DICOM SEG there; OHIF's
plain viewer shows the photograph and, once the SEG is opened, the lesion mask over it. Pictures of the
viewport are compared with the photograph and the saved mask on the photograph's own pixel grid.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from apps import ohif
from apps.orthanc import Orthanc
from apps.research.local_server import Server, server_process
from lesion_app.io.images import read_mask, to_rgb
from tests.support.paths import REPO
from tests.support.viewers import need

pytestmark = pytest.mark.server

CONF = {"models": "unet", "threads": "1"}
ENV = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return ohif.chromium_binary()
    except ohif.ChromiumMissing as e:
        need(str(e))


@pytest.fixture(scope="module")
def server(orthanc: Orthanc, dicom_studies: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_process(tmp_path_factory.mktemp("ohif"), CONF, env=ENV, studies_url=orthanc.dicomweb) as s:
        yield s


def png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def save_final(url: str, image: str, mask: np.ndarray) -> None:
    files = {"label": ("label.png", png(mask), "image/png")}
    r = httpx.put(f"{url}/datastore/label", params={"image": image, "tag": "final"}, files=files, timeout=120)
    assert r.status_code == 200, r.text


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def check_viewer(server: Server, row: dict, photo: Path, mask: np.ndarray, picture: Path) -> float:
    """OHIF shows this photograph and, after opening its SEG, this mask over it; returns the overlay's IoU with
    the mask (an asymmetric mask also shows that nothing is flipped)."""
    pictures = ohif.study_pictures(server.url, row["study_uid"], out=str(picture))
    region = ohif.displayed_region(pictures.image)
    before = ohif.on_image_grid(pictures.image, region, mask.shape)
    after = ohif.on_image_grid(pictures.with_seg, region, mask.shape)
    with Image.open(photo) as img:
        expected = np.asarray(to_rgb(img)).astype(np.float32)
    shown = before.astype(np.float32)
    assert np.corrcoef(shown.ravel(), expected.ravel())[0, 1] > 0.9  # the photograph is on screen, upright
    overlay = ohif.overlay_mask(before, after)
    score = iou(overlay, mask)
    flipped = max(iou(overlay, m) for m in (mask[::-1], mask[:, ::-1], mask[::-1, ::-1]))
    print(f"{photo.name}: overlay IoU {score:.3f} (best flip {flipped:.3f})")
    assert flipped < score
    return score


def test_plain_viewer_shows_the_photograph_and_the_servers_segmentation(
    server: Server, dicom_studies: dict, chromium: str
) -> None:
    row = dicom_studies["lesion_000.jpg"]
    r = httpx.post(
        f"{server.url}/infer/unet", params={"image": row["series_uid"], "output": "image"}, json={}, timeout=120
    )
    assert r.status_code == 200
    proposal = np.asarray(Image.open(io.BytesIO(r.content))) > 0  # the model's mask, accepted as it is
    assert iou(proposal, read_mask(REPO / "sample-data/labels/final/lesion_000.png")) > 0.8
    save_final(server.url, row["series_uid"], proposal)
    score = check_viewer(server, row, REPO / "sample-data/lesion_000.jpg", proposal, server.workdir / "ohif_000.png")
    assert score > 0.9


def test_an_asymmetric_label_lands_where_it_was_drawn(server: Server, dicom_studies: dict, chromium: str) -> None:
    row = dicom_studies["lesion_005.jpg"]  # 512 wide, 384 high
    h, w = int(row["rows"]), int(row["columns"])
    mask = np.zeros((h, w), np.uint8)
    mask[30 : h // 2, 40:110] = 1  # an L in the top-left quarter
    mask[h // 2 - 50 : h // 2, 40 : w // 2] = 1
    save_final(server.url, row["series_uid"], mask)
    score = check_viewer(server, row, REPO / "sample-data/lesion_005.jpg", mask, server.workdir / "ohif_005.png")
    assert score > 0.9
    assert max(iou(mask, m) for m in (mask[::-1], mask[:, ::-1], mask[::-1, ::-1])) < 0.1  # flips miss it


@pytest.mark.parametrize("name", ["lesion_000.jpg", "lesion_002.jpg"])  # with a SEG, and without
def test_monai_label_mode_cannot_draw_a_single_frame_photograph(
    server: Server, dicom_studies: dict, chromium: str, name: str
) -> None:
    """Why OHIF's MONAI Label mode stays black for dermoscopy (README, "OHIF"): its layout is three volume
    (MPR) viewports. A study with only the photograph matches no display set for them; with a SEG, the
    one-frame volume gives the ray caster a NaN step count, its shader does not compile and the viewports
    fail. If a newer OHIF build draws the photograph, this test fails: update the README."""
    if name == "lesion_000.jpg":  # its sample-data label, saved as a SEG (again, if another test saved one)
        save_final(
            server.url, dicom_studies[name]["series_uid"], read_mask(REPO / "sample-data/labels/final/lesion_000.png")
        )
    with ohif.browser_page() as page:
        url = f"{server.url}/ohif/monai-label?StudyInstanceUIDs={dicom_studies[name]['study_uid']}"
        page.goto(url, wait_until="networkidle", timeout=90_000)
        page.wait_for_timeout(6000)
        pictures = [ohif._png(c.screenshot()) for c in page.locator(ohif.VIEWPORT_CANVAS).all() if c.is_visible()]
        console = "\n".join(page.console_lines)
    lit = [float((p.max(axis=2) > 8).mean()) for p in pictures]
    assert all(f < 0.3 for f in lit), lit  # the photograph (two thirds of a viewport) is in none; buttons may be
    if name == "lesion_000.jpg":
        assert "'NaN' : undeclared identifier" in console
