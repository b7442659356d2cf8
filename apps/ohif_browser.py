"""OHIF 3.13 (served by the app at ``/ohif/``) driven in headless Chromium: the steps a clinician takes.

Used by ``lesion-ohif-screenshot`` (the README's pictures) and the browser tests. Chromium is Debian's
(``apt-get install chromium``), driven by Playwright; WebGL runs on SwiftShader, so no GPU is needed. Every wait
is on something OHIF or cornerstone really shows (``window.cornerstone`` and ``window.cornerstoneTools`` are
OHIF's globals), never a fixed sleep:

- :func:`open_worklist`, :func:`open_from_worklist`: the app's worklist and its "OHIF segmentation" link;
- :func:`wait_photograph`, :func:`wait_segmentation`: the photograph drawn; a SEG loaded as an editable labelmap;
- :func:`use_tool`, :func:`drag`: Brush or Eraser with a radius (mm, = pixels at the importer's 1 mm spacing),
  a mouse stroke through image pixels (returned as the image coordinates really sent);
- :func:`save_correction`: the segmentation's menu, Export, DICOM SEG, "Create new series", a name, Save (STOW-RS);
- :func:`displayed_photograph`: the viewport's picture resampled onto the photograph's pixel grid;
- the app's lesion mode (``/ohif/lesion``): :func:`open_lesion_from_worklist`, :func:`wait_lesion`,
  :func:`press` (a toolbar button by id, waiting until its work is done), :func:`click_pixel` (a click on image
  pixel (column, row)), :func:`lesion_mask` and :func:`show_mask` (the labelmap as a (rows, columns) 0/1 array),
  :func:`foreign_requests` (what the page asked of another origin).
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
#: WebGL without a GPU (Chromium's software rasteriser); --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
WINDOW = {"width": 1400, "height": 900}
#: The name a correction is saved under (any name but the proposal's makes it a correction).
CORRECTION_NAME = "lesion correction"

SELECTORS = {
    "canvas": "canvas.cornerstone-canvas",
    "segment_title": '[data-cy="data-row-title"]',
    "brush": '[data-cy="Brush-btn"]',
    "brush_radius": '[data-cy="brush-radius"] input[type="number"]',
    "eraser": '[data-cy="Eraser-btn"]',
    "eraser_radius": '[data-cy="eraser-radius"] input[type="number"]',
    "segmentation_menu": '[data-cy="segmentation-collapsed-more-btn-Labelmap"]',
    "dialog_input": '[data-cy="dialog-input"]',
    "dialog_save": '[data-cy="input-dialog-save-button"]',
    "worklist_row": "tr[data-image]",
}

# The first viewport's image geometry: where image pixel (i, j) is drawn, in page coordinates.
JS_VIEWPORT = """() => {
  const cs = window.cornerstone;
  const engine = cs && cs.getRenderingEngines && cs.getRenderingEngines()[0];
  const vp = engine && engine.getViewports()[0];
  const img = vp && vp.getImageData && vp.getImageData();
  if (!img) return null;
  const r = vp.canvas.getBoundingClientRect(), d = img.dimensions;
  const corners = [[0, 0, 0], [d[0] - 1, 0, 0], [0, d[1] - 1, 0]]
    .map(ijk => vp.worldToCanvas(img.imageData.indexToWorld(ijk)));
  return {rect: [r.left, r.top, r.width, r.height], dims: d, corners: corners, dpr: window.devicePixelRatio};
}"""
JS_TO_PAGE = """(ijs) => {
  const vp = window.cornerstone.getRenderingEngines()[0].getViewports()[0];
  const img = vp.getImageData(), r = vp.canvas.getBoundingClientRect();
  return ijs.map(([i, j]) => { const c = vp.worldToCanvas(img.imageData.indexToWorld([i, j, 0]));
                               return [r.left + c[0], r.top + c[1]]; });
}"""
JS_TO_IMAGE = """(xys) => {
  const vp = window.cornerstone.getRenderingEngines()[0].getViewports()[0];
  const img = vp.getImageData(), r = vp.canvas.getBoundingClientRect();
  return xys.map(([x, y]) => img.imageData.worldToIndex(vp.canvasToWorld([x - r.left, y - r.top])));
}"""
# The active segmentation's labelmap: how many pixels are set (-1: none loaded yet).
JS_LABELMAP_COUNT = """() => {
  const ct = window.cornerstoneTools, cs = window.cornerstone;
  const segs = ct && ct.segmentation.state.getSegmentations();
  if (!segs || !segs.length) return -1;
  const lm = segs[segs.length - 1].representationData.Labelmap;
  const im = lm && lm.imageIds && cs.cache.getImage(lm.imageIds[0]);
  if (!im) return -1;
  const pd = im.getPixelData(); let n = 0;
  for (let k = 0; k < pd.length; k++) if (pd[k]) n++;
  return n;
}"""


class ChromiumMissing(RuntimeError):
    """Debian's Chromium is not installed (and ``LESION_CHROMIUM`` names none)."""


