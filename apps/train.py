"""Train a lesion segmentation model on a folder of images and masks.

Example::

    lesion-train ../shared/data/isic --arch unet --minutes 60 --out lesion_app/model/pretrained_unet.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from lesion_app.lib.data import find_pairs, split
from lesion_app.lib.engine import EpochStats, FitConfig, fit
from lesion_app.lib.models import ARCHITECTURES, build_network, read_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder of images and masks (images/+masks/, ISIC naming, or a MONAI Label datastore)")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="unet")
    p.add_argument("--no-attention", action="store_true", help="the paper's baseline (Table I) without attention")
    p.add_argument("--out", required=True, help="model file to publish the best epoch to")
    p.add_argument("--init", help="start from the weights of this model file (fine-tuning)")
    p.add_argument("--checkpoint", help="full training state, written every epoch; resumed from if it exists")
    p.add_argument("--log", help="append one JSON line of metrics per epoch to this file")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--minutes", type=float, default=None, help="time budget; the learning rate decays to fit it")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only the first N pairs (smoke tests)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: the GPU if there is one)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (augmentation runs there)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = find_pairs(args.data)
    if args.limit:
        pairs = pairs[: args.limit]
    if len(pairs) < 2:
        print(f"error: need at least 2 image/mask pairs in {args.data}, found {len(pairs)}", file=sys.stderr)
        return 2
    train_items, val_items = split(pairs, args.val_fraction, args.seed)
    kwargs = {"attention": not args.no_attention}
    network = build_network(args.arch, **kwargs)
    if args.init:
        network.load_state_dict(read_checkpoint(args.init)["model"])
    cfg = FitConfig(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.minutes,
        num_workers=args.workers,
        device=args.device,
    )
    print(f"{args.arch} attention={kwargs['attention']}: {len(train_items)} train, {len(val_items)} val", flush=True)

    def report(stats: EpochStats) -> None:
        print(stats.line(), flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(asdict(stats)) + "\n")

    meta = {"data": str(Path(args.data).resolve().name), "train_pairs": len(train_items), "val_pairs": len(val_items)}
    history = fit(network, args.arch, kwargs, train_items, val_items, args.out, cfg, report, args.checkpoint, meta)
    best = max(history, key=lambda h: h.val["iou"]) if history else None
    if best:
        print(f"best val IoU {best.val['iou']:.4f} at epoch {best.epoch}; model: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
