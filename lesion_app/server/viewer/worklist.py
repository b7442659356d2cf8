"""The worklist a clinician opens first: every photograph, its state, its uncertainty, the predicted IoU of the
model's mask with its review flag (:mod:`lesion_app.core.quality`), a link into OHIF.

States: ``no label`` (nothing on the server), ``proposal ready`` (the app's proposal SEG waits to be corrected),
``corrected`` (a correction SEG is its final label). The active-learning strategy's next pick is at the top, with
its proposal made (:mod:`lesion_app.server.proposals`); the rest follow, unlabelled first, most uncertain first.
The pick stays the same on every reload until it is labelled (the newest photograph the strategy handed out and
still unlabelled); ``?next=new`` asks the strategy for another.

Each row opens the app's lesion mode on the photograph in the same tab (``/ohif/lesion?...``: the mode loads the
newest correction, else the proposal, from the app); a second link opens OHIF's own segmentation mode with that SEG
loaded for editing (``SeriesInstanceUIDs=<photo>,<SEG>&hangingProtocolId=@ohif/seg``). The page asks once for the
annotator's name (kept in the browser's ``localStorage``; with auth on, the token's user is the annotator) and
updates its rows from ``/worklist.json`` when the lesion mode saves (a ``BroadcastChannel``) or the page is shown
again (the browser's back button).
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from monailabel.interfaces.datastore import DefaultLabelTag

from lesion_app.server.dicomweb import LesionDicomWebDatastore
from lesion_app.server.dicomweb.listing import SERIES_DESCRIPTION, STUDY_UID, value_of

NO_LABEL, PROPOSAL_READY, CORRECTED = "no label", "proposal ready", "corrected"


@dataclass
class Row:
    """One photograph on the worklist."""

    image: str  # its series UID: the app's image id
    study: str
    name: str  # its SeriesDescription (the file name lesion-dicom-import wrote)
    state: str
    uncertainty: float | None
    link: str  # the lesion mode on it
    segmentation_link: str  # OHIF's segmentation mode on it, its SEG loaded
    next: bool = False  # the strategy's pick
    label: str | None = None  # SEG series UID of its final label
    proposal: str | None = None  # SEG series UID of the app's newest proposal
    notes: list[str] = field(default_factory=list)  # what is odd about its SEGs
    predicted_iou: float | None = None  # the quality estimate of the model's newest mask of it
    review: bool = False  # that estimate is below the review threshold
    size: dict[str, Any] = field(default_factory=dict)  # its final label's area and maximum Feret diameter (issue 28)
    annotator: str | None = None  # who saved its final label


def lesion_link(prefix: str, study: str, image: str) -> str:
    """The app's lesion mode on the photograph alone (it loads the mask from the app)."""
    return f"{prefix}/lesion?{urlencode({'StudyInstanceUIDs': study, 'SeriesInstanceUIDs': image})}"


def ohif_link(prefix: str, study: str, image: str, seg: str | None) -> str:
    """OHIF's segmentation mode on the photograph, with ``seg`` loaded for editing when given."""
    query = {"StudyInstanceUIDs": study}
    if seg:
        query |= {"SeriesInstanceUIDs": f"{image},{seg}", "hangingProtocolId": "@ohif/seg"}
    return f"{prefix}/segmentation?{urlencode(query, safe=',@/')}"


def current_pick(datastore: LesionDicomWebDatastore, strategy: str, unlabelled: list[str]) -> str | None:
    """The unlabelled photograph the strategy handed out last, if any."""
    handed = {i: datastore.get_image_info(i).get("strategy", {}).get(strategy, {}).get("ts", 0) for i in unlabelled}
    best = max(handed, key=lambda i: handed[i], default=None)
    return best if best is not None and handed[best] > 0 else None


def record_pick(datastore: LesionDicomWebDatastore, strategy: str, image: str) -> None:
    """Notes the hand-out as MONAI Label's next-sample endpoint does (strategies weigh by it)."""
    info = datastore.get_image_info(image).get("strategy", {})
    info[strategy] = {"ts": int(time.time()), "client_id": "worklist"}
    datastore.update_image_info(image, {"strategy": info})


