"""The browser loop: the app's worklist and OHIF 3.13 (served by the app) in headless Chromium, over a real Orthanc.

One Orthanc, one server (the U-Net and the click model) and one browser for the module. In OHIF's segmentation
mode a clinician opens the strategy's pick with the model's proposal loaded, brushes and erases with the mouse and
saves; the new SEG is on Orthanc, the app takes it as the label (pixels checked against what the mouse did) and a
training run reads it. Photographs are shown upright and unstretched (an EXIF-rotated portrait, a landscape); a
proposal is never a label.

In the app's lesion mode (``/ohif/lesion``) a clinician opens a photograph from the worklist in the same tab, asks
for the model's mask, corrects it with clicks (the click model gets every click and the mask on screen), undoes,
saves (a SEG with the annotator, the photograph's label), saves "no lesion" and goes on to the next pick; what goes
wrong (a click beside the photograph, the server gone during a save, a save refused for want of annotator rights)
says so and loses nothing; Skip opens the next pick without saving. Every request of
those pages goes to the app's own origin.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy import ndimage

from apps import ohif_browser as ob
from apps.orthanc import Orthanc
from apps.research.local_server import Server, server_process
from tests.support.paths import REPO
from tests.support.servers import NO_SCORING
from tests.support.viewers import chromium
from tests.support.waiting import train_and_wait

pytestmark = pytest.mark.server

CONF = {"models": "unet,deepedit", "threads": "1", "train_epochs": "1"}
ENV = NO_SCORING
RADIUS = 8.0  # mm of brush and eraser: pixels at the importer's 1 mm spacing
ANNOTATOR = "Dr Ada Lovelace"
#: Photographs of sample-data with a drawn label: the truth a correction aims at.
LABELLED = ("lesion_000.jpg", "lesion_001.jpg")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def portrait(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], np.ndarray]:
    """A portrait photograph stored on its side with EXIF orientation 6 (a phone's JPEG), imported to Orthanc;
    its mapping row and its upright pixels."""
    from apps import dicom_import

    folder = tmp_path_factory.mktemp("exif")
    with Image.open(REPO / "sample-data" / "lesion_002.jpg") as img:
        upright = img.convert("RGB").transpose(Image.Transpose.ROTATE_270)  # 384 wide, 512 high
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    path = folder / "portrait_exif6.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as img:
        assert img.size == (512, 384)  # stored on its side
        shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    mapping = folder / "uids.csv"
    assert dicom_import.main([str(path), "--stow", orthanc.dicomweb, "--mapping", str(mapping)]) == 0
    with mapping.open(newline="") as f:
        (row,) = csv.DictReader(f)
    return row, shown


@pytest.fixture(scope="module")
def server(
    orthanc: Orthanc, dicom_studies: dict, portrait: tuple, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with server_process(tmp_path_factory.mktemp("ohif"), CONF, env=ENV, studies_url=orthanc.dicomweb) as s:
        yield s


def worklist_rows(server: Server) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{server.url}/worklist.json", timeout=300)
    assert r.status_code == 200, r.text
    return {row["image"]: row for row in r.json()["rows"]}


def mask_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return (np.asarray(Image.open(io.BytesIO(response.content))) > 0).astype(np.uint8)


def seg_series(orthanc: Orthanc, study: str) -> dict[str, str]:
    """SeriesInstanceUID -> SeriesDescription of the study's SEGs on Orthanc."""
    r = httpx.get(f"{orthanc.dicomweb}/studies/{study}/series", params={"Modality": "SEG"}, timeout=30)
    found = r.json() if r.status_code == 200 else []
    return {s["0020000E"]["Value"][0]: s.get("0008103E", {}).get("Value", [""])[0] for s in found}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_a_correction_saved_in_ohif_is_the_label_and_training_reads_it(
    server: Server, orthanc: Orthanc, browser: Any
) -> None:
    page = ob.new_page(browser)
    started = time.monotonic()
    marks: dict[str, float] = {}

    def mark(step: str) -> None:
        marks[step] = round(time.monotonic() - started, 1)

    ob.open_worklist(page, server.url)
    mark("worklist shown")
    pick = page.locator("tr.next").get_attribute("data-image")
    assert page.locator("tr.next td.state").inner_text() == "proposal ready"
    row = worklist_rows(server)[pick]
    proposal_seg = row["proposal"]
    assert 0.0 <= row["predicted_iou"] <= 1.0  # the proposal's quality estimate (issue 17), shown in the row
    shown = page.locator("tr.next td").nth(4).inner_text()
    assert shown.startswith(f"{row['predicted_iou']:.2f}") and ("review" in shown) == row["review"]
    proposal = mask_of(httpx.get(f"{server.url}/datastore/label", params={"label": pick, "tag": "original"}))
    assert httpx.get(f"{server.url}/info/").json()["datastore"]["completed"] == 0  # a proposal is no label

    viewer = ob.open_from_worklist(page, pick)
    ob.wait_photograph(viewer)
    mark("photograph shown")
    assert ob.wait_segmentation(viewer) == int(proposal.sum())  # the proposal, loaded as it was stored
    mark("proposal loaded")
    brush, eraser = ob.correction_strokes(proposal)
    ob.use_tool(viewer, "Brush", RADIUS)
    painted = ob.drag(viewer, brush)
    mark(f"brushed ({len(painted)} mouse events)")
    ob.use_tool(viewer, "Eraser", RADIUS)
    erased = ob.drag(viewer, eraser)
    mark(f"erased ({len(erased)} mouse events)")
    reply = ob.save_correction(viewer)
    assert reply.status == 200
    mark("saved (STOW-RS answered)")
    print(f"from opening the worklist to a saved correction: {marks} s")
    viewer.screenshot(path=str(server.workdir / "ohif_saved.png"))
    assert not [line for line in viewer.console_lines if "pageerror" in line], viewer.console_lines

    # on Orthanc: the correction beside the proposal, which stays
    segs = seg_series(orthanc, row["study"])
    assert segs[proposal_seg] == "lesion_app proposal"
    (correction_seg,) = [uid for uid, name in segs.items() if name == ob.CORRECTION_NAME]
    # the app: labelled with it, and a training run reads it (its process syncs the label file read below)
    row = worklist_rows(server)[pick]
    assert (row["state"], row["label"], row["proposal"]) == ("corrected", correction_seg, proposal_seg)
    details = train_and_wait(server.url)
    counts = re.search(r"training unet from \S+: (\d+) train, (\d+) val", details)
    assert counts and int(counts[1]) == 1, details[-2000:]  # the one correction (too few to hold any out)
    label = mask_of(httpx.get(f"{server.url}/datastore/label", params={"label": pick, "tag": "final"}))
    shape = proposal.shape
    expected = (proposal.astype(bool) | ob.stroke_mask(painted, RADIUS, shape)) & ~ob.stroke_mask(erased, RADIUS, shape)
    score = iou(label, expected)
    print(f"saved label vs proposal + brush - eraser: IoU {score:.4f} ({int(label.sum())} pixels)")
    assert score >= 0.95
    changed = int((expected != proposal.astype(bool)).sum())  # what the strokes should change, whatever the lesion
    assert changed > 500 and int((label.astype(bool) != proposal.astype(bool)).sum()) >= 0.9 * changed


def test_a_proposal_is_stored_on_request_and_is_never_a_label(server: Server, orthanc: Orthanc) -> None:
    rows = worklist_rows(server)
    image = next(i for i, r in sorted(rows.items()) if r["state"] == "no label" and not r["next"])
    made = httpx.post(f"{server.url}/proposal/{image}", timeout=120).json()
    assert made["made"] and made["proposal"]
    again = httpx.post(f"{server.url}/proposal/{image}", timeout=120).json()
    assert not again["made"] and again["proposal"] == made["proposal"]  # reused, not made twice
    replaced = httpx.post(f"{server.url}/proposal/{image}", params={"replace": "true"}, timeout=120).json()
    assert replaced["made"] and replaced["proposal"] != made["proposal"]
    segs = seg_series(orthanc, rows[image]["study"])
    assert {made["proposal"], replaced["proposal"]} <= set(segs)  # nothing is lost
    row = worklist_rows(server)[image]
    assert (row["state"], row["label"], row["proposal"]) == ("proposal ready", None, replaced["proposal"])
    r = httpx.get(f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, timeout=60)
    assert r.status_code == 404
    assert httpx.post(f"{server.url}/proposal/1.2.3.4", timeout=60).status_code == 404


@pytest.mark.parametrize("which", ["portrait, EXIF orientation 6", "landscape"])
def test_photographs_are_shown_upright_and_unstretched(
    server: Server, dicom_studies: dict, portrait: tuple, browser: Any, which: str
) -> None:
    if which == "landscape":
        row = dicom_studies["lesion_005.jpg"]
        with Image.open(REPO / "sample-data" / "lesion_005.jpg") as img:
            photo = np.asarray(img.convert("RGB"))
    else:
        row, photo = portrait
    assert photo.shape[:2] == (int(row["rows"]), int(row["columns"])) and photo.shape[0] != photo.shape[1]
    page = ob.new_page(browser)
    page.goto(f"{server.url}/ohif/segmentation?StudyInstanceUIDs={row['study_uid']}", wait_until="domcontentloaded")
    ob.wait_photograph(page)
    shown, pixel_aspect = ob.displayed_photograph(page, photo.shape[:2])
    page.context.close()

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])

    upright = corr(shown, photo)
    flipped = {"up-down": photo[::-1], "left-right": photo[:, ::-1], "rotated 180": photo[::-1, ::-1]}
    others = {k: round(corr(shown, v), 3) for k, v in flipped.items()}
    print(f"{which}: pixel aspect {pixel_aspect:.4f}, correlation {upright:.3f} upright, {others} otherwise")
    assert abs(pixel_aspect - 1) < 0.01
    assert upright > 0.9 and max(others.values()) < upright - 0.1


