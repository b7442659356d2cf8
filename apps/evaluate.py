"""Evaluate model files on a folder of images and masks, at each photograph's original size.

Example (the validation split the shipped models were selected on)::

    lesion-evaluate ../shared/data/isic --split val lesion_app/model/pretrained_unet.pt
    lesion-evaluate ../shared/data/ph2 --split all lesion_app/model/pretrained_*.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lesion_app.lib.data import find_pairs, split
from lesion_app.lib.inference import predict_mask
from lesion_app.lib.metrics import mean_scores, score
from lesion_app.lib.models import load_model
from lesion_app.lib.transforms import binarize, to_gray

COLUMNS = ("iou", "dice", "accuracy", "sensitivity", "specificity", "thresholded_iou")


def read_truth(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return binarize(np.asarray(to_gray(img))).astype(bool)


def evaluate(model_path: str, pairs: list[dict[str, str]], progress: bool = True) -> dict[str, float]:
    network, _ = load_model(model_path)
    scores = []
    t0 = time.monotonic()
    for i, pair in enumerate(pairs, 1):
        scores.append(score(predict_mask(network, pair["image"]), read_truth(pair["label"])))
        if progress and (i % 50 == 0 or i == len(pairs)):
            print(f"  {Path(model_path).name}: {i}/{len(pairs)} images, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return {"n": len(scores), **mean_scores(scores)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder of images and masks")
    p.add_argument("models", nargs="+", help="model files")
    p.add_argument("--split", choices=("val", "train", "all"), default="val", help="which part of the 80/20 split")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="only the first N images of the split")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = find_pairs(args.data)
    if args.split != "all":
        train, val = split(pairs, args.val_fraction, args.seed)
        pairs = val if args.split == "val" else train
    pairs = pairs[: args.limit] if args.limit else pairs
    results = {m: evaluate(m, pairs) for m in args.models}
    print(f"| model ({Path(args.data).name}, {args.split}, n={len(pairs)}) | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for model, r in results.items():
        print(f"| {Path(model).name} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
