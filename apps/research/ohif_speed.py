"""How fast a clinician corrects in the browser: the lesion mode's clicks and saves beside OHIF's brush flow.

Starts a private Orthanc with sample-data's photographs (no labels), the app on it (the U-Net and the click model)
and headless Chromium, then prints:

- per click: from the mouse-up to the click model's mask drawn in the viewport (the lesion mode measures it in
  the page), median over ``--clicks`` clicks on one photograph, alternately positive and negative, beside the
  click task's request and a redraw of the viewport with nothing changed (the browser's part, whatever the server);
- per photograph: from opening the worklist to a saved correction (the server lists the new final label), with one
  click in the lesion mode, and with today's brush flow in OHIF's segmentation mode (a brush and an eraser stroke,
  then Export, DICOM SEG, a new series, a name, Save), alternated over ``--flows`` photographs each; the script's
  own reading of the mask or proposal (where a person just looks) is not counted;
- per photograph of a labelling session (the photograph shown, one click, Save and next, the next pick shown, on a
  second copy of sample-data): with the lesion mode's Save and next, which opens the pick in the page, beside the
  same steps with the pick opened by loading the page (as Save and next did before), alternated over ``--steps``.

    python -m apps.research.ohif_speed --clicks 20 --flows 5 --steps 6

Needs Debian's Orthanc and Chromium and ``make viewers``. Timings depend on the machine: run it on a quiet one,
and compare figures of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from apps import dicom_import
from apps import ohif_browser as ob
from apps.orthanc import running_orthanc
from apps.research.local_server import free_port, server_process

CONF = {"models": "unet,deepedit"}  # torch threads: the app's default (every core but one)
REPO = Path(__file__).resolve().parents[2]


def labelled(url: str, image: str) -> bool:
    r = httpx.get(f"{url}/datastore/label", params={"label": image, "tag": "final"}, timeout=120)
    return r.status_code == 200


def wait_labelled(url: str, image: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not labelled(url, image):
        if time.monotonic() > end:
            raise TimeoutError(f"no final label for {image} after {timeout:.0f} s")
        time.sleep(0.1)


def click_latencies(page: Any, url: str, image: str, clicks: int) -> tuple[list[float], list[float]]:
    """Milliseconds from mouse-up to the mask drawn, and of those the click task's request, for ``clicks`` clicks
    around the photograph's mask border."""
    page.goto(f"{url}/lesion/open?image={image}", wait_until="domcontentloaded")
    ob.wait_lesion(page, image)
    ob.press(page, "lesion-segment")
    mask = ob.lesion_mask(page)
    rows, columns = np.nonzero(mask) if mask.any() else (np.array([mask.shape[0] // 2]), np.array([mask.shape[1] // 2]))
    centre = np.array([rows.mean(), columns.mean()])
    rng = np.random.default_rng(0)
    page.evaluate("() => { const s = window.lesionApp.session; s.clickLatencies = []; s.requestLatencies = []; }")
    for k in range(clicks):
        ob.press(page, "lesion-add" if k % 2 == 0 else "lesion-remove")
        angle = rng.uniform(0, 2 * np.pi)
        radius = np.sqrt(mask.sum() / np.pi) * (1.15 if k % 2 == 0 else 0.85)
        row = float(np.clip(centre[0] + radius * np.sin(angle), 2, mask.shape[0] - 3))
        column = float(np.clip(centre[1] + radius * np.cos(angle), 2, mask.shape[1] - 3))
        ob.click_pixel(page, column, row)
        page.wait_for_function(f"() => window.lesionApp.session.clickLatencies.length >= {k + 1}")
    return page.evaluate("() => [window.lesionApp.session.clickLatencies, window.lesionApp.session.requestLatencies]")


#: Milliseconds of ``n`` redraws of the viewport with nothing changed, each to its second animation frame (as a
#: click's mask is timed): the floor of a click's time in this browser, whatever the server does.
JS_REDRAWS = """async (n) => {
  const viewport = window.cornerstone.getRenderingEngines()[0].getViewports()[0];
  const frames = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const took = [];
  for (let k = 0; k < n; k++) {
    const start = performance.now();
    viewport.render();
    await frames();
    took.push(performance.now() - start);
  }
  return took;
}"""


def one_click(page: Any) -> float:
    """A positive click (key Q, then the click) at the centre of the mask on screen (of the photograph when it is
    empty), its mask drawn; returns the seconds the script spent reading the mask, which a person does by looking."""
    looked = time.monotonic()
    mask = ob.lesion_mask(page)
    rows, columns = np.nonzero(mask) if mask.any() else ([mask.shape[0] // 2], [mask.shape[1] // 2])
    looked = time.monotonic() - looked
    page.keyboard.press("q")
    ob.click_pixel(page, float(np.mean(columns)), float(np.mean(rows)))
    return looked


def session_step(page: Any, url: str, in_page: bool) -> tuple[float, dict[str, float] | None]:
    """Seconds from the photograph shown to the annotator's next pick shown, with one click and a save between:
    Save and next in the page (``in_page``, with its phases as the page timed them, ms from the press), or Ctrl+S
    and the pick's link loaded as a new page (None)."""
    start = time.monotonic()
    image = page.evaluate("() => document.body.dataset.lesionReady")
    looked = one_click(page)
    if in_page:
        page.keyboard.press("Control+Enter")
        page.wait_for_function("(was) => (document.body.dataset.lesionReady || was) !== was", arg=image)
    else:
        page.keyboard.press("Control+s")
        wait_labelled(url, image)
        pick = httpx.post(f"{url}/activelearning/random", json={"annotator": "benchmark"}, timeout=120)
        link = httpx.get(f"{url}/lesion/photo", params={"image": pick.json()["id"]}, timeout=120).json()["link"]
        page.goto(f"{url}{link}", wait_until="domcontentloaded")
    ob.wait_lesion(page)
    seconds = time.monotonic() - start - looked
    return seconds, page.evaluate("() => window.lesionApp.session.nextSteps.at(-1)") if in_page else None


def lesion_flow(page: Any, url: str, image: str) -> dict[str, float]:
    """Seconds from opening the worklist to each phase of a saved correction with one click in the lesion mode:
    ``worklist`` shown, the photograph with its mask ``shown``, the ``click``'s mask drawn, ``saved`` (the last
    is the flow's time)."""
    start = time.monotonic()
    phases = {}
    ob.open_worklist(page, url)
    phases["worklist"] = time.monotonic() - start
    ob.open_lesion_from_worklist(page, image)
    phases["shown"] = time.monotonic() - start
    looked = one_click(page)
    phases["click"] = time.monotonic() - start - looked
    page.keyboard.press("Control+s")
    wait_labelled(url, image)
    phases["saved"] = time.monotonic() - start - looked
    return phases


def brush_flow(page: Any, url: str, image: str) -> float:
    """Seconds from opening the worklist to a saved correction with OHIF's brush, eraser and export dialog."""
    start = time.monotonic()
    ob.open_worklist(page, url)
    ob.open_from_worklist(page, image)
    ob.wait_photograph(page)
    ob.wait_segmentation(page)
    looked = time.monotonic()  # where to paint: a person sees it, the script reads the proposal
    proposal = httpx.get(f"{url}/datastore/label", params={"label": image, "tag": "original"}, timeout=60)
    brush, eraser = ob.correction_strokes(ob.png_array(proposal.content)[..., 0] > 0)
    looked = time.monotonic() - looked
    ob.use_tool(page, "Brush", 8)
    ob.drag(page, brush)
    ob.use_tool(page, "Eraser", 8)
    ob.drag(page, eraser)
    ob.save_correction(page)
    wait_labelled(url, image)
    return time.monotonic() - start - looked


def report(url: str, images: list[str], clicks: int, flows: int, steps: int) -> None:
    """Prints the three figures for the server at ``url``: the clicks (which save nothing) on ``images[0]``, the
    worklist flows on ``images[:2 * flows]``, the session on the annotator's picks among the unlabelled rest."""
    with ob.browser() as b:
        page = ob.new_page(b)
        ob.open_worklist(page, url)  # the first pick gets its proposal
        page.evaluate("() => localStorage.setItem('lesion_app.annotator', 'benchmark')")
        drawn, requests = (found[1:] for found in click_latencies(page, url, images[0], clicks + 1))  # 1st: warm-up
        print(
            f"per click, mouse-up to mask drawn: median {statistics.median(drawn):.0f} ms over {len(drawn)} clicks"
            f" (min {min(drawn):.0f}, max {max(drawn):.0f}); the click task's request: median"
            f" {statistics.median(requests):.0f} ms"
        )
        redraw = statistics.median(page.evaluate(JS_REDRAWS, 10))
        print(f"a redraw of the viewport, nothing changed, to its second frame: median {redraw:.0f} ms")
        for image in images[: 2 * flows]:  # both flows start from a proposal, as the worklist's pick does
            httpx.post(f"{url}/proposal/{image}", timeout=300).raise_for_status()
        seconds: dict[str, list[float]] = {"lesion mode, one click": [], "brush flow (OHIF)": []}
        phases = []
        for k in range(flows):  # alternated, so a slowing machine slows both
            phases.append(lesion_flow(page, url, images[2 * k]))
            seconds["lesion mode, one click"].append(phases[-1]["saved"])
            seconds["brush flow (OHIF)"].append(brush_flow(page, url, images[2 * k + 1]))
        if flows:
            print(f"worklist to saved correction, median over {flows} photographs each (alternated):")
        for name, found in seconds.items() if flows else ():
            each = ", ".join(f"{s:.1f}" for s in found)
            print(f"  {name:24s} {statistics.median(found):5.1f} s  ({each})")
        if phases:
            names = {"worklist": "worklist shown", "shown": "photograph and mask shown", "click": "click drawn"}
            found = ", ".join(f"{text} {statistics.median(p[k] for p in phases):.1f} s" for k, text in names.items())
            print(f"  lesion mode, from opening the worklist (medians): {found}")
        if steps:
            session_steps(page, url, steps)


def session_steps(page: Any, url: str, steps: int) -> None:
    """Prints the labelling session's seconds per photograph, Save and next in the page beside a page load."""
    pick = httpx.post(f"{url}/activelearning/random", json={"annotator": "benchmark"}, timeout=120).json()["id"]
    page.goto(f"{url}/lesion/open?image={pick}", wait_until="domcontentloaded")
    ob.wait_lesion(page, pick)
    seconds: dict[str, list[float]] = {"Save and next (in page)": [], "save, then page load": []}
    phases = []
    for k in range(steps):  # alternated, so a slowing machine slows both
        name = "Save and next (in page)" if k % 2 == 0 else "save, then page load"
        took, timed = session_step(page, url, in_page=k % 2 == 0)
        seconds[name].append(took)
        phases += [timed] if timed else []
    print(f"labelling session, photograph shown to the next shown with one click (alternated, {steps} steps):")
    for name, found in seconds.items():
        each = ", ".join(f"{s:.1f}" for s in found)
        print(f"  {name:24s} {statistics.median(found):5.1f} s  ({each})")
    if phases:  # measured in the page: from the press of Save and next
        names = {"saved": "saved", "picked": "next pick known", "shown": "photograph shown", "ready": "mask shown"}
        found = ", ".join(f"{text} {statistics.median(p[k] for p in phases) / 1000:.1f} s" for k, text in names.items())
        print(f"  Save and next, from the press (medians of {len(phases)}): {found}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--flows", type=int, default=5, help="photographs per flow (sample-data has 10: at most 5)")
    parser.add_argument("--steps", type=int, default=6, help="labelling session steps, half of them in the page")
    args = parser.parse_args(argv)
    files = dicom_import.photographs([str(REPO / "sample-data")])
    if len(files) < 2 * args.flows or len(files) <= args.steps:
        parser.error(f"--flows {args.flows} --steps {args.steps}: sample-data has only {len(files)} photographs")
    with tempfile.TemporaryDirectory(prefix="ohif_speed_") as tmp:
        work = Path(tmp)
        with running_orthanc(work / "orthanc", free_port(), work / "orthanc.log") as orthanc:
            images = [d.series_uid for d in dicom_import.import_photographs(files, orthanc.dicomweb, progress=False)]
            for path in files if args.steps else []:  # the session's own copies (other UIDs), unlabelled
                patient = f"session-{path.stem}"
                dicom_import.import_photographs([path], orthanc.dicomweb, patient_id=patient, progress=False)
            env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
            with server_process(work / "server", CONF, env=env, studies_url=orthanc.dicomweb) as server:
                report(server.url, images, args.clicks, args.flows, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