def test_missing_viewer_files_are_404_and_routes_are_the_app(server: Server) -> None:
    assert httpx.get(f"{server.url}/ohif/no-such-chunk.js").status_code == 404
    page = httpx.get(f"{server.url}/ohif/segmentation", params={"StudyInstanceUIDs": "1.2"})
    assert page.status_code == 200 and 'window.PUBLIC_URL="/ohif/"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert httpx.get(f"{server.url}/ohif", follow_redirects=False).headers["location"] == "/ohif/"
    assert httpx.get(f"{server.url}/ohif/dicom-web/tools/lookup").status_code == 400  # only DICOMweb passes


# -- the lesion mode ----------------------------------------------------------------------------------------


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """The worklist in a fresh browser context, its annotator given once; afterwards, every request the page
    made went to the app's origin and the mode logged no error."""
    page = ob.watch_requests(ob.new_page(browser))
    ob.open_worklist(page, server.url)
    page.locator("form.who input[name=name]").fill(ANNOTATOR)
    page.locator("form.who button").click()
    assert page.locator('[data-cy="annotator"]').inner_text() == ANNOTATOR
    yield page
    assert ob.foreign_requests(page, server.url) == []
    assert not [line for line in page.console_lines if "lesion" in line.lower() or "pageerror" in line], (
        page.console_lines
    )
    page.context.close()


