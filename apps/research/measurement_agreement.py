"""How far the automatic measurements can be trusted: each measurement of a model's mask against the expert's.

On the first ``--count`` photographs of a data folder's validation split (ISIC's 80/20, fixed seed, as every
evaluation here), each photograph is segmented by the automatic model as served (clean-up on, no flips) and by the
click model after 1 and 3 clicks of the standard robot user (:func:`lesion_app.core.clicks.robot_session`, the
server's click options); every mask and the expert's are measured (:func:`lesion_app.core.measurements.measure`,
pixels: the ISIC photographs carry no calibration). Per measurement it prints the mean absolute difference and the
mean relative difference (absolute difference over the expert's value, where that is not 0) with 95% bootstrap
intervals (2,000 resamples of the photographs, percentile). Example::

    python -m apps.research.measurement_agreement ../shared/data/isic --count 100 > table.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apps.evaluate_clicks import automatic_model, click_model, pairs_of
from lesion_app.core.clicks import ClickEffect, robot_session
from lesion_app.core.measurements import COLUMNS, measure, photograph_rgb
from lesion_app.core.predictor import prepare
from lesion_app.io.images import read_mask
from lesion_app.lib.settings import LesionSettings, shipped_model

#: The measurements compared (every numeric one, in pixels).
COMPARED = tuple(k for k in COLUMNS if k not in ("spacing", "spacing_mm") and not k.endswith(("_mm", "_mm2")))
CLICKS = (1, 3)
RESAMPLES = 2000


def masks_of(pair: dict[str, str], auto: Any, clicks: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The expert's mask and the compared masks of one photograph: automatic, and after each of :data:`CLICKS`."""
    prepared = prepare(pair["image"])
    truth = read_mask(pair["label"])
    found = {"automatic": auto.session(prepared, prepared.original_size)([], [], None)[0]}
    seen: list[np.ndarray] = []

    def predict(fg: list, bg: list, state: Any) -> tuple[np.ndarray, Any]:
        mask, new = session(fg, bg, state)
        seen.append(mask)
        return mask, new

    session = clicks.session(prepared, prepared.original_size)
    robot_session(predict, truth, prepared.image.shape[-2:], max(CLICKS))
    for k in CLICKS:  # the robot stops once the mask is perfect: its last mask stands
        found[f"{k} click{'s' if k > 1 else ''}"] = seen[min(k, len(seen) - 1)]
    return truth, found


def interval(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile of the bootstrapped mean)."""
    means = values[rng.integers(0, len(values), (RESAMPLES, len(values)))].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(name: str, rows: list[tuple[dict, dict]]) -> str:
    """A Markdown table of one method: per measurement, mean absolute and relative differences with intervals."""
    rng = np.random.default_rng(0)
    lines = [
        f"**{name}** ({len(rows)} photographs)",
        "",
        "| measurement | expert's mean | mean absolute difference [95% CI] | mean relative difference [95% CI] |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in COMPARED:
        pairs = [(m[key], t[key]) for m, t in rows if key in m and key in t]
        if not pairs:
            continue
        found, truth = (np.array(x, dtype=np.float64) for x in zip(*pairs))
        absolute = interval(np.abs(found - truth), rng)
        keep = truth != 0
        relative = interval(np.abs(found - truth)[keep] / np.abs(truth[keep]), rng) if keep.any() else None
        rel = f"{100 * relative[0]:.1f}% [{100 * relative[1]:.1f}, {100 * relative[2]:.1f}]" if relative else "-"
        lines.append(
            f"| `{key}` | {truth.mean():.3g} | {absolute[0]:.3g} [{absolute[1]:.3g}, {absolute[2]:.3g}] | {rel} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="measurement_agreement", description=__doc__.splitlines()[0])
    p.add_argument("data", help="a data folder (images/ + masks/), e.g. ../shared/data/isic")
    p.add_argument("--count", type=int, default=100, help="the first N photographs of the validation split")
    p.add_argument("--model", default=str(shipped_model("unet")), help="the automatic model (default: served unet)")
    p.add_argument("--click-model", default=str(shipped_model("deepedit")), help="the click model")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    effect = ClickEffect.of(LesionSettings().click_options)
    auto, clicks = automatic_model(args.model, postprocess=True), click_model(args.click_model, True, effect)
    pairs = pairs_of(args.data, "val", args.count)
    results: dict[str, list[tuple[dict, dict]]] = {}
    t0 = time.monotonic()
    for i, pair in enumerate(pairs, 1):
        rgb = photograph_rgb(pair["image"])
        truth, masks = masks_of(pair, auto, clicks)
        expert = measure(truth, None, rgb)
        for name, mask in masks.items():
            results.setdefault(name, []).append((measure(mask, None, rgb), expert))
        if i % 10 == 0 or i == len(pairs):
            print(f"  {i}/{len(pairs)} photographs, {time.monotonic() - t0:.0f} s", file=sys.stderr)
    print(f"{Path(args.data).name} validation split, first {len(pairs)} photographs; pixels")
    for name, rows in results.items():
        label = f"{Path(args.model).stem} {name}" if name == "automatic" else f"{Path(args.click_model).stem}, {name}"
        print(f"\n{table(label, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
