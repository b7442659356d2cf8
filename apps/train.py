"""Train a lesion segmentation model on a folder of images and masks.

Example::

    lesion-train ../shared/data/isic --arch unet --minutes 60 --out lesion_app/model/pretrained_unet.pt

On several GPUs or machines, launch it with ``torchrun`` (PyTorch's DistributedDataParallel, one process
per GPU; ``--batch-size`` is per process)::

    torchrun --nproc_per_node 4 -m apps.train ../shared/data/isic --arch unet --out runs/unet.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

import torch

from lesion_app.core.checkpoint import network_from, network_spec, read_checkpoint
from lesion_app.core.clicks import ClickConfig, click_network, training_options
from lesion_app.core.data import SELECTION_FRACTION, SELECTION_SEED, split
from lesion_app.core.losses import LOSSES
from lesion_app.core.networks import ARCHITECTURES, build_network
from lesion_app.core.training.distributed import destroy_distributed, init_distributed, torchrun_env
from lesion_app.core.training.loop import EpochStats, FitConfig, Hooks, TrainingRun, fit
from lesion_app.io.layout import find_pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lesion-train",
        description=__doc__.splitlines()[0],
        epilog="Under torchrun (torchrun --nproc_per_node N -m apps.train ...) training is data-parallel: each "
        "process trains on 1/N of the training set with --batch-size images per step (global batch: N times "
        "that), on cuda:LOCAL_RANK when there are GPUs (NCCL) and on the CPU otherwise (gloo); rank 0 alone "
        "validates, writes --out, --checkpoint and --log.",
    )
    p.add_argument("data", help="folder of images and masks (images/+masks/, ISIC naming, or a MONAI Label datastore)")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="unet")
    p.add_argument("--no-attention", action="store_true", help="the paper's baseline (Table I) without attention")
    p.add_argument("--out", required=True, help="model file to publish the best epoch to")
    p.add_argument(
        "--init", help="start from this model file (fine-tuning): its network as the file describes it, its weights"
    )
    p.add_argument("--checkpoint", help="full training state, written every epoch; resumed from if it exists")
    p.add_argument(
        "--log",
        "--jsonl",
        dest="log",
        help="append one JSON line of metrics per epoch to this file (under torchrun write --jsonl: torchrun's own "
        "option parser rejects --log as an abbreviation of its --log-dir)",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget; the learning rate decays to fit it, and the epoch running when it ends stops there",
    )
    p.add_argument(
        "--epoch-size",
        type=int,
        default=0,
        help="photographs per epoch, drawn at random from the training part (0: all of it); a slow machine then "
        "validates and checkpoints every so many",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per step per process (under torchrun: per GPU)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-fraction", type=float, default=0.2, help="the reported validation split, never trained on")
    p.add_argument(
        "--selection-fraction",
        type=float,
        default=SELECTION_FRACTION,
        help="share of the training part held out to choose the best epoch (fixed seed), so the validation split "
        "stays unseen; 0: choose on the validation split itself (its figures are then optimistic)",
    )
    clicks = p.add_argument_group("click model (DeepEdit-style): RGB + guidance maps from simulated clicks")
    clicks.add_argument(
        "--clicks",
        action="store_true",
        help="train a click model: from --init's automatic model (its weights, zero weights for the guidance) or "
        "a click model's file; without --init a fresh --arch network",
    )
    clicks.add_argument("--click-sigma", type=float, default=ClickConfig.sigma, help="guidance Gaussian, pixels")
    clicks.add_argument("--click-prev-mask", action="store_true", help="the network also reads the previous mask")
    clicks.add_argument("--click-max-iters", type=int, default=ClickConfig.max_iters, help="K, no-grad click passes")
    clicks.add_argument(
        "--click-p-auto", type=float, default=ClickConfig.p_auto, help="share of batches without clicks"
    )
    clicks.add_argument(
        "--click-p-first", type=float, default=ClickConfig.p_first, help="share of images starting with clicks"
    )
    clicks.add_argument(
        "--click-encoding", choices=("gaussian", "disk"), default=ClickConfig.encoding, help="how a click is drawn"
    )
    clicks.add_argument("--click-disk-radius", type=float, default=ClickConfig.disk_radius, help="disk, pixels")
    clicks.add_argument(
        "--click-max-initial",
        type=int,
        default=ClickConfig.max_initial,
        help="RITM's multi-point start: up to this many positive clicks (and one fewer negative) before the passes",
    )
    clicks.add_argument(
        "--click-p-zero-prev",
        type=float,
        default=ClickConfig.p_zero_prev,
        help="share of images whose previous mask is zeros in the gradient step",
    )
    clicks.add_argument(
        "--click-loss",
        choices=tuple(LOSSES),
        default=ClickConfig.loss,
        help="training loss: the paper's Jaccard + SSIM + focal (hybrid) or RITM's normalised focal loss (nfl)",
    )
    clicks.add_argument(
        "--click-zoom-crop",
        type=float,
        default=ClickConfig.zoom_crop,
        help="share of training views that are the box the zoom-in at inference shows (RITM), not the whole photograph",
    )
    clicks.add_argument(
        "--click-fusion",
        choices=("early", "conv1s"),
        default="early",
        help="how the click maps join a U-Net made from --init's automatic model: more input channels of the first "
        "convolution (early) or RITM's click stem (conv1s)",
    )
    clicks.add_argument(
        "--trunk-lr-factor",
        type=float,
        default=1.0,
        help="learning rate of the automatic model's layers relative to the new ones (RITM: 0.1)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the initialisation and augmentation (the split is fixed)"
    )
    p.add_argument("--limit", type=int, default=0, help="use only the first N pairs (smoke tests)")
    p.add_argument(
        "--train-limit",
        type=int,
        default=0,
        help="train on only the first N training pairs, after the splits (short ablations; the splits stay as they "
        "are, unlike --limit)",
    )
    p.add_argument("--held-out-limit", type=int, default=0, help="choose the epoch on only the first N held-out pairs")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1 ... (auto: the GPU if there is one; under torchrun a GPU run uses cuda:LOCAL_RANK)",
    )
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (augmentation runs there)")
    p.add_argument(
        "--spatial-size", type=int, default=256, help="side of the square network input images are resized to"
    )
    p.add_argument(
        "--progress", action="store_true", help="show batches done and images/s on stderr (default: on a terminal)"
    )
    args = p.parse_args(argv)
    if args.spatial_size < 32 or args.spatial_size % 32:
        p.error(f"--spatial-size must be a positive multiple of 32, got {args.spatial_size}")
    return args


class BatchProgress:
    """Batches done and images/s within an epoch, so a long epoch on a slow machine is not a silent wait.

    On a terminal the line is rewritten in place and cleared at the epoch's end; elsewhere (``--progress``
    into a file) it prints a line every ``every`` seconds and at the last batch.
    """

    def __init__(self, stream: TextIO, every: float = 10.0) -> None:
        self.stream, self.tty, self.every = stream, stream.isatty(), every
        self.began = self.shown = 0.0
        self.images = 0

    def __call__(self, done: int, total: int, images: int) -> None:
        now = time.monotonic()
        if done == 0:  # the epoch starts
            self.began, self.shown, self.images = now, now, 0
            return
        self.images += images
        last = done == total
        if not last and now - self.shown < (0.2 if self.tty else self.every):
            return
        self.shown = now
        rate = self.images / (now - self.began) if now > self.began else 0.0
        text = f"batch {done}/{total} {rate:.1f} images/s"
        if not self.tty:
            self.stream.write(text + "\n")
        elif last:
            self.stream.write("\r" + " " * len(text) + "\r")
        else:
            self.stream.write("\r" + text)
        self.stream.flush()


def starting_network(
    args: argparse.Namespace,
) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any], list[str]]:
    """The network to train, its spec, the meta that says what kind of model it is and the names of its parameters
    that are new (a click model's made from an automatic one).

    ``--init`` rebuilds the network its file describes, whatever ``--arch`` says; with ``--clicks`` an automatic
    model becomes a click model (:func:`lesion_app.core.clicks.click_network`) and a click model stays one, reading
    clicks as before (its encoding and previous mask) and trained with the click simulation asked for here.
    """
    cfg = ClickConfig(
        sigma=args.click_sigma,
        prev_mask=args.click_prev_mask,
        max_iters=args.click_max_iters,
        p_auto=args.click_p_auto,
        p_first=args.click_p_first,
        encoding=args.click_encoding,
        disk_radius=args.click_disk_radius,
        max_initial=args.click_max_initial,
        p_zero_prev=args.click_p_zero_prev,
        loss=args.click_loss,
        zoom_crop=args.click_zoom_crop,
    )
    if args.init:
        checkpoint = read_checkpoint(args.init)
        meta = checkpoint.get("meta", {})
        if args.clicks and "clicks" not in meta:
            network, spec, new = click_network(checkpoint, cfg, args.click_fusion)
            return network, spec, {"clicks": cfg.as_dict()}, new
        kept = {k: v for k, v in meta.items() if k == "clicks"}
        if args.clicks and kept:  # a click model reads clicks as its file says; how they are simulated is asked here
            asked = ("p_auto", "max_iters", "p_first", "max_initial", "p_zero_prev", "loss", "zoom_crop")
            simulation = {k: getattr(cfg, k) for k in asked}
            kept = {"clicks": replace(ClickConfig.of(meta), **simulation).as_dict()}
        return network_from(checkpoint), checkpoint["network"], kept, []
    kwargs = {"attention": not args.no_attention, **({"in_channels": cfg.in_channels} if args.clicks else {})}
    spec = network_spec(args.arch, kwargs)
    meta = {"clicks": cfg.as_dict()} if args.clicks else {}
    return build_network(spec["arch"], **spec["kwargs"]), spec, meta, []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if torchrun_env() is None:
        return train(args)
    device = init_distributed(args.device)
    try:
        return train(args, device)
    finally:
        destroy_distributed()


def train(args: argparse.Namespace, device: str | None = None) -> int:
    """One process's share of a run; ``device`` is the one :func:`init_distributed` gave it under torchrun."""
    rank, world, _ = (torchrun_env() if device is not None else None) or (0, 1, 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = find_pairs(args.data)
    if args.limit:
        pairs = pairs[: args.limit]
    if len(pairs) < 2:
        if rank == 0:
            print(f"error: need at least 2 image/mask pairs in {args.data}, found {len(pairs)}", file=sys.stderr)
        return 2
    train_items, val_items = split(pairs, args.val_fraction)
    if args.selection_fraction:
        train_items, val_items = split(train_items, args.selection_fraction, SELECTION_SEED)
    train_items = train_items[: args.train_limit] if args.train_limit else train_items
    val_items = val_items[: args.held_out_limit] if args.held_out_limit else val_items
    network, spec, meta, new_layers = starting_network(args)
    cfg = FitConfig(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.minutes,
        num_workers=args.workers,
        device=device or args.device,
        spatial_size=(args.spatial_size, args.spatial_size),
        trunk_lr_factor=args.trunk_lr_factor,
        epoch_size=args.epoch_size or None,
    )
    if rank == 0:
        held_out = "selection" if args.selection_fraction else "val"
        print(f"{spec['arch']} {spec['kwargs']}: {len(train_items)} train, {len(val_items)} {held_out}", flush=True)
        if device is not None:
            print(
                f"distributed: world size {world} on {device.split(':')[0]}, {args.batch_size} images per step "
                f"per process ({args.batch_size * world} in all)",
                flush=True,
            )

    def report(stats: EpochStats) -> None:
        print(stats.line(), flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(asdict(stats)) + "\n")

    on_batch = BatchProgress(sys.stderr) if rank == 0 and (args.progress or sys.stderr.isatty()) else None
    options = training_options(meta, args.seed)
    meta = {
        **options.pop("meta", {}),
        "data": str(Path(args.data).resolve().name),
        "train_pairs": len(train_items),
        "selected_on": "selection" if args.selection_fraction else "validation",
        "selection_pairs" if args.selection_fraction else "val_pairs": len(val_items),
    }
    run = TrainingRun(
        network, spec, train_items, val_items, args.out, args.checkpoint, meta, **options, new_layers=new_layers
    )
    history = fit(run, cfg, Hooks(on_epoch=report, on_batch=on_batch))
    best = max(history, key=lambda h: h.val["iou"]) if history else None
    if best and rank == 0:
        held_out = "selection" if args.selection_fraction else "validation"
        print(f"best {held_out} IoU {best.val['iou']:.4f} at epoch {best.epoch}; model: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
