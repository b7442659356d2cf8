"""Pictures of results: overlays like the paper's Figures 5 and 6, and training curves from the logs.

Examples::

    lesion-figures overlays --model lesion_app/model/pretrained_unet.pt --out docs/overlays_unet.png \\
        sample-data/lesion_004.jpg sample-data/lesion_006.jpg
    lesion-figures curves runs/unet.jsonl runs/deeplabv3.jsonl --out docs/training_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from lesion_app.lib.inference import predict_mask
from lesion_app.lib.models import load_model
from lesion_app.lib.transforms import binarize, to_gray, to_rgb

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


def overlays_figure(model_path: str, images: list[str], out: str, truths: list[str | None] | None = None) -> None:
    network, meta = load_model(model_path)
    truths = truths or [None] * len(images)
    fig, axes = plt.subplots(len(images), 3, figsize=(10, 2.9 * len(images)), squeeze=False)
    for row, (path, truth_path) in enumerate(zip(images, truths)):
        with Image.open(path) as img:
            rgb = np.asarray(to_rgb(img))
        truth = None
        if truth_path:
            with Image.open(truth_path) as t:
                truth = binarize(np.asarray(to_gray(t))).astype(bool)
        pred = predict_mask(network, path)
        panels = [rgb, pred * 255, overlay(rgb, pred, truth)]
        titles = [
            "(a) input",
            "(b) predicted mask",
            "(c) overlay" + (" (green: ground truth)" if truth is not None else ""),
        ]
        for ax, panel, title in zip(axes[row], panels, titles):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{Path(path).name}: {title}" if title.startswith("(a)") else title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{Path(model_path).name} (validation IoU {meta.get('val', {}).get('iou', float('nan')):.3f})")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overlays", help="input, predicted mask and overlay for each image")
    o.add_argument("images", nargs="+")
    o.add_argument("--model", required=True)
    o.add_argument("--truths", nargs="*", help="ground-truth masks, in the order of the images")
    o.add_argument("--out", required=True)
    c = sub.add_parser("curves", help="training curves from lesion-train --log files")
    c.add_argument("logs", nargs="+")
    c.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.what == "overlays":
        if args.truths and len(args.truths) != len(args.images):
            p.error("give one ground-truth mask per image, or none")
        overlays_figure(args.model, args.images, args.out, args.truths)
    else:
        curves_figure(args.logs, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
