"""Pictures of the browser loop in headless Chromium: the app's worklist and OHIF 3.13 (served at ``/ohif/``).

They are the README's and docs/ohif.md's pictures::

    lesion-ohif-screenshot http://127.0.0.1:8000 --correction docs/ohif_correction.png --save
    lesion-ohif-screenshot http://127.0.0.1:8000 --worklist docs/ohif_worklist.png
    lesion-ohif-screenshot http://127.0.0.1:8000 --lesion docs/ohif_lesion.png
    lesion-ohif-screenshot http://127.0.0.1:8000 --study <StudyInstanceUID> --out ohif.png

``--lesion`` opens the worklist's next pick (or ``--image``) in the app's lesion mode as a clinician does, asks
for the model's mask (Segment), picks the Add tool and pictures the toolbar with its tooltip and the panel over the
photograph. ``--correction`` opens the pick (or ``--image``) in OHIF's segmentation mode with the model's proposal
loaded, brushes a stroke out of the lesion and erases a part of it, and takes the picture in the
middle of the correction; ``--save`` then stores it (Export, DICOM SEG, "Create new series", Save). ``--study``
shows a study in OHIF's segmentation mode with its photograph's newest SEG, if it has one. A server with auth on
needs ``--token`` (sent with every request). Pictures are PNG, reduced to ``--colours`` colours to stay small.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from apps import ohif_browser as ob
from apps.process_control import stoppable


def save_picture(page: Any, out: str, colours: int, to_content: bool = False) -> None:
    """The page as a PNG with at most ``colours`` colours (0: full colour); ``to_content``: cut below the page's
    content (the worklist), else the whole window."""
    clip = None
    if to_content:
        bottom = page.evaluate("() => Math.ceil(document.body.getBoundingClientRect().bottom) + 16")
        clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": bottom}
    image = Image.open(io.BytesIO(page.screenshot(full_page=to_content, clip=clip))).convert("RGB")
    if colours:
        image = image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)


def proposal_mask(client: httpx.Client, image: str) -> np.ndarray:
    """The model's proposal for ``image`` (made now if it has none), as a (rows, columns) 0/1 mask."""
    client.post(f"/proposal/{image}").raise_for_status()
    r = client.get("/datastore/label", params={"label": image, "tag": "original"})
    r.raise_for_status()
    return (np.asarray(Image.open(io.BytesIO(r.content))) > 0).astype(np.uint8)


def correction(browser: Any, client: httpx.Client, args: argparse.Namespace) -> None:
    """``--correction``: the pick (or ``--image``) opened from the worklist, brushed and erased, pictured, saved."""
    page = ob.new_page(browser, args.token)
    ob.open_worklist(page, args.server)
    image = args.image or page.locator("tr.next").get_attribute("data-image")
    proposal = proposal_mask(client, image)
    if args.image:
        page.reload()  # its row now links to the proposal
    viewer = ob.open_from_worklist(page, image)
    ob.wait_photograph(viewer)
    ob.wait_segmentation(viewer)
    brush, eraser = ob.correction_strokes(proposal)
    ob.use_tool(viewer, "Brush", args.radius)
    ob.drag(viewer, brush)
    ob.use_tool(viewer, "Eraser", args.radius)
    ob.drag(viewer, eraser)
    viewer.mouse.move(*ob.WINDOW.values())
    save_picture(viewer, args.correction, args.colours)
    if args.save:
        reply = ob.save_correction(viewer)
        if reply.status != 200:
            raise RuntimeError(f"OHIF's store request answered {reply.status}")


def lesion(browser: Any, args: argparse.Namespace) -> None:
    """``--lesion``: the pick (or ``--image``) in the lesion mode, segmented, the Add tool chosen, pictured."""
    page = ob.new_page(browser, args.token)
    ob.open_worklist(page, args.server)
    page.evaluate("(name) => localStorage.setItem('lesion_app.annotator', name)", args.annotator)
    image = args.image or page.locator("tr.next").get_attribute("data-image")
    ob.open_lesion_from_worklist(page, image)
    ob.press(page, "lesion-segment")
    ob.press(page, "lesion-add")
    page.locator('[data-cy="lesion-add"]').first.hover()
    page.wait_for_timeout(800)  # the tooltip
    save_picture(page, args.lesion, args.colours)


def study(browser: Any, client: httpx.Client, args: argparse.Namespace) -> None:
    """``--study``: the study in OHIF's segmentation mode with its photograph's newest SEG, pictured."""
    rows = client.get("/worklist.json").raise_for_status().json()["rows"]
    row = next((r for r in rows if r["study"] == args.study), None)
    link = row["segmentation_link"] if row else f"/ohif/segmentation?StudyInstanceUIDs={args.study}"
    page = ob.new_page(browser, args.token)
    page.goto(args.server.rstrip("/") + link, wait_until="domcontentloaded", timeout=90_000)
    ob.wait_photograph(page)
    if row and (row["label"] or row["proposal"]):
        ob.wait_segmentation(page)
    page.mouse.move(*ob.WINDOW.values())
    save_picture(page, args.out, args.colours)


@stoppable
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-ohif-screenshot", description=__doc__.splitlines()[0])
    p.add_argument("server", help="the app's URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--worklist", metavar="PNG", help="a picture of the worklist")
    p.add_argument("--correction", metavar="PNG", help="a picture of a correction in progress in OHIF")
    p.add_argument("--lesion", metavar="PNG", help="a picture of the app's lesion mode with its toolbar")
    p.add_argument("--annotator", default="Dr Example", help="--lesion: the annotator's name (default Dr Example)")
    p.add_argument("--image", help="--correction on this image id (SeriesInstanceUID), not the worklist's pick")
    p.add_argument("--save", action="store_true", help="--correction: then save it as a new SEG")
    p.add_argument("--radius", type=float, default=8.0, help="brush and eraser radius in mm (default 8)")
    p.add_argument("--study", help="a StudyInstanceUID to show in OHIF (with --out)")
    p.add_argument("--out", metavar="PNG", help="the picture of --study")
    p.add_argument("--token", help="bearer token for a server with auth on")
    p.add_argument("--colours", type=int, default=64, help="PNG palette size (0: full colour; default 64)")
    args = p.parse_args(argv)
    if bool(args.study) != bool(args.out) or not (args.worklist or args.correction or args.lesion or args.study):
        p.error("give --worklist, --correction, --lesion, or --study with --out")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        with ob.browser() as browser, httpx.Client(base_url=args.server, headers=headers, timeout=300) as client:
            if args.correction:
                correction(browser, client, args)
            if args.lesion:
                lesion(browser, args)
            if args.worklist:
                page = ob.new_page(browser, args.token)
                ob.open_worklist(page, args.server)
                save_picture(page, args.worklist, args.colours, to_content=True)
            if args.study:
                study(browser, client, args)
    except ob.ChromiumMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for out in (args.correction, args.lesion, args.worklist, args.out):
        if out:
            print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
