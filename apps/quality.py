"""Fit and evaluate the quality estimate: the predicted IoU of each mask and the flag on the ones to review.

``fit`` computes the prediction features (:mod:`lesion_app.core.quality`) of a served model on the selection split
carved from the ISIC training part (fixed seeds; never the reported validation split), fits the linear estimate and
chooses the review threshold there, and writes ``quality_<model>.json``. ``evaluate`` reads it and reports, per
data set (ISIC's validation split, all of another folder such as PH2): the AUROC of the predicted IoU for failures
(IoU < 0.65), the recall and precision of the flag and the share of photographs flagged, with 95% bootstrap
intervals, and the IoU by lesion size (tertiles of the lesion's share of the photograph) with the failure rate;
and draws a reliability diagram (predicted against true IoU).

Example::

    lesion-quality fit ../shared/data/isic --model lesion_app/model/pretrained_unet.pt \\
        --out lesion_app/model/quality_unet.json
    lesion-quality evaluate ../shared/data/isic ../shared/data/ph2 --model lesion_app/model/pretrained_unet.pt \\
        --quality lesion_app/model/quality_unet.json --out docs/quality_unet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lesion_app.core.data import selection_split, split
from lesion_app.core.metrics import bootstrap_ci, score
from lesion_app.core.predictor import Predictor
from lesion_app.core.quality import FAILURE_IOU, QUALITY_FLIPS, QualityModel, fit_quality, quality_features
from lesion_app.io.images import read_mask
from lesion_app.io.layout import find_pairs


def measure(models: list[str], pairs: list[dict[str, str]], label: str) -> list[dict[str, Any]]:
    """Per photograph: the served mask's true IoU, the lesion's share of the photograph, and the features (several
    models: their average, as the ensemble serves it)."""
    predictor = Predictor.from_files(models)
    rows = []
    t0 = time.monotonic()
    for i, pair in enumerate(pairs, 1):
        prepared = predictor.prepare(pair["image"])
        flips = predictor.flips(prepared.batch, QUALITY_FLIPS)[:, 0, 0]  # (QUALITY_FLIPS, h, w), the plain pass first
        mask = predictor.mask_from(predictor.restore(flips[:1], prepared.original_size))  # served by default
        truth = read_mask(pair["label"])
        rows.append(
            {
                "id": pair["id"],
                "iou": score(mask, truth).iou,
                "lesion_share": float(truth.mean()),
                **quality_features(flips.numpy()),
            }
        )
        if i % 50 == 0 or i == len(pairs):
            print(f"  {label}: {i}/{len(pairs)} photographs, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return rows


def interval(values: np.ndarray, fmt: str = "{:.3f}") -> str:
    """``mean [low, high]``: the mean with its 95% percentile-bootstrap interval; ``n/a`` for no values."""
    if len(values) == 0:
        return "n/a"
    low, high = bootstrap_ci(values)
    return f"{fmt.format(values.mean())} [{fmt.format(low)}, {fmt.format(high)}]"


def flag_report(rows: list[dict[str, Any]], quality: QualityModel) -> dict[str, Any]:
    """AUROC of the predicted IoU for failures, and the flag's recall, precision and flagged share."""
    from sklearn.metrics import roc_auc_score

    predicted = np.array([quality.predicted_iou(r) for r in rows])
    failed = np.array([r["iou"] < FAILURE_IOU for r in rows])
    flagged = predicted < quality.threshold
    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(1000):
        idx = rng.integers(0, len(rows), len(rows))
        if failed[idx].any() and not failed[idx].all():
            aucs.append(roc_auc_score(failed[idx], -predicted[idx]))
    return {
        "n": len(rows),
        "failures": int(failed.sum()),
        "auroc": float(roc_auc_score(failed, -predicted)) if failed.any() and not failed.all() else float("nan"),
        "auroc_ci": [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))] if aucs else None,
        "recall": interval(flagged[failed].astype(float)) if failed.any() else "n/a",
        "precision": interval(failed[flagged].astype(float)) if flagged.any() else "n/a",
        "flagged": interval(flagged.astype(float)),
        "mean_abs_error": float(np.abs(predicted - np.array([r["iou"] for r in rows])).mean()),
    }