def chromium_binary() -> str:
    """Debian's Chromium (or ``$LESION_CHROMIUM``); ChromiumMissing with the package to install."""
    found = os.environ.get("LESION_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    if not found:
        raise ChromiumMissing("Chromium is not installed; apt-get install chromium (or set LESION_CHROMIUM)")
    return found


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_binary(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Any, token: str | None = None) -> Any:
    """A page in a fresh context (its own storage) of :data:`WINDOW`'s size; tabs it opens share both. With
    ``token``, every request carries it as a bearer token (a server with MONAI Label's auth on)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return watch(browser.new_context(viewport=WINDOW, extra_http_headers=headers).new_page())


def watch(page: Any) -> Any:
    """Keeps the page's console errors in ``page.console_lines``."""
    page.console_lines = []
    page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_lines.append(f"pageerror: {e}"))
    return page


def png_array(data: bytes) -> np.ndarray:
    """A screenshot's PNG bytes as an (H, W, 3) uint8 array."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# -- the worklist -------------------------------------------------------------------------------------------


def open_worklist(page: Any, server: str, timeout_ms: int = 120_000) -> None:
    """The app's worklist page (the strategy's pick gets its proposal while it loads)."""
    page.goto(f"{server.rstrip('/')}/worklist", wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator(SELECTORS["worklist_row"]).first.wait_for(timeout=timeout_ms)


def open_from_worklist(page: Any, image: str) -> Any:
    """Clicks the photograph's "OHIF segmentation" link (OHIF's own segmentation mode, the same tab); returns the
    page."""
    page.locator(f'tr[data-image="{image}"] a.segmentation').click()
    return page


# -- OHIF ---------------------------------------------------------------------------------------------------


def wait_photograph(page: Any, timeout_ms: int = 90_000) -> dict[str, Any]:
    """Waits until the viewport draws the photograph; returns its geometry (:data:`JS_VIEWPORT`)."""
    page.locator(SELECTORS["canvas"]).first.wait_for(state="visible", timeout=timeout_ms)
    page.wait_for_function(JS_VIEWPORT, timeout=timeout_ms)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return page.evaluate(JS_VIEWPORT)


def wait_segmentation(page: Any, segment: str = "lesion", timeout_ms: int = 60_000) -> int:
    """Waits until a SEG is loaded as an editable labelmap with pixels set; returns their count."""
    page.locator(SELECTORS["segment_title"], has_text=segment).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(f"() => ({JS_LABELMAP_COUNT})() > 0", timeout=timeout_ms)
    return labelmap_count(page)


def labelmap_count(page: Any) -> int:
    """How many labelmap segmentations OHIF holds in the page now."""
    return int(page.evaluate(JS_LABELMAP_COUNT))


def use_tool(page: Any, tool: str, radius_mm: float) -> None:
    """Picks ``Brush`` or ``Eraser`` and sets its radius (OHIF's default is 25 mm)."""
    page.locator(SELECTORS[tool.lower()]).click()
    box = page.locator(SELECTORS[f"{tool.lower()}_radius"])
    box.wait_for(state="visible", timeout=10_000)
    box.fill(f"{radius_mm:g}")
    box.press("Enter")


def densify(points: Sequence[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    """A polyline through image (column, row) points with at most ``step`` pixels between successive points."""
    out = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        n = max(1, int(np.ceil(np.hypot(x1 - x0, y1 - y0) / step)))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(1, n + 1)]
    return out


def drag(page: Any, image_points: Sequence[tuple[float, float]], timeout_ms: int = 30_000) -> np.ndarray:
    """One mouse stroke through image (column, row) points with the current tool; waits until the labelmap has
    changed and settled. Returns the (column, row) image coordinates of the mouse positions really sent."""
    xy = [(round(x), round(y)) for x, y in page.evaluate(JS_TO_PAGE, [list(p) for p in image_points])]
    sent = [xy[0]] + [p for q, p in itertools.pairwise(xy) if p != q]
    before = labelmap_count(page)
    page.mouse.move(*sent[0])
    page.mouse.down()
    for point in sent[1:]:
        page.mouse.move(*point)
    page.mouse.up()
    page.wait_for_function(f"(b) => ({JS_LABELMAP_COUNT})() !== b", arg=before, timeout=timeout_ms)
    last = labelmap_count(page)
    while True:  # settled: unchanged over 250 ms
        page.wait_for_timeout(250)
        now = labelmap_count(page)
        if now == last:
            break
        last = now
    ijk = page.evaluate(JS_TO_IMAGE, [list(p) for p in sent])
    return np.array([[p[0], p[1]] for p in ijk])


def stroke_mask(points: np.ndarray, radius: float, shape: tuple[int, int]) -> np.ndarray:
    """The pixels a stroke paints: those whose centre lies within ``radius`` of the path between successive
    mouse positions (cornerstone fills the swept capsule, not only discs at the events)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros(shape, bool)
    for k, (x, y) in enumerate(points):
        x0, y0 = points[k - 1] if k else (x, y)
        dx, dy = x - x0, y - y0
        length2 = dx * dx + dy * dy
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / length2, 0, 1) if length2 > 0 else 0.0
        out |= (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2 <= radius**2
    return out


def correction_strokes(
    proposal: np.ndarray, step: float = 10.0
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """A clinician's typical correction of a (rows, columns) proposal, as image (column, row) polylines: a brush
    stroke from inside its right edge outwards (the model missed a part) and an eraser stroke into it from its
    left edge, a third of the way down (the model took too much). About 60 pixels each."""
    rows, columns = np.nonzero(proposal)
    top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
    h, w = proposal.shape

    def inside(x: float, y: float) -> tuple[float, float]:
        return float(np.clip(x, 12, w - 13)), float(np.clip(y, 12, h - 13))

    middle = float(rows.mean())
    brush = [inside(right - 15, middle), inside(right + 15, middle + 15), inside(right + 40, middle + 25)]
    y = top + (bottom - top) * 0.3
    eraser = [inside(left - 6, y), inside(left + 55, y + 6)]
    return densify(brush, step), densify(eraser, step)


def open_store_dialog(page: Any) -> None:
    """The segmentation's "..." menu, Export, DICOM SEG: OHIF's "Store Segmentation" dialog."""
    page.locator(SELECTORS["segmentation_menu"]).click()
    page.get_by_role("menuitem", name="Export").hover()
    page.get_by_role("menuitem", name="DICOM SEG").click()
    page.get_by_role("dialog").get_by_text("Store Segmentation").wait_for(timeout=10_000)


def save_correction(page: Any, name: str = CORRECTION_NAME, timeout_ms: int = 60_000) -> Any:
    """Stores the segmentation as a new SEG series named ``name`` (STOW-RS through the app); returns the
    Playwright response of the store request. (Saving into the loaded SEG's series, OHIF's default choice,
    also writes a new series, named "Research Derived series".)"""
    open_store_dialog(page)
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").click()
    page.get_by_role("option", name="Create new series").click()
    field = dialog.locator(SELECTORS["dialog_input"])
    page.wait_for_function("(s) => !document.querySelector(s).disabled", arg=SELECTORS["dialog_input"])
    field.fill(name)
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.rstrip("/").endswith("/dicom-web/studies"), timeout=timeout_ms
    ) as stored:
        dialog.locator(SELECTORS["dialog_save"]).click()
    return stored.value


def displayed_photograph(page: Any, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The viewport's picture of the photograph resampled to its (H, W) grid, and the displayed pixel aspect
    (width over height of one image pixel on screen: 1 when nothing is stretched)."""
    page.mouse.move(2, 2)  # no hover outline on the picture
    info = page.evaluate(JS_VIEWPORT)
    shot = png_array(page.locator(SELECTORS["canvas"]).first.screenshot())
    h, w = shape
    (x00, y00), (x10, _), (_, y01) = info["corners"]
    dpr = info["dpr"]
    sx, sy = (x10 - x00) / (w - 1) * dpr, (y01 - y00) / (h - 1) * dpr
    left, top = x00 * dpr - sx / 2, y00 * dpr - sy / 2
    crop = shot[max(0, round(top)) : round(top + sy * h), max(0, round(left)) : round(left + sx * w)]
    shown = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), Image.Resampling.BILINEAR))
    return shown, float(sx / sy)