def truth(name: str) -> np.ndarray:
    with Image.open(REPO / "sample-data" / "labels" / "final" / f"{name.rsplit('.', 1)[0]}.png") as img:
        return (np.asarray(img) > 0).astype(np.uint8)


def final_label(server: Server, image: str) -> np.ndarray:
    return mask_of(httpx.get(f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, timeout=60))


def test_segment_clicks_undo_and_save_from_the_worklist(server: Server, dicom_studies: dict, page: Any) -> None:
    name = LABELLED[0]
    image, want = dicom_studies[name]["series_uid"], truth(name)
    start = page.url
    ob.open_lesion_from_worklist(page, image)
    assert "/ohif/lesion?" in page.url and len(page.context.pages) == 1  # the same tab
    assert ob.panel_text(page, "lesion-quality").startswith("predicted IoU")

    ob.press(page, "lesion-segment")
    served = mask_of(
        httpx.post(f"{server.url}/infer/unet", params={"image": image, "output": "image"}, data={}, timeout=300)
    )
    assert iou(ob.lesion_mask(page), served) > 0.99  # the served model's mask
    assert "longest diameter" in ob.panel_text(page, "lesion-size")

    # the model missed a part (a brush-like edit leaves out the lesion's right third): a positive click there
    right = int(np.percentile(np.nonzero(want)[1], 70))
    missed = want.copy()
    missed[:, right:] = 0
    ob.show_mask(page, missed)
    row, column = np.argwhere(ndimage.binary_erosion(want & ~missed, iterations=3)).mean(0)
    ob.press(page, "lesion-add")
    ob.click_pixel(page, column, row)
    added = ob.lesion_mask(page)
    print(f"positive click: IoU {iou(missed, want):.3f} -> {iou(added, want):.3f}")
    assert iou(added, want) > 0.9 and iou(added, want) > iou(missed, want) + 0.15

    # a false patch beside the lesion: a negative click on it takes it away
    distance = ndimage.distance_transform_edt(~want.astype(bool))
    prow, pcolumn = np.argwhere((distance > 45) & (distance < 50))[0]
    yy, xx = np.mgrid[: want.shape[0], : want.shape[1]]
    patch = (yy - prow) ** 2 + (xx - pcolumn) ** 2 <= 20**2
    ob.show_mask(page, added | patch)
    ob.press(page, "lesion-remove")
    ob.click_pixel(page, pcolumn, prow)
    removed = ob.lesion_mask(page)
    print(f"negative click: {int((removed & patch).sum())} of {int(patch.sum())} patch pixels left")
    assert (removed & patch).sum() < 0.05 * patch.sum() and iou(removed, want) > 0.9
    # both clicks are drawn where they were made: a positive and a negative ring
    clicked = [(True, *ob.page_point(page, column, row)), (False, *ob.page_point(page, pcolumn, prow))]
    assert_markers(ob.click_markers(page), clicked)

    page.keyboard.press("Control+z")  # undo: the patch is back, as before the click, and its ring is gone
    assert np.array_equal(ob.lesion_mask(page), (added | patch).astype(np.uint8))
    assert_markers(ob.click_markers(page), clicked[:1])
    page.keyboard.press("Control+z")
    assert np.array_equal(ob.lesion_mask(page), added)

    with page.expect_response(lambda r: "/lesion/label" in r.url) as saved:
        page.keyboard.press("Control+s")
    assert saved.value.status == 200, saved.value.text()
    page.wait_for_function(ob.JS_LESION_IDLE)
    seg = saved.value.json()["label"]
    assert np.array_equal(final_label(server, image), added)  # the label is the mask on screen
    found = worklist_rows(server)[image]
    assert (found["state"], found["label"], found["annotator"]) == ("corrected", seg, ANNOTATOR)
    assert "Saved" in ob.panel_text(page, "lesion-status")

    page.go_back()  # the browser's back button: the worklist, showing the save
    assert page.url == start
    page.locator(f'tr[data-image="{image}"] td.state', has_text="corrected").wait_for(timeout=30_000)
    assert page.locator(f'tr[data-image="{image}"] td.annotator').inner_text() == ANNOTATOR


