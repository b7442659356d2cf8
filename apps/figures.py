"""Pictures of results: overlays (the paper's Figures 5 and 6), metric charts (Figures 7 and 8), training curves.

Examples::

    lesion-figures overlays --model lesion_app/model/pretrained_unet.pt --out docs/overlays_unet.png \\
        sample-data/lesion_004.jpg sample-data/lesion_006.jpg
    lesion-figures metrics isic.json ph2.json --rows unet unet_noatt --out docs/metrics.png
    lesion-figures curves runs/unet.jsonl runs/deeplabv3.jsonl --out docs/training_curves.png
    lesion-figures simulation runs/a/simulation.csv runs/b/simulation.csv --out docs/simulation.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries

from apps.research.simulation_results import markdown, merge, plot, read_csv, verdicts
from lesion_app.core.predictor import Predictor
from lesion_app.io.images import open_image, read_mask, to_rgb

PRED_COLOUR = np.array([255, 40, 40], float)
TRUTH_COLOUR = np.array([40, 255, 80], float)


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.35) -> np.ndarray:
    """The photograph with the prediction tinted red, its border solid red, and the truth's border green."""
    out = image.astype(float)
    pred = pred.astype(bool)
    out[pred] = (1 - alpha) * out[pred] + alpha * PRED_COLOUR
    out[find_boundaries(pred, mode="inner")] = PRED_COLOUR
    if truth is not None:
        out[find_boundaries(truth.astype(bool), mode="inner")] = TRUTH_COLOUR
    return out.clip(0, 255).astype(np.uint8)


def overlays_figure(
    model_paths: list[str],
    images: list[str],
    out: str,
    truths: list[str | None] | None = None,
    tta: bool = False,
    postprocess: bool = False,
) -> None:
    """One row per photograph: input, predicted mask, overlay (with the truth's contour and IoU when known)."""
    predictor = Predictor.from_files(model_paths, tta=tta, postprocess=postprocess)
    truths = truths or [None] * len(images)
    fig, axes = plt.subplots(len(images), 3, figsize=(10, 2.9 * len(images)), squeeze=False)
    for row, (path, truth_path) in enumerate(zip(images, truths)):
        with open_image(path) as img:
            rgb = np.asarray(to_rgb(img))
        truth = None
        if truth_path:
            truth = read_mask(truth_path)
        pred = predictor.mask(path)
        panels = [rgb, pred * 255, overlay(rgb, pred, truth)]
        iou = ""
        if truth is not None:
            union = np.count_nonzero(pred.astype(bool) | truth)
            iou = f", IoU {np.count_nonzero(pred.astype(bool) & truth) / union if union else 1.0:.3f}"
        titles = [
            "(a) input",
            "(b) predicted mask",
            "(c) overlay" + (f" (green: ground truth{iou})" if truth is not None else ""),
        ]
        for ax, panel, title in zip(axes[row], panels, titles):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{Path(path).name}: {title}" if title.startswith("(a)") else title, fontsize=9)
            ax.axis("off")
    names = " + ".join(Path(m).name for m in model_paths)
    options = "".join(f", {o}" for o, on in (("flip TTA", tta), ("clean-up", postprocess)) if on)
    fig.suptitle(f"{names}{options}")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def curves_figure(logs: list[str], out: str) -> None:
    """Training loss and validation IoU per epoch, one line per log (``lesion-train --log``)."""
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 3.6))
    for log in logs:
        rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker=".", label=Path(log).stem)
        ax_iou.plot(epochs, [r["val"]["iou"] for r in rows], marker=".", label=Path(log).stem)
    ax_loss.set(xlabel="epoch", ylabel="hybrid loss (train)", title="training loss")
    ax_iou.set(xlabel="epoch", ylabel="mean per-image IoU", title="validation IoU (256x256)")
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def metrics_figure(summaries: list[str], out: str, rows: list[str] | None = None) -> None:
    """IoU and pixel accuracy with 95% intervals, grouped by data set (``lesion-evaluate --json`` files)."""
    loaded = [json.loads(Path(s).read_text()) for s in summaries]
    names = rows or list(loaded[0]["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(names)
    for ax, metric, label in zip(axes, ("iou", "accuracy"), ("mean per-image IoU", "pixel accuracy")):
        for i, name in enumerate(names):
            xs, means, errs = [], [], [[], []]
            for j, summary in enumerate(loaded):
                row = summary["rows"].get(name)
                if row is None:
                    continue
                m = row[metric]
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                means.append(m["mean"])
                errs[0].append(m["mean"] - m["ci_low"])
                errs[1].append(m["ci_high"] - m["mean"])
            bars = ax.bar(xs, means, width, yerr=errs, capsize=3, label=name)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xticks(range(len(loaded)), [f"{s['data']} ({s['split']}, n={s['n']})" for s in loaded])
        ax.set(ylabel=label, title=f"{label} (95% bootstrap CI)")
        low = min(r[metric]["ci_low"] for s in loaded for n, r in s["rows"].items() if n in names)
        ax.set_ylim(max(0.0, low - 0.05), 1.0)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, 0.08, 1.0, 1.0))
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-figures", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overlays", help="input, predicted mask and overlay for each image")
    o.add_argument("images", nargs="+")
    o.add_argument("--model", required=True, nargs="+", help="model file(s); several are averaged")
    o.add_argument("--truths", nargs="*", help="ground-truth masks, in the order of the images")
    o.add_argument("--tta", action="store_true", help="average the four flips")
    o.add_argument("--postprocess", action="store_true", help="keep the largest region, fill holes")
    o.add_argument("--out", required=True)
    m = sub.add_parser("metrics", help="IoU and accuracy bars with intervals from lesion-evaluate --json files")
    m.add_argument("summaries", nargs="+")
    m.add_argument("--rows", nargs="*", help="which rows (models) to show, in this order (default: all)")
    m.add_argument("--out", required=True)
    c = sub.add_parser("curves", help="training curves from lesion-train --log files")
    c.add_argument("logs", nargs="+")
    c.add_argument("--out", required=True)
    sim = sub.add_parser(
        "simulation",
        help="one active-learning curve from lesion-simulate CSVs of alike runs; prints each strategy against "
        "random, seed by seed",
    )
    sim.add_argument("csvs", nargs="+")
    sim.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.what == "overlays":
        if args.truths and len(args.truths) != len(args.images):
            p.error("give one ground-truth mask per image, or none")
        overlays_figure(args.model, args.images, args.out, args.truths, args.tta, args.postprocess)
    elif args.what == "metrics":
        metrics_figure(args.summaries, args.out, args.rows)
    elif args.what == "simulation":
        try:
            results = merge([read_csv(c) for c in args.csvs])
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        plot(Path(args.out), results)
        print(markdown(results), *verdicts(results), sep="\n")
    else:
        curves_figure(args.logs, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