# -- the app's lesion mode ----------------------------------------------------------------------------------

JS_LESION_READY = "() => document.body && document.body.dataset.lesionReady"
JS_LESION_IDLE = "() => window.lesionApp && window.lesionApp.session.busy === 0"
JS_LESION_MASK = """() => { const s = window.lesionApp.session;
  return {rows: s.rows, columns: s.columns, data: Array.from(s.currentMask())}; }"""


def watch_requests(page: Any) -> Any:
    """Keeps every URL the page requests in ``page.requested`` (all tabs of its context share the list)."""
    page.requested = getattr(page, "requested", [])
    page.context.on("request", lambda r: page.requested.append(r.url))
    return page


def foreign_requests(page: Any, origin: str) -> list[str]:
    """The requests :func:`watch_requests` saw that went anywhere but ``origin`` (``http://host:port``)."""
    prefix = origin.rstrip("/") + "/"
    return [u for u in page.requested if not (u.startswith(prefix) or u.startswith(("data:", "blob:")))]


def wait_lesion(page: Any, image: str | None = None, timeout_ms: int = 120_000) -> None:
    """Waits until the lesion mode shows the photograph (``image``, when given) with its mask loaded."""
    page.wait_for_function(
        f"(want) => ({JS_LESION_READY})() && (!want || document.body.dataset.lesionReady === want)",
        arg=image,
        timeout=timeout_ms,
    )
    page.wait_for_function(JS_LESION_IDLE, timeout=timeout_ms)