def by_size(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: IoU and failure rate per tertile of the lesion's share of the photograph."""
    share = np.array([r["lesion_share"] for r in rows])
    ious = np.array([r["iou"] for r in rows])
    edges = np.quantile(share, [1 / 3, 2 / 3])
    groups = np.digitize(share, edges)
    lines = []
    for g, name in enumerate(("small", "medium", "large")):
        sel = groups == g
        low = share[sel].min() if sel.any() else 0
        high = share[sel].max() if sel.any() else 0
        lines.append(
            f"| {name} ({low:.1%}-{high:.1%}) | {sel.sum()} | {interval(ious[sel])} | "
            f"{interval((ious[sel] < FAILURE_IOU).astype(float))} |"
        )
    lines.append(f"| all | {len(rows)} | {interval(ious)} | {interval((ious < FAILURE_IOU).astype(float))} |")
    return lines


def reliability(path: Path, everything: dict[str, list[dict[str, Any]]], quality: QualityModel) -> None:
    """Predicted against true IoU per data set, binned, with the threshold of the flag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    bins = np.linspace(0, 1, 11)
    for name, rows in everything.items():
        predicted = np.array([quality.predicted_iou(r) for r in rows])
        true = np.array([r["iou"] for r in rows])
        which = np.clip(np.digitize(predicted, bins) - 1, 0, len(bins) - 2)
        xs = [predicted[which == b].mean() for b in range(len(bins) - 1) if (which == b).sum() >= 3]
        ys = [true[which == b].mean() for b in range(len(bins) - 1) if (which == b).sum() >= 3]
        ax.plot(xs, ys, marker="o", label=f"{name} (n={len(rows)})")
        ax.scatter(predicted, true, s=4, alpha=0.25)
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--", label="perfect calibration")
    ax.axvline(quality.threshold, color="red", lw=0.8, label=f"review below {quality.threshold:.2f}")
    ax.axhline(FAILURE_IOU, color="gray", lw=0.5)
    ax.set(xlabel="predicted IoU", ylabel="true IoU", xlim=(0, 1), ylim=(0, 1), title="Reliability of the estimate")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-quality", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit the estimate and the flag on ISIC's selection split")
    fit.add_argument("data", help="the ISIC folder (its training part's selection split is used)")
    fit.add_argument("--model", required=True, action="append", help="a model file; several: their ensemble")
    fit.add_argument("--out", required=True, help="quality_<model>.json")
    fit.add_argument("--limit", type=int, default=0)
    ev = sub.add_parser("evaluate", help="report the flag on ISIC's validation split and other data folders")
    ev.add_argument("data", nargs="+", help="the first is read at its validation split, the rest whole")
    ev.add_argument("--model", required=True, action="append", help="a model file; several: their ensemble")
    ev.add_argument("--quality", required=True, help="quality_<model>.json")
    ev.add_argument("--limit", type=int, default=0)
    ev.add_argument("--out", help="prefix of <out>.md, <out>.json and <out>.png (the reliability diagram)")
    for q in (fit, ev):
        q.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "fit":
        selection = selection_split(find_pairs(args.data))
        selection = selection[: args.limit] if args.limit else selection
        rows = measure(args.model, selection, "selection")
        names = "+".join(Path(m).name for m in args.model)
        source = f"{Path(args.data).name} selection split (n={len(rows)}) of {names}"
        model = fit_quality(rows, np.array([r["iou"] for r in rows]), source)
        model.save(args.out)
        print(f"{args.out}: threshold {model.threshold:.3f}, fitted on {source}")
        return 0
    quality = QualityModel.load(args.quality)
    everything = {}
    for i, data in enumerate(args.data):
        pairs = find_pairs(data)
        pairs = split(pairs, 0.2)[1] if i == 0 else pairs
        everything[Path(data).name] = measure(args.model, pairs[: args.limit] if args.limit else pairs, Path(data).name)
    lines, summary = [], {}
    for name, rows in everything.items():
        r = summary[name] = flag_report(rows, quality)
        ci = r["auroc_ci"]
        auroc = f"{r['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        lines += [
            f"**{name}** (n={r['n']}, {r['failures']} failures with IoU < {FAILURE_IOU}; flag: predicted IoU < "
            f"{quality.threshold:.3f})",
            "",
            "| AUROC for failures | recall | precision | flagged | mean abs. error of the predicted IoU |",
            "|---|---|---|---|---|",
            f"| {auroc} | {r['recall']} | {r['precision']} | {r['flagged']} | {r['mean_abs_error']:.3f} |",
            "",
            "| lesion size (share of the photograph) | n | IoU | failure rate (IoU < 0.65) |",
            "|---|---|---|---|",
            *by_size(rows),
            "",
        ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(report)
        out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
        reliability(out.with_suffix(".png"), everything, quality)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
