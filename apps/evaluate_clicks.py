"""Evaluate click correction as the interactive-segmentation field does: the robot user, NoC@85 and NoC@90.

For each photograph the standard robot user (Xu et al. 2016; Sofiiuk et al., RITM, 2022) clicks up to 20 times,
each time at the pixel of the largest error region farthest from that region's border, positive in missed
lesion, negative in false lesion; IoU is measured at the photograph's original size after 0, 1, 2, ... clicks.
In the same run, as baselines: the automatic model alone (it ignores clicks) and scikit-image's random walker fed
the same robot's clicks on the photograph at the network's size.

Example (the shipped click model on the ISIC validation split and all of PH2, against both baselines)::

    lesion-evaluate-clicks ../shared/data/isic ../shared/data/ph2 --model lesion_app/model/pretrained_deepedit.pt \\
        --auto lesion_app/model/pretrained_unet.pt --random-walker --out docs/clicks

Per data set it prints mean IoU after 0, 1, 2, 3 and 5 clicks, NoC@85, NoC@90 (an image that never gets there
counts 20) and the share never reaching 0.90, with 95% bootstrap intervals; ``--out`` adds a CSV of IoU per
image per click count, the table as Markdown and a PNG of mean IoU against clicks.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.draw import disk
from skimage.segmentation import random_walker

from lesion_app.core.checkpoint import load_model
from lesion_app.core.clicks import (
    CLICK_BRS_ITERATIONS,
    CLICK_PRIOR,
    CLICK_PRIOR_SIGMA,
    CLICK_RADIUS,
    CLICK_ZOOM,
    ClickConfig,
    ClickEffect,
    Point,
    SessionPredictor,
    from_grid,
    never_reached,
    noc,
    robot_session,
)
from lesion_app.core.data import selection_split, split
from lesion_app.core.metrics import bootstrap_ci, paired_difference
from lesion_app.core.predictor import Predictor, Prepared, prepare
from lesion_app.io.images import read_mask
from lesion_app.io.layout import find_pairs

MAX_CLICKS = 20
AT = (0, 1, 2, 3, 5)
#: The random walker's settings, chosen on the selection split (edge weight beta; seed disks of this radius in
#: pixels at the network's size; the image border always seeded as background).
RW_BETA, RW_RADIUS = 4000.0, 6


@dataclass
class Method:
    """One row of the table: a name and, per photograph, the predictor the robot clicks on."""

    name: str
    session: Callable[[Prepared, tuple[int, int]], SessionPredictor]


def model_name(path: str) -> str:
    """A model file's name in the tables: the shipped ones by their model name, others by their file and folder."""
    p = Path(path)
    return p.stem.removeprefix("pretrained_") if p.stem.startswith("pretrained_") else f"{p.parent.name}/{p.stem}"


def click_model(path: str, postprocess: bool, effect: ClickEffect) -> Method:
    """The click model of a model file, through the one click path (:meth:`Predictor.click`): positive clicks'
    regions survive the clean-up and each click has its ``effect`` (f-BRS, prior, seed disk, zoom-in)."""
    network, meta = load_model(path)
    cfg = ClickConfig.of(meta)
    predictor = Predictor([network], postprocess=postprocess)

    def session(prepared: Prepared, original: tuple[int, int]) -> SessionPredictor:
        grid = prepared.image.shape[-2:]

        def predict(fg: list[Point], bg: list[Point], state: Any) -> tuple[np.ndarray, Any]:
            fg, bg = ([from_grid(r, c, grid, original) for r, c in points] for points in (fg, bg))
            result = predictor.click(prepared, fg, bg, cfg, effect, state)
            return result.mask.astype(bool), result.state

        return predict

    return Method(f"{model_name(path)} ({effect.describe()})", session)


def automatic_model(path: str, postprocess: bool) -> Method:
    """An automatic model: the same mask whatever the clicks (the baseline a click must beat)."""
    predictor = Predictor.from_files([path], postprocess=postprocess)

    def session(prepared: Prepared, original: tuple[int, int]) -> SessionPredictor:
        mask = predictor.mask_from(predictor.restore(predictor.batch_probabilities(prepared.batch)[0], original))
        return lambda fg, bg, state: (mask.astype(bool), None)

    return Method(f"{model_name(path)} (automatic)", session)


