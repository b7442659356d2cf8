"""Open a study in OHIF (served by the MONAI Label server) in headless Chromium and take pictures of it.

OHIF's plain viewer (``/ohif/viewer``) shows a dermoscopic photograph from the DICOMweb server and, once its
DICOM SEG thumbnail is opened, the lesion mask the server saved over it. Pictures come from Debian's Chromium
(``apt-get install chromium``) driven by Playwright; WebGL runs on SwiftShader, so no GPU is needed::

    lesion-ohif-screenshot http://127.0.0.1:8000 --study <StudyInstanceUID> --out docs/ohif_viewer.png

The tests use :func:`study_pictures` to check that the photograph and the mask are really on screen.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from apps.process_control import stoppable

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
#: WebGL without a GPU (Chromium's software rasteriser); --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWPORT_CANVAS = "canvas.cornerstone-canvas"


class ChromiumMissing(RuntimeError):
    pass


def chromium_binary() -> str:
    found = os.environ.get("LESION_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    if not found:
        raise ChromiumMissing("Chromium is not installed; apt-get install chromium (or set LESION_CHROMIUM)")
    return found


@contextmanager
def browser_page(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A Playwright page in Debian's Chromium; the console is kept in ``page.console_lines``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_binary(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.console_lines = []
            page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page.console_lines.append(f"pageerror: {e}"))
            yield page
        finally:
            browser.close()


@dataclass
class StudyPictures:
    image: np.ndarray  # the viewport canvas showing the photograph, (H, W, 3)
    with_seg: np.ndarray | None  # the same canvas after opening the SEG, (H, W, 3)
    page: np.ndarray  # the whole window at the end, for people to look at


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def open_study(page: Any, server: str, study: str, mode: str = "viewer", timeout_ms: int = 90_000) -> None:
    """Loads OHIF's ``mode`` for the study and waits until the photograph is drawn."""
    url = f"{server.rstrip('/')}/ohif/{mode}?StudyInstanceUIDs={study}"
    page.goto(url, wait_until="networkidle", timeout=timeout_ms)
    page.locator(VIEWPORT_CANVAS).first.wait_for(state="visible", timeout=timeout_ms)
    with contextlib.suppress(Exception):  # the "investigational use" banner covers the viewport; newer builds lack it
        page.get_by_text("Confirm and Hide").first.click(timeout=10_000)
    page.wait_for_timeout(1500)  # the first frame is drawn after the canvas appears


def open_segmentation(page: Any, timeout_ms: int = 60_000) -> None:
    """Opens the study's DICOM SEG (its thumbnail in the study panel) over the photograph."""
    page.get_by_text("SEG", exact=True).first.dblclick(timeout=timeout_ms)
    with contextlib.suppress(Exception):  # "Do you want to open this Segmentation?" over the viewport: yes
        page.get_by_role("button", name="Yes").first.click(timeout=15_000)
    page.wait_for_timeout(4000)  # OHIF fetches the SEG, builds the labelmap and redraws


def canvas_picture(page: Any) -> np.ndarray:
    return _png(page.locator(VIEWPORT_CANVAS).first.screenshot())


def study_pictures(server: str, study: str, with_seg: bool = True, out: str | None = None) -> StudyPictures:
    with browser_page() as page:
        open_study(page, server, study)
        image = canvas_picture(page)
        seg = None
        if with_seg:
            open_segmentation(page)
            seg = canvas_picture(page)
        whole = _png(page.screenshot())
        if out:
            Image.fromarray(whole).save(out)
    return StudyPictures(image, seg, whole)


def displayed_region(canvas: np.ndarray, background: int = 8) -> tuple[slice, slice]:
    """Rows and columns of the canvas the photograph covers: the viewport around it is black, and the few
    lit pixels of OHIF's text overlay (date, series, orientation letters) do not make a row or column lit."""
    lit = canvas.max(axis=2) > background
    rows = np.flatnonzero(lit.mean(axis=1) > 0.5)
    cols = np.flatnonzero(lit.mean(axis=0) > 0.5)
    if not len(rows) or not len(cols):
        raise ValueError("the viewport is blank")
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def on_image_grid(canvas: np.ndarray, region: tuple[slice, slice], size: tuple[int, int]) -> np.ndarray:
    """The displayed part of a canvas picture resampled to the photograph's (H, W)."""
    crop = np.ascontiguousarray(canvas[region])
    return np.asarray(Image.fromarray(crop).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def overlay_mask(before: np.ndarray, after: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    """Pixels the segmentation overlay changed (OHIF tints and outlines the labelmap), as a boolean mask."""
    change = np.abs(after.astype(np.float32) - before.astype(np.float32)).sum(axis=2)
    return change > threshold


@stoppable
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-ohif-screenshot", description=__doc__.splitlines()[0])
    p.add_argument("server", help="MONAI Label server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--study", required=True, help="StudyInstanceUID (lesion-dicom-import's mapping CSV has them)")
    p.add_argument("--out", required=True, help="PNG of the browser window")
    p.add_argument("--no-seg", action="store_true", help="the photograph only, without opening its SEG")
    args = p.parse_args(argv)
    try:
        study_pictures(args.server, args.study, with_seg=not args.no_seg, out=args.out)
    except ChromiumMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