def rows(datastore: LesionDicomWebDatastore, prefix: str, pick: str | None) -> list[Row]:
    """Every photograph on the DICOMweb server as a worklist row, the pick first."""
    listing = datastore.listing
    labels, proposals = listing.labels(), listing.proposals()
    notes: dict[str, list[str]] = {}
    for seg in listing.seg_series():
        if seg.image:
            notes.setdefault(seg.image, []).extend(seg.check.problems)
    out = []
    for image, qido in listing.series().items():
        study = value_of(qido, STUDY_UID)
        label, proposal = labels.get(image), proposals.get(image)
        state = CORRECTED if label else PROPOSAL_READY if proposal else NO_LABEL
        info = datastore.get_image_info(image)
        final = datastore.get_label_info(image, DefaultLabelTag.FINAL)
        if label and final.get("SeriesInstanceUID") != label.series:  # a new correction: fetched once, measured
            datastore.get_label_uri(image, DefaultLabelTag.FINAL)
            final = datastore.get_label_info(image, DefaultLabelTag.FINAL)
        current = bool(label) and final.get("SeriesInstanceUID") == label.series
        extra = final.get("notes", []) if current else []
        shown = label or proposal
        out.append(
            Row(
                image=image,
                study=study,
                name=value_of(qido, SERIES_DESCRIPTION) or image,
                state=state,
                uncertainty=info.get("uncertainty"),
                link=lesion_link(prefix, study, image),
                segmentation_link=ohif_link(prefix, study, image, shown.series if shown else None),
                next=image == pick,
                label=label.series if label else None,
                proposal=proposal.series if proposal else None,
                notes=list(dict.fromkeys([*notes.get(image, []), *extra])),
                predicted_iou=info.get("predicted_iou"),
                review=bool(info.get("review", False)),
                size=size_of(final.get("measurements")) if current else {},
                annotator=(label.creator or (final.get("annotator") if current else "")) or None if label else None,
            )
        )
    rank = {NO_LABEL: 0, PROPOSAL_READY: 0, CORRECTED: 1}
    return sorted(out, key=lambda r: (not r.next, rank[r.state], -(r.uncertainty or -1.0), r.name))


#: The measurements the worklist shows, in mm where the spacing is known, else in pixels.
SIZE_KEYS = ("area_mm2", "feret_max_mm", "area_px", "feret_max_px")


def size_of(measured: dict[str, Any] | None) -> dict[str, Any]:
    """The area and maximum diameter of a label's measurements (:mod:`lesion_app.core.measurements`)."""
    return {k: measured[k] for k in SIZE_KEYS if k in (measured or {})}


def size_text(size: dict[str, Any]) -> str:
    """The size as shown: area and maximum diameter in mm (``12.3 mm² / 4.56 mm``), in pixels without a spacing, or
    ``-`` when the label has no measurements (an unreadable SEG)."""
    if "area_mm2" in size and "feret_max_mm" in size:
        return f"{size['area_mm2']:.3g} mm² / {size['feret_max_mm']:.3g} mm"
    if "area_px" in size and "feret_max_px" in size:
        return f"{size['area_px']} px / {size['feret_max_px']:.3g} px"
    return "-"


def as_json(found: list[Row], strategy: str, problems: list[str]) -> dict[str, Any]:
    pick = next((r.image for r in found if r.next), None)
    return {"strategy": strategy, "next": pick, "rows": [asdict(r) for r in found], "problems": problems}


STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}p{margin:4px 0 14px;color:#555}
table{border-collapse:collapse;background:#fff;min-width:760px}
th,td{padding:7px 12px;border-bottom:1px solid #e3e5e8;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}tr.next{background:#fff6d6}
.state{font-weight:600}.no-label{color:#8a5a00}.proposal-ready{color:#0b5cad}.corrected{color:#1d7a33}
a.open{font-weight:600;color:#0b5cad}a.segmentation{font-size:12px;color:#666;margin-left:8px}
.notes{color:#a33;font-size:13px}.uid{color:#888;font-size:12px}
ul.problems{color:#a33;font-size:13px}b.review{color:#a33;margin-left:4px}
form.who{margin:0 0 14px}form.who input{font:inherit;padding:3px 6px}
"""

#: The page's one script: the annotator's name (asked once, kept in the browser) and rows kept current.
SCRIPT = """
(function () {
  var key = "lesion_app.annotator", form = document.querySelector("form.who"), who = document.body.dataset.user;
  localStorage.setItem("lesion_app.strategy", document.body.dataset.strategy);
  if (who) localStorage.setItem(key, who);
  function show() {
    var name = localStorage.getItem(key) || "";
    form.elements.name.value = name;
    document.querySelector("[data-cy=annotator]").textContent = name || "nobody yet";
  }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var name = form.elements.name.value.trim();
    if (name) localStorage.setItem(key, name);
    show();
  });
  if (who) form.hidden = true;
  show();
  function refresh() {
    fetch("/worklist.json?strategy=" + encodeURIComponent(document.body.dataset.strategy), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        data.rows.forEach(function (row) {
          var tr = document.querySelector('tr[data-image="' + row.image + '"]');
          if (!tr) return;
          var state = tr.querySelector("td.state");
          state.textContent = row.state;
          state.className = "state " + row.state.replace(/ /g, "-");
          tr.querySelector("td.annotator").textContent = row.annotator || "-";
        });
      });
  }
  new BroadcastChannel("lesion_app").onmessage = refresh;
  window.addEventListener("pageshow", function (e) { if (e.persisted) refresh(); });
})();
"""


def render(found: list[Row], strategy: str, problems: list[str], user: str = "") -> str:
    """The worklist as an HTML page; ``user`` is the token's user with auth on (the annotator)."""
    e = html.escape
    counts = {s: sum(r.state == s for r in found) for s in (NO_LABEL, PROPOSAL_READY, CORRECTED)}
    lines = []
    for r in found:
        uncertainty = f"{r.uncertainty:.3f}" if isinstance(r.uncertainty, int | float) else "-"
        quality = f"{r.predicted_iou:.2f}" if isinstance(r.predicted_iou, int | float) else "-"
        quality += ' <b class="review">review</b>' if r.review else ""
        badge = " <b>next</b>" if r.next else ""
        notes = f'<div class="notes">{"<br>".join(e(n) for n in r.notes)}</div>' if r.notes else ""
        lines.append(
            f'<tr class="{"next" if r.next else ""}" data-image="{e(r.image)}">'
            f'<td>{e(r.name)}{badge}<div class="uid">{e(r.image)}</div></td>'
            f'<td class="state {r.state.replace(" ", "-")}">{e(r.state)}</td>'
            f'<td class="annotator">{e(r.annotator or "-")}</td>'
            f"<td>{uncertainty}</td>"
            f"<td>{quality}</td>"
            f"<td>{e(size_text(r.size))}</td>"
            f'<td><a class="open" href="{e(r.link)}">Open</a>'
            f'<a class="segmentation" href="{e(r.segmentation_link)}">OHIF segmentation</a>{notes}</td>'
            "</tr>"
        )
    problem_list = "".join(f"<li>{e(p)}</li>" for p in problems)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lesion_app worklist</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body data-strategy="{e(strategy)}" data-user="{e(user)}"><h1>Lesion worklist</h1>
<p>{len(found)} photographs: {e(summary)}. Next pick by the <b>{e(strategy)}</b> strategy on top
(<a href="?strategy={e(strategy)}&amp;next=new">another pick</a>). <b>Open</b> a photograph: Segment, click to add
or remove, brush and erase, then Save (Ctrl+S) or Save and next (Ctrl+Enter). Annotator:
<b data-cy="annotator">{e(user) or "nobody yet"}</b>. Research software: not for clinical use.</p>
<form class="who"><label>Your name (stored with your corrections):
<input name="name" maxlength="64" autocomplete="name" required></label> <button>Keep</button></form>
<table><thead><tr><th>photograph</th><th>state</th><th>annotator</th><th>uncertainty</th><th>predicted IoU</th>
<th>area / max diameter</th><th>open</th></tr></thead>
<tbody>
{chr(10).join(lines)}
</tbody></table>
{f'<h2>Odd SEGs (not used, or used as noted)</h2><ul class="problems">{problem_list}</ul>' if problems else ""}
<script>{SCRIPT}</script>
</body></html>
"""


NEEDS_DICOMWEB = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lesion_app: no worklist for a folder</title>
<style>{style}</style></head><body><h1>The browser needs a DICOMweb studies server</h1>
<p>This server serves a folder of photographs ({studies}): 3D Slicer and the HTTP API use it, but OHIF, the lesion mode
and this worklist read photographs and masks over DICOMweb.</p>
<p>Start one with the sample photographs: <code>make serve</code> (a private Orthanc under <code>workspace/</code>,
filled with sample-data), or for your own folder: <code>make orthanc</code>, then
<code>lesion-dicom-import &lt;folder&gt; --stow http://127.0.0.1:8042/dicom-web</code> and
<code>make serve STUDIES=http://127.0.0.1:8042/dicom-web</code>.</p></body></html>
"""


def needs_dicomweb(studies: str) -> str:
    """The page ``/worklist`` shows when the app serves a folder: what the browser needs and how to start it."""
    return NEEDS_DICOMWEB.format(style=STYLE, studies=html.escape(studies))
