"""Evaluate model files on a folder of images and masks, at each photograph's original size.

Example (the shipped models on the ISIC validation split, each alone and as an ensemble, with and without
flip test-time augmentation and mask clean-up)::

    lesion-evaluate ../shared/data/isic --split val lesion_app/model/pretrained_*.pt --ensemble \\
        --options plain tta+post --csv scores.csv --json summary.json --markdown table.md

Per image: IoU, Dice, pixel accuracy, sensitivity, specificity and ISIC 2018's thresholded Jaccard
(IoU below 0.65 counts 0). Means come with 95% percentile-bootstrap intervals over images;
``--compare A B`` adds the paired IoU difference of two rows on the same images.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lesion_app.core.checkpoint import load_model
from lesion_app.core.data import split
from lesion_app.core.metrics import bootstrap_ci, paired_difference, score
from lesion_app.core.predictor import DEFAULT_SPATIAL_SIZE, Predictor
from lesion_app.io.images import read_mask
from lesion_app.io.layout import find_pairs

COLUMNS = ("iou", "dice", "accuracy", "sensitivity", "specificity", "thresholded_iou")
OPTIONS = {"plain": (False, False), "tta": (True, False), "post": (False, True), "tta+post": (True, True)}


@dataclass(frozen=True)
class Candidate:
    """One row of the table: which models are averaged, and with which options."""

    name: str
    members: tuple[int, ...]
    tta: bool
    postprocess: bool


def candidates(model_names: list[str], options: list[str], ensemble: list[str] | None) -> list[Candidate]:
    """Rows for each model and option; ``ensemble`` names the models to average (empty: all of them)."""
    groups = [(name, (i,)) for i, name in enumerate(model_names)]
    if ensemble is not None:
        members = ensemble or model_names
        unknown = sorted(set(members) - set(model_names))
        if unknown or len(members) < 2:
            raise ValueError(f"--ensemble needs two or more of {model_names}, got {members}")
        groups.append(("ensemble(" + "+".join(members) + ")", tuple(model_names.index(m) for m in members)))
    rows = []
    for name, members in groups:
        for opt in options:
            tta, post = OPTIONS[opt]
            rows.append(Candidate(name if opt == "plain" else f"{name} +{opt}", members, tta, post))
    return rows


@torch.inference_mode()
def score_images(
    networks: list[nn.Module],
    rows: list[Candidate],
    pairs: list[dict[str, str]],
    spatial_size: tuple[int, int] = DEFAULT_SPATIAL_SIZE,
    threshold: float = 0.5,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Per-image scores of every row, decoding each photograph once and running each network once per option.

    The rows share one :class:`~lesion_app.core.predictor.Predictor` over every network; an ensemble row averages
    its members' probabilities exactly as the server's ensemble task does.
    """
    predictor = Predictor(networks, spatial_size, threshold=threshold)
    options = sorted({r.tta for r in rows})
    results: dict[str, list[dict[str, Any]]] = {r.name: [] for r in rows}
    t0 = time.monotonic()
    for k, pair in enumerate(pairs, 1):
        prepared = predictor.prepare(pair["image"])
        truth = read_mask(pair["label"])
        members = {tta: predictor.member_probabilities(prepared.batch, tta) for tta in options}
        for row in rows:
            probs = torch.stack([members[row.tta][m][0] for m in row.members]).mean(0)
            mask = predictor.mask_from(predictor.restore(probs, prepared.original_size), postprocess=row.postprocess)
            if mask.shape != truth.shape:
                raise ValueError(f"{pair['label']}: mask size {truth.shape} differs from image size {mask.shape}")
            results[row.name].append({"id": pair["id"], **score(mask, truth).as_dict()})
        if progress and (k % 50 == 0 or k == len(pairs)):
            print(f"  {k}/{len(pairs)} images, {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    return results


def summarize(per_image: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Mean and 95% bootstrap interval of each metric."""
    out: dict[str, Any] = {"n": len(per_image)}
    for c in COLUMNS:
        values = [r[c] for r in per_image]
        low, high = bootstrap_ci(values, seed=seed)
        out[c] = {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high}
    return out


def markdown(title: str, summary: dict[str, dict[str, Any]], comparisons: list[dict[str, Any]]) -> str:
    head = ["model", "n", "IoU", "Dice", "accuracy", "sensitivity", "specificity", "thresholded IoU"]
    lines = [f"**{title}** (mean [95% CI])", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, s in summary.items():
        cells = [f"{s[c]['mean']:.3f} [{s[c]['ci_low']:.3f}, {s[c]['ci_high']:.3f}]" for c in COLUMNS]
        lines.append(f"| {name} | {s['n']} | " + " | ".join(cells) + " |")
    for c in comparisons:
        lines.append("")
        lines.append(
            f"IoU of {c['a']} minus {c['b']}: {c['mean']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] "
            f"({'significant' if c['ci_low'] > 0 or c['ci_high'] < 0 else 'not significant'} at 95%)"
        )
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, per_image: dict[str, list[dict[str, Any]]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "id", *COLUMNS])
        writer.writeheader()
        for name, rows in per_image.items():
            for r in rows:
                writer.writerow({"model": name, **{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()}})


def select(data: str, which: str, val_fraction: float, seed: int, limit: int) -> list[dict[str, str]]:
    pairs = find_pairs(data)
    if which != "all":
        train, val = split(pairs, val_fraction, seed)
        pairs = val if which == "val" else train
    return pairs[:limit] if limit else pairs


def model_name(path: str, taken: set[str]) -> str:
    """A row name from the file name, minus the ``pretrained_`` prefix; unique within the run."""
    name = Path(path).name.removesuffix(".pt").removeprefix("pretrained_")
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-evaluate", description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder of images and masks")
    p.add_argument("models", nargs="+", help="model files")
    p.add_argument("--split", choices=("val", "train", "all"), default="val", help="which part of the 80/20 split")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="only the first N images of the split")
    p.add_argument("--options", nargs="+", choices=sorted(OPTIONS), default=["plain"], help="rows per model")
    p.add_argument("--ensemble", nargs="*", metavar="NAME", help="also score the average of these models (none: all)")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"), help="paired IoU A - B")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--csv", help="per-image scores")
    p.add_argument("--json", help="means, intervals and comparisons")
    p.add_argument("--markdown", help="the table, as printed")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pairs = select(args.data, args.split, args.val_fraction, args.seed, args.limit)
        taken: set[str] = set()
        names = [model_name(m, taken) for m in args.models]
        loaded = [load_model(m) for m in args.models]
        clicked = [m for m, (_, meta) in zip(args.models, loaded) if "clicks" in meta]
        if clicked:
            raise ValueError(f"{', '.join(clicked)}: a click model; evaluate it with lesion-evaluate-clicks")
        networks = [network for network, _ in loaded]
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"error: no image/mask pairs in {args.data} ({args.split})", file=sys.stderr)
        return 2
    try:
        rows = candidates(names, args.options, args.ensemble)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    unknown = sorted({n for pair in args.compare for n in pair} - {r.name for r in rows})
    if unknown:
        print(f"error: --compare names unknown rows {unknown}; rows are {[r.name for r in rows]}", file=sys.stderr)
        return 2
    per_image = score_images(networks, rows, pairs, threshold=args.threshold)
    summary = {name: summarize(scores, args.seed) for name, scores in per_image.items()}
    comparisons = [
        {"a": a, "b": b, **paired_difference([r["iou"] for r in per_image[a]], [r["iou"] for r in per_image[b]])}
        for a, b in args.compare
    ]
    title = f"{Path(args.data).name}, {args.split} split, n={len(pairs)}"
    table = markdown(title, summary, comparisons)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.csv:
        write_csv(args.csv, per_image)
    if args.json:
        payload = {
            "data": str(Path(args.data).name),
            "split": args.split,
            "n": len(pairs),
            "models": dict(zip(names, args.models)),
            "rows": summary,
            "comparisons": comparisons,
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
