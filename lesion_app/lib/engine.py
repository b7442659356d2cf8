"""The one training loop, shared by the MONAI Label train tasks and ``apps/train.py``.

It trains on cached, augmented 256x256 crops, validates mean per-image IoU after every epoch, keeps
the best model (published atomically, so a server reading it never sees half a file) and checkpoints
the full training state so an interrupted run resumes where it stopped.

Under ``torchrun`` (see :func:`init_distributed`) the same loop trains with PyTorch's
DistributedDataParallel: each process trains on its shard of the training set, rank 0 alone validates,
publishes, checkpoints and reports, and broadcasts its decisions so every rank runs the same epochs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import CacheDataset, DataLoader
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

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


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched by ``torchrun``, else None (a plain single-process run)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: str) -> str:
    """Joins the ``torchrun`` process group and returns this process's device.

    A GPU run uses ``cuda:LOCAL_RANK`` (one GPU per process) over NCCL; a CPU run uses gloo. Without
    ``torchrun`` nothing happens and ``device`` comes back as it was, so plain runs stay single-process.
    """
    env = torchrun_env()
    if env is None:
        return device
    _, _, local_rank = env
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return str(resolved)


def destroy_distributed() -> None:
    """Leaves the process group once every rank is done, so none exits while another still talks to it."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group; ``(0, 1)`` when training in one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank: the decisions that must not diverge (stop, best epoch) are rank 0's."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
    on_batch: Callable[[int, int, int], None] | None = None,
) -> list[EpochStats]:
    """Trains ``network`` and publishes to ``out_path`` each time validation IoU beats the best so far.

    ``baseline_iou`` is the score the model being replaced already has: nothing is published unless a
    new epoch beats it, so fine-tuning never replaces a model by a worse one. ``on_batch(done, total,
    images)`` follows progress within an epoch: called with 0 as it starts, then after every step
    (``images``: that step's images over all processes).

    In a process group (``torchrun``) every rank calls ``fit`` with the same arguments; ``cfg.batch_size``
    is per process. ``on_epoch``, ``on_batch``, publishing and the checkpoint happen on rank 0 only; every
    rank returns the same history.
    """
    rank, world = _world()
    distributed = dist.is_available() and dist.is_initialized()
    # a different augmentation stream per rank; the sampler's shuffle (seeded by cfg.seed) is shared
    set_determinism(cfg.seed + rank)
    device = resolve_device(cfg.device)
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    network.to(device)
    loss_fn = HybridLoss(*cfg.loss_weights)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[EpochStats] = []
    start_epoch, best_iou, best_epoch = 0, baseline_iou, 0
    state = None
    if rank == 0 and checkpoint_path and Path(checkpoint_path).exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    if distributed:
        # every rank resumes from rank 0's copy, so the checkpoint need not be on a filesystem all nodes share
        state = _from_rank0(state)
    if state is not None:
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_iou, best_epoch = state["epoch"], state["best_iou"], state["best_epoch"]
        history = [EpochStats(**h) for h in state["history"]]

    # DDP also copies rank 0's weights to the other ranks here
    model = (
        DistributedDataParallel(network, device_ids=[device] if device.type == "cuda" else None)
        if distributed
        else network
    )

    train_ds = CacheDataset(train_items, train_transforms(cfg.roi_size), num_workers=cfg.num_workers, progress=False)
    loader_args = {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda"}
    if cfg.num_workers:
        loader_args["persistent_workers"] = True
    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed) if distributed else None
    # every rank gets the same number of samples (the sampler pads), hence the same number of steps
    drop_last = (len(sampler) if sampler else len(train_ds)) > cfg.batch_size
    train_loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        **loader_args,
    )
    val_loader = None
    if rank == 0:
        val_ds = CacheDataset(val_items, val_transforms(cfg.roi_size), num_workers=cfg.num_workers, progress=False)
        val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, **loader_args)
    began = time.monotonic()
    for epoch in range(start_epoch, cfg.max_epochs):
        t0 = time.monotonic()
        progress = progress_of(epoch, cfg, (t0 - began) / 60.0)
        if distributed:
            progress = _from_rank0(progress)  # the time budget runs on rank 0's clock alone
        if progress >= 1.0:
            break
        lr = cfg.lr * lr_factor(epoch, cfg.warmup_epochs, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        losses = []
        total = len(train_loader)
        if on_batch is not None and rank == 0:
            on_batch(0, total, 0)
        for step, batch in enumerate(train_loader, 1):
            optimizer.zero_grad(set_to_none=True)
            image, label = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
            loss = loss_fn(model(image), label)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_batch is not None and rank == 0:
                on_batch(step, total, len(image) * world)
        train_loss = float(np.mean(losses))
        if distributed:
            mean = torch.tensor([train_loss], dtype=torch.float64, device=device)
            dist.all_reduce(mean)
            train_loss = mean.item() / world
        # rank 0 validates the plain module (DDP's forward would wait for the other ranks) and publishes
        val = validate(network, val_loader, device) if val_loader is not None else {}
        if rank == 0 and val["iou"] > best_iou:
            save_model(
                out_path,
                network,
                arch,
                network_kwargs,
                {**(meta or {}), "epoch": epoch + 1, "val": val, "fit": asdict(cfg) | {"roi_size": list(cfg.roi_size)}},
            )
        seconds = time.monotonic() - t0
        if distributed:
            val, seconds = _from_rank0((val, seconds))  # so every rank keeps the same best epoch and history
        published = val["iou"] > best_iou
        if published:
            best_iou, best_epoch = val["iou"], epoch + 1
        stats = EpochStats(
            epoch + 1,
            cfg.max_epochs,
            train_loss,
            val,
            lr,
            seconds,
            best_iou,
            best_epoch,
            published,
            {"world_size": world} if distributed else {},
        )
        history.append(stats)
        if rank != 0:
            continue
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