def random_walker_method(beta: float = RW_BETA, radius: int = RW_RADIUS) -> Method:
    """scikit-image's random walker on the photograph at the network's size, seeded with disks at the clicks and the
    image border as background (a click on the border wins); an empty mask before the first positive click."""

    def session(prepared: Prepared, original: tuple[int, int]) -> SessionPredictor:
        image = np.ascontiguousarray(prepared.image.numpy().transpose(1, 2, 0), dtype=np.float64)
        size = image.shape[:2]
        empty = np.zeros(original, bool)

        def predict(fg: list[Point], bg: list[Point], state: Any) -> tuple[np.ndarray, Any]:
            if not fg:
                return empty, None
            seeds = np.zeros(size, np.int32)
            seeds[0, :] = seeds[-1, :] = seeds[:, 0] = seeds[:, -1] = 2
            for points, value in ((bg, 2), (fg, 1)):
                for r, c in points:
                    rr, cc = disk((r, c), radius + 0.5, shape=size)
                    seeds[rr, cc] = value
            probs = random_walker(
                image, seeds, beta=beta, mode="cg_j", tol=1e-3, channel_axis=-1, return_full_prob=True
            )
            restored = torch.nn.functional.interpolate(
                torch.from_numpy(probs[:1].astype(np.float32))[None], size=original, mode="bilinear"
            )
            return (restored[0, 0] > 0.5).numpy(), None

        return predict

    return Method("random walker", session)