def open_lesion_from_worklist(page: Any, image: str, timeout_ms: int = 120_000) -> None:
    """Clicks the photograph's "Open" link on the worklist (the same tab) and waits for the lesion mode."""
    page.locator(f'tr[data-image="{image}"] a.open').click()
    wait_lesion(page, image, timeout_ms)


def press(page: Any, button: str, timeout_ms: int = 120_000) -> None:
    """Clicks the toolbar button with id ``button`` (its ``data-cy``) and waits until the mode is idle."""
    page.locator(f'[data-cy="{button}"]').first.click()
    page.wait_for_timeout(50)
    page.wait_for_function(JS_LESION_IDLE, timeout=timeout_ms)


def click_pixel(page: Any, column: float, row: float, timeout_ms: int = 120_000) -> None:
    """A left click on image pixel (column, row) with the current tool; waits until the mode is idle."""
    page.mouse.click(*page_point(page, column, row))
    page.wait_for_timeout(50)
    page.wait_for_function(JS_LESION_IDLE, timeout=timeout_ms)


def lesion_mask(page: Any) -> np.ndarray:
    """The lesion mode's labelmap as a (rows, columns) uint8 0/1 array."""
    got = page.evaluate(JS_LESION_MASK)
    return np.asarray(got["data"], dtype=np.uint8).reshape(got["rows"], got["columns"])


def show_mask(page: Any, mask: np.ndarray) -> None:
    """Puts a (rows, columns) mask in the lesion mode's labelmap as an edit (undoable), as a brush would."""
    page.evaluate(
        "(m) => window.lesionApp.session.edit(Uint8Array.from(m))",
        [int(v) for v in np.asarray(mask, dtype=np.uint8).ravel()],
    )


def click_markers(page: Any) -> list[tuple[bool, float, float]]:
    """The lesion mode's click markers as (positive, x, y): each ring's centre in page pixels."""
    return page.evaluate(
        """() => [...document.querySelectorAll('[data-cy="lesion-clicks"] circle')].map((c) => {
             const r = c.getBoundingClientRect();
             return [c.dataset.cy === "lesion-click-positive", r.left + r.width / 2, r.top + r.height / 2]; })"""
    )


def page_point(page: Any, column: float, row: float) -> tuple[float, float]:
    """Where image pixel (column, row) of the shown photograph lies on the page, in page pixels."""
    (x, y), *_ = page.evaluate(JS_TO_PAGE, [[float(column), float(row)]])
    return x, y


def panel_text(page: Any, line: str) -> str:
    """One line of the lesion mode's panel over the viewport (``lesion-quality``, ``lesion-status``...)."""
    return page.locator(f'[data-cy="{line}"]').inner_text()
