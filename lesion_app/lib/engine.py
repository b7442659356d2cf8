"""The one training loop, shared by the MONAI Label train tasks and ``apps/train.py``.

It trains on cached, augmented 256x256 crops, validates mean per-image IoU after every epoch, keeps
the best model (published atomically, so a server reading it never sees half a file) and checkpoints
the full training state so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.utils import set_determinism
from torch import nn

from lesion_app.lib.losses import HybridLoss
from lesion_app.lib.metrics import mean_scores, score
from lesion_app.lib.models import atomic_write, save_model
from lesion_app.lib.transforms import train_transforms, val_transforms


@dataclass
class FitConfig:
    max_epochs: int = 50
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    roi_size: Sequence[int] = (256, 256)
    seed: int = 0
    num_workers: int = 0
    max_minutes: float | None = None
    loss_weights: Sequence[float] = (1.0, 1.0, 1.0)
    device: str = "cpu"


@dataclass
class EpochStats:
    epoch: int
    max_epochs: int
    train_loss: float
    val: dict[str, float]
    lr: float
    seconds: float
    best_iou: float
    best_epoch: int
    published: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        mark = " *" if self.published else ""
        return (
            f"epoch {self.epoch}/{self.max_epochs} loss {self.train_loss:.4f} val_iou {self.val.get('iou', 0):.4f} "
            f"val_dice {self.val.get('dice', 0):.4f} best {self.best_iou:.4f}@{self.best_epoch} "
            f"lr {self.lr:.2e} {self.seconds:.0f}s{mark}"
        )


def lr_factor(epoch: int, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` epochs, then cosine decay to 5% of the peak as ``progress`` goes 0 -> 1."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def progress_of(epoch: int, cfg: FitConfig, elapsed_minutes: float) -> float:
    """How far training is, by epochs or by the time budget, whichever runs out first.

    Scheduling by time lets a CPU run with a fixed budget still finish its learning-rate decay.
    """
    by_epochs = epoch / max(1, cfg.max_epochs)
    by_time = elapsed_minutes / cfg.max_minutes if cfg.max_minutes else 0.0
    return max(by_epochs, by_time)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one, so the same command trains on a laptop and on a GPU machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.inference_mode()
def validate(network: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean per-image scores at the training resolution (cheap enough to run every epoch)."""
    network.eval()
    scores = []
    for batch in loader:
        preds = (network(batch["image"].to(device)) > 0).cpu()
        for p, t in zip(preds, batch["label"] > 0.5):
            scores.append(score(p[0].numpy(), t[0].numpy()))
    return mean_scores(scores)


def fit(
    network: nn.Module,
    arch: str,
    network_kwargs: dict[str, Any],
    train_items: list[dict[str, str]],
    val_items: list[dict[str, str]],
    out_path: str | Path,
    cfg: FitConfig,
    on_epoch: Callable[[EpochStats], None] = lambda s: None,
    checkpoint_path: str | Path | None = None,
    meta: dict[str, Any] | None = None,
    baseline_iou: float = -1.0,
) -> list[EpochStats]:
    """Trains ``network`` and publishes to ``out_path`` each time validation IoU beats the best so far.

    ``baseline_iou`` is the score the model being replaced already has: nothing is published unless a
    new epoch beats it, so fine-tuning never replaces a model by a worse one.
    """
    set_determinism(cfg.seed)
    device = resolve_device(cfg.device)
    network.to(device)
    loss_fn = HybridLoss(*cfg.loss_weights)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[EpochStats] = []
    start_epoch, best_iou, best_epoch = 0, baseline_iou, 0
    if checkpoint_path and Path(checkpoint_path).exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_iou, best_epoch = state["epoch"], state["best_iou"], state["best_epoch"]
        history = [EpochStats(**h) for h in state["history"]]

    train_ds = CacheDataset(train_items, train_transforms(cfg.roi_size), num_workers=cfg.num_workers, progress=False)
    val_ds = CacheDataset(val_items, val_transforms(cfg.roi_size), num_workers=cfg.num_workers, progress=False)
    drop_last = len(train_ds) > cfg.batch_size
    loader_args = {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda"}
    if cfg.num_workers:
        loader_args["persistent_workers"] = True
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last, **loader_args)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, **loader_args)
    began = time.monotonic()
    for epoch in range(start_epoch, cfg.max_epochs):
        t0 = time.monotonic()
        progress = progress_of(epoch, cfg, (t0 - began) / 60.0)
        if progress >= 1.0:
            break
        lr = cfg.lr * lr_factor(epoch, cfg.warmup_epochs, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        network.train()
        losses = []
        for batch in train_loader:
            optimizer.zero_grad(set_to_none=True)
            image, label = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
            loss = loss_fn(network(image), label)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val = validate(network, val_loader, device)
        published = val["iou"] > best_iou
        if published:
            best_iou, best_epoch = val["iou"], epoch + 1
            save_model(
                out_path,
                network,
                arch,
                network_kwargs,
                {**(meta or {}), "epoch": epoch + 1, "val": val, "fit": asdict(cfg) | {"roi_size": list(cfg.roi_size)}},
            )
        stats = EpochStats(
            epoch + 1,
            cfg.max_epochs,
            float(np.mean(losses)),
            val,
            lr,
            time.monotonic() - t0,
            best_iou,
            best_epoch,
            published,
        )
        history.append(stats)
        on_epoch(stats)
        if checkpoint_path:
            state = {
                "model": {k: v.cpu() for k, v in network.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "best_iou": best_iou,
                "best_epoch": best_epoch,
                "history": [asdict(h) for h in history],
            }
            atomic_write(checkpoint_path, lambda tmp, s=state: torch.save(s, tmp))
    return history