def evaluate(
    methods: list[Method],
    pairs: list[dict[str, str]],
    label: str,
    earlier: dict[str, dict[str, np.ndarray]] | None = None,
    clicks: int = MAX_CLICKS,
) -> dict[str, np.ndarray]:
    """(N, clicks + 1) IoU after 0..``clicks`` clicks per method, each photograph read once; a method whose rows for
    every photograph are in ``earlier`` (method -> photograph id -> row) takes them instead of running again."""
    earlier = earlier or {}
    results = {m.name: np.zeros((len(pairs), clicks + 1)) for m in methods}
    done = {m.name for m in methods if all(p["id"] in earlier.get(m.name, {}) for p in pairs)}
    for name in done:
        results[name][:] = [earlier[name][p["id"]] for p in pairs]
    t0 = time.monotonic()
    for i, pair in enumerate(pairs):
        if len(done) == len(methods):
            break
        prepared = prepare(pair["image"], zoom_source=True)
        truth = read_mask(pair["label"])
        for m in methods:
            if m.name in done:
                continue
            predict = m.session(prepared, prepared.original_size)
            results[m.name][i] = robot_session(predict, truth, prepared.image.shape[-2:], clicks)[0]
        if (i + 1) % 25 == 0 or i + 1 == len(pairs):
            print(f"  {label}: {i + 1}/{len(pairs)} photographs, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return results


def read_earlier(paths: list[str], clicks: int = MAX_CLICKS) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Rows of earlier runs' CSVs: data set -> method -> photograph id -> IoU after 0..``clicks`` clicks (a run of
    more clicks gives its first ones: the robot's clicks do not depend on how many follow; one of fewer, nothing)."""
    rows: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get(f"iou_{clicks}") is None:
                    continue
                ious = np.array([float(row[f"iou_{k}"]) for k in range(clicks + 1)])
                rows.setdefault(row["data"], {}).setdefault(row["method"], {})[row["id"]] = ious
    return rows


def columns(ious: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image values of the table's columns; ``ious`` (N, clicks + 1)."""
    clicks = ious.shape[1] - 1
    out = {f"IoU@{k}": ious[:, k] for k in AT}
    out["NoC@85"] = noc(ious, 0.85, clicks).astype(float)
    out["NoC@90"] = noc(ious, 0.90, clicks).astype(float)
    out["never 0.90"] = never_reached(ious, 0.90, clicks).astype(float)
    return out


def table(dataset: str, results: dict[str, np.ndarray]) -> str:
    """The Markdown table of one data set: means [95% bootstrap interval], and each method against the first."""
    names = list(results)
    head = list(columns(results[names[0]]))
    lines = [f"**{dataset}** (n={len(results[names[0]])})", "", "| method | " + " | ".join(head) + " |"]
    lines.append("|---" * (len(head) + 1) + "|")
    for name, ious in results.items():
        cells = []
        for key, values in columns(ious).items():
            low, high = bootstrap_ci(values)
            fmt = "{:.2f}" if key.startswith("NoC") else "{:.3f}"
            cells.append(f"{fmt.format(values.mean())} [{fmt.format(low)}, {fmt.format(high)}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = names[0]
    clicks = results[first].shape[1] - 1
    for name in names[1:]:
        diffs = []
        for k in (1, 2, 3, 5):
            d = paired_difference(results[first][:, k], results[name][:, k])
            diffs.append(f"@{k} {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
        ahead = int((results[first][:, 1:].mean(0) >= results[name][:, 1:].mean(0)).sum())
        d = paired_difference(noc(results[first], 0.90, clicks), noc(results[name], 0.90, clicks))
        lines.append(
            f"\nIoU of {first} minus {name}: "
            + "; ".join(diffs)
            + f"; as good or better at {ahead}/{clicks} click counts; "
            f"NoC@90 {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
        )
    return "\n".join(lines) + "\n"


def plot(path: Path, everything: dict[str, dict[str, np.ndarray]]) -> None:
    """Mean IoU against clicks, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(everything), figsize=(5.5 * len(everything), 4), squeeze=False)
    for ax, (dataset, results) in zip(axes[0], everything.items()):
        for name, ious in results.items():
            ax.plot(range(ious.shape[1]), ious.mean(0), marker=".", label=name)
        ax.axhline(0.9, color="gray", lw=0.5, ls="--")
        ax.set(title=dataset, xlabel="clicks (robot user)", ylabel="mean IoU at original size", ylim=(0.3, 1.0))
        ax.set_xticks(range(0, next(iter(results.values())).shape[1], 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pairs_of(data: str, which: str, limit: int) -> list[dict[str, str]]:
    """The photographs of one data folder: its validation split (ISIC's 80/20, fixed seed), the selection split
    carved from its training part (where options are chosen), or all of them (``all``)."""
    pairs = find_pairs(data)
    if which == "val":
        pairs = split(pairs, 0.2)[1]
    elif which == "selection":
        pairs = selection_split(pairs)
    return pairs[:limit] if limit else pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-evaluate-clicks", description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="data folders; the first is read at its validation split, the rest whole")
    p.add_argument(
        "--model", required=True, nargs="+", help="click models' files (the first is the one compared with the others)"
    )
    p.add_argument("--auto", help="an automatic model's file, as a baseline")
    p.add_argument("--random-walker", action="store_true", help="scikit-image's random walker, as a baseline")
    p.add_argument("--no-postprocess", action="store_true", help="keep every region the click model gives")
    for option, default, meaning in (
        ("--click-radius", CLICK_RADIUS, "the disk around each click that takes its label, pixels, 0: off"),
        ("--click-prior", CLICK_PRIOR, "the click prior's strength, logits, 0: off"),
        ("--click-prior-sigma", CLICK_PRIOR_SIGMA, "the click prior's Gaussian standard deviation, pixels"),
        ("--click-brs-iterations", CLICK_BRS_ITERATIONS, "L-BFGS iterations of the f-BRS refinement per click, 0: off"),
        ("--click-zoom", CLICK_ZOOM, "RITM's zoom-in (lesion_app.core.zoom.ZoomIn), 1: on, 0: off"),
    ):
        p.add_argument(
            option,
            type=float,
            nargs="+",
            default=[default],
            help=f"{meaning} (default {default:g}); several values of the click options: a row for each combination",
        )
    p.add_argument(
        "--split",
        choices=("val", "selection", "all"),
        default="val",
        help="the first folder's split: val (reported), selection (for choosing options) or all",
    )
    p.add_argument(
        "--earlier",
        nargs="+",
        default=[],
        help="CSVs of earlier runs (--out's): a method named there with rows for every photograph is not run again "
        "(the robot and the networks are deterministic; same code, same rows)",
    )
    p.add_argument("--limit", type=int, default=0, help="only the first N photographs of each data set")
    p.add_argument(
        "--clicks",
        type=int,
        default=MAX_CLICKS,
        help=f"the robot's clicks per photograph (default {MAX_CLICKS}, the field's; fewer, at least {max(AT)}, for a "
        "quick check: NoC is then capped there)",
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="prefix of <out>.csv, <out>.md and <out>.png")
    args = p.parse_args(argv)
    if args.clicks < max(AT):
        p.error(f"--clicks must be at least {max(AT)} (the table shows IoU@{max(AT)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        effects = [  # without a prior its sigma means nothing: one row
            ClickEffect(radius, prior, sigma if prior else CLICK_PRIOR_SIGMA, iterations, zoom)
            for radius, prior, sigma, iterations, zoom in itertools.product(
                args.click_radius, args.click_prior, args.click_prior_sigma, args.click_brs_iterations, args.click_zoom
            )
        ]
        methods = [
            click_model(model, not args.no_postprocess, effect)
            for model in args.model
            for effect in dict.fromkeys(effects)
        ]
        if args.auto:
            methods.append(automatic_model(args.auto, not args.no_postprocess))
        datasets = {
            Path(d).name: pairs_of(d, args.split if i == 0 else "all", args.limit) for i, d in enumerate(args.data)
        }
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"lesion-evaluate-clicks: error: {e}", file=sys.stderr)
        return 2
    if args.random_walker:
        methods.append(random_walker_method())
    earlier = read_earlier(args.earlier, args.clicks)
    everything = {
        name: evaluate(methods, pairs, name, earlier.get(name), args.clicks) for name, pairs in datasets.items()
    }
    report = "\n".join(table(name, results) for name, results in everything.items())
    print(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(report)
        with open(out.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["data", "method", "id", *(f"iou_{k}" for k in range(args.clicks + 1))])
            for name, results in everything.items():
                for method, ious in results.items():
                    for pair, row in zip(datasets[name], ious):
                        writer.writerow([name, method, pair["id"], *(f"{v:.5f}" for v in row)])
        plot(out.with_suffix(".png"), everything)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