def assert_markers(found: list, want: list) -> None:
    """The click rings on the page are the clicks ``want`` ((positive, x, y)), each within 2 page pixels."""
    assert len(found) == len(want), found
    for (positive, x, y), (sign, wx, wy) in zip(found, want):
        assert positive == sign and abs(x - wx) <= 2 and abs(y - wy) <= 2, (found, want)


def test_bad_cases_then_no_lesion_then_save_and_next(
    server: Server, dicom_studies: dict, portrait: tuple, page: Any
) -> None:
    row = dicom_studies[LABELLED[1]]
    image, shape = row["series_uid"], (int(row["rows"]), int(row["columns"]))
    ob.open_lesion_from_worklist(page, image)

    # a click beside the photograph (inside the viewport) sends nothing and changes nothing
    before = ob.lesion_mask(page)
    ob.press(page, "lesion-add")
    sent = len(page.requested)
    ob.click_pixel(page, shape[1] + 30, shape[0] / 2)
    assert not [u for u in page.requested[sent:] if "/infer/" in u]
    assert "outside the photograph" in ob.panel_text(page, "lesion-status")
    assert np.array_equal(ob.lesion_mask(page), before)

    # the server gone during a save: it says so and the mask stays on screen, to save again
    edited = before.copy()
    edited[10:40, 10:40] = 1
    ob.show_mask(page, edited)
    page.route("**/lesion/label**", lambda route: route.abort("connectionrefused"))
    ob.press(page, "lesion-save")
    assert "does not answer" in ob.panel_text(page, "lesion-status")
    assert np.array_equal(ob.lesion_mask(page), edited)
    page.unroute("**/lesion/label**")
    assert worklist_rows(server)[image]["state"] != "corrected"
    page.console_lines.clear()  # the refused connection is the browser's own console error, not the mode's

    # a token without annotator rights: the server's 403 (tests/integration/test_auth.py has the real server refuse
    # a reader's token) is shown with its reason, and the mask stays on screen
    refusal = {"detail": "the token has no monailabel-annotator role"}
    page.route("**/lesion/label**", lambda route: route.fulfill(status=403, json=refusal))
    ob.press(page, "lesion-save")
    assert "(403): the token has no monailabel-annotator role" in ob.panel_text(page, "lesion-status")
    assert np.array_equal(ob.lesion_mask(page), edited)
    page.unroute("**/lesion/label**")
    page.console_lines.clear()  # the browser logs the 403 response itself

    # no lesion: saved at once as an all-zero label, which training reads as "no lesion"
    with page.expect_response(lambda r: "/lesion/label" in r.url) as saved:
        ob.press(page, "lesion-no-lesion")
    assert saved.value.status == 200, saved.value.text()
    assert not final_label(server, image).any()
    assert worklist_rows(server)[image]["state"] == "corrected"

    # save and next: the correction is the label, and the annotator's next pick opens in the same page (no load)
    ob.show_mask(page, truth(LABELLED[1]))
    page.evaluate("() => { window.lesionTestPage = 'not reloaded'; }")
    ob.press(page, "lesion-save-next")
    page.wait_for_function("(was) => (document.body.dataset.lesionReady || was) !== was", arg=image, timeout=60_000)
    ob.wait_lesion(page)
    following = page.evaluate("() => document.body.dataset.lesionReady")
    assert following != image and worklist_rows(server)[following]["state"] != "corrected"
    assert page.evaluate("() => window.lesionTestPage") == "not reloaded" and f"={following}" in page.url
    rows = [*dicom_studies.values(), portrait[0]]  # the pick may be any photograph the server has, the portrait too
    shown = next(r for r in rows if r["series_uid"] == following)  # its own grid, no clicks yet
    assert ob.lesion_mask(page).shape == (int(shown["rows"]), int(shown["columns"])) and ob.click_markers(page) == []
    assert np.array_equal(final_label(server, image), truth(LABELLED[1]))
    # the pick is this annotator's for now: another annotator is handed a different photograph
    other = httpx.post(f"{server.url}/activelearning/random", json={"annotator": "someone else"}, timeout=120)
    assert other.json()["id"] != following

    # skip: the next pick opens in the same tab and the skipped photograph is left as it was
    state = worklist_rows(server)[following]["state"]
    ob.press(page, "lesion-skip")
    page.wait_for_function("(was) => (document.body.dataset.lesionReady || was) !== was", arg=following)
    ob.wait_lesion(page)
    after_skip = page.evaluate("() => document.body.dataset.lesionReady")
    assert after_skip not in (following, image) and len(page.context.pages) == 1
    assert page.evaluate("() => window.lesionTestPage") == "not reloaded"
    assert worklist_rows(server)[following]["state"] == state


def test_the_lesion_route_refuses_bad_saves(server: Server, dicom_studies: dict) -> None:
    image = dicom_studies["lesion_006.jpg"]["series_uid"]
    shape = (int(dicom_studies["lesion_006.jpg"]["rows"]), int(dicom_studies["lesion_006.jpg"]["columns"]))
    data = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(data, "PNG")

    def save(params: str, target: str = image) -> httpx.Response:
        files = {"label": ("label.png", data.getvalue(), "image/png")}
        return httpx.post(f"{server.url}/lesion/label", params={"image": target}, files=files,
                          data={"params": params}, timeout=120)  # fmt: skip

    before = worklist_rows(server)[image]  # an earlier test may have saved this photograph: compare, not assume
    assert save("{}").status_code == 400 and "annotator" in save("{}").text
    assert save('{"annotator": "a\\\\b"}').status_code == 400
    assert save('{"annotator": "Dr Who"}', "1.2.3.4").status_code == 404
    assert save("not json").status_code == 400
    after = worklist_rows(server)[image]
    assert (after["state"], after.get("label")) == (before["state"], before.get("label")), "a refused save changed it"
