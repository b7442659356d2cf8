"""The one training loop, shared by the MONAI Label train tasks, ``lesion-train`` and the simulator.

It trains on cached, augmented crops at the network's spatial size with the paper's hybrid loss, validates
mean per-image IoU after every epoch, keeps the best epoch (written atomically, so a server reading it
never sees half a file) and checkpoints the full training state so an interrupted run resumes where it
stopped. Whether the best epoch then replaces a served model is the gate's decision
(:mod:`lesion_app.core.training.gate`), not the loop's.

Under ``torchrun`` (see :mod:`lesion_app.core.training.distributed`) the same loop trains with PyTorch's
DistributedDataParallel: each process trains on its shard of the training set; rank 0 alone validates,
writes and reports.
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
import torch.distributed as dist
from monai.data import CacheDataset, DataLoader
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

from lesion_app.core.checkpoint import save_model
from lesion_app.core.losses import HybridLoss
from lesion_app.core.metrics import mean_scores, score
from lesion_app.core.training.distributed import from_rank0, resolve_device, world
from lesion_app.core.transforms import train_transforms, val_transforms
from lesion_app.io.files import atomic_write

#: ``inputs(network, images, labels) -> network input``: what a batch becomes before the forward pass. The
#: automatic models take the images as they are; the click-guided model adds guidance from simulated clicks.
InputFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


#: ``validate(network, loader, device) -> scores``: the validation after every epoch; ``scores["iou"]`` picks the
#: best epoch and is what the gate compares.
ValidateFn = Callable[[nn.Module, DataLoader, "torch.device | str"], dict[str, float]]


def images_only(network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The automatic models' input: the (N, 3, h, w) images unchanged."""
    return images


@dataclass
class FitConfig:
    """How to train: schedule, batch, optimiser, resolution, seed, time budget and device.

    ``lr`` is the peak learning rate (linear warm-up over ``warmup_epochs``, cosine decay to 5%; see
    :func:`lr_factor`); ``max_minutes`` (None: no budget) ends training early and makes the decay fit it (in one
    process also within an epoch: the epoch stops at the budget, is validated and written); ``epoch_size`` (None:
    the training set) makes an epoch that many photographs drawn at random from the training set, so a slow
    machine validates and checkpoints often;
    ``loss_weights`` are the hybrid loss's Jaccard, SSIM and focal weights; ``device`` is ``cpu``, ``cuda``,
    ``cuda:N`` or ``auto``; ``trunk_lr_factor`` scales the learning rate of the pretrained layers when a run names
    new ones (:attr:`TrainingRun.new_layers`; RITM trains its pretrained backbone at a tenth).
    """

    max_epochs: int = 50
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    spatial_size: Sequence[int] = (256, 256)
    seed: int = 0
    num_workers: int = 0
    max_minutes: float | None = None
    loss_weights: Sequence[float] = (1.0, 1.0, 1.0)
    device: str = "cpu"
    trunk_lr_factor: float = 1.0
    epoch_size: int | None = None


@dataclass
class TrainingRun:
    """What one run trains and where it writes.

    ``network`` is trained in place; ``spec`` (``{"arch", "kwargs"}``) is stored beside its weights so the
    file rebuilds it; the best epoch goes to ``out_path`` with ``meta``; ``checkpoint_path`` (optional) holds
    the full state every epoch and is resumed from if it exists. ``inputs`` turns each training batch into the
    network's input (:data:`InputFn`) and ``validate`` scores an epoch (:data:`ValidateFn`): the automatic
    models' defaults, or the click model's simulated clicks (:mod:`lesion_app.core.clicks`); ``loss`` (None: the
    paper's :class:`HybridLoss` with ``FitConfig.loss_weights``) is what the gradient step minimises.
    ``new_layers`` names the parameters new to a pretrained network (a click model's click stem), trained at the
    full learning rate while the others get ``FitConfig.trunk_lr_factor`` of it; empty: every parameter at the full
    rate. ``zoom_crop``: the share of training views that are the zoom-in's box rather than the whole photograph
    (:func:`lesion_app.core.transforms.train_transforms`).
    """

    network: nn.Module
    spec: dict[str, Any]
    train_items: list[dict[str, str]]
    val_items: list[dict[str, str]]
    out_path: str | Path
    checkpoint_path: str | Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: InputFn = images_only
    validate: ValidateFn | None = None
    loss: nn.Module | None = None
    new_layers: Sequence[str] = ()
    zoom_crop: float = 0.0


@dataclass
class EpochStats:
    """One epoch's line of the training log: losses, validation scores, the best epoch so far, timing.

    ``published`` says whether this epoch was the best so far and was written to the run's ``out_path``.
    """

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
        """The one-line summary printed per epoch (`` *`` marks the best epoch so far)."""
        mark = " *" if self.published else ""
        return (
            f"epoch {self.epoch}/{self.max_epochs} loss {self.train_loss:.4f} val_iou {self.val.get('iou', 0):.4f} "
            f"val_dice {self.val.get('dice', 0):.4f} best {self.best_iou:.4f}@{self.best_epoch} "
            f"lr {self.lr:.2e} {self.seconds:.0f}s{mark}"
        )


@dataclass
class Hooks:
    """Callbacks of a run, called on rank 0 only: ``on_epoch(stats)`` after each epoch, and
    ``on_batch(done, total, images)`` with 0 as an epoch starts and after every step."""

    on_epoch: Callable[[EpochStats], None] = lambda stats: None
    on_batch: Callable[[int, int, int], None] | None = None


def lr_factor(epoch: int, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` epochs, then cosine decay to 5% of the peak as ``progress`` goes 0 -> 1."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def progress_of(epoch: int, cfg: FitConfig, elapsed_minutes: float) -> float:
    """How far training is (0 -> 1), by epochs or by the time budget, whichever runs out first.

    Scheduling by time lets a CPU run with a fixed budget still finish its learning-rate decay.
    """
    by_epochs = epoch / max(1, cfg.max_epochs)
    by_time = elapsed_minutes / cfg.max_minutes if cfg.max_minutes else 0.0
    return max(by_epochs, by_time)


@torch.inference_mode()
def validate(network: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean per-image scores (:func:`lesion_app.core.metrics.mean_scores`) at the training resolution, cheap
    enough to run every epoch; the network sees the images alone (no clicks)."""
    network.eval()
    scores = []
    for batch in loader:
        preds = (network(batch["image"].to(device)) > 0).cpu()
        for p, t in zip(preds, batch["label"] > 0.5):
            scores.append(score(p[0].numpy(), t[0].numpy()))
    return mean_scores(scores)


def parameter_groups(network: nn.Module, new_layers: Sequence[str], cfg: FitConfig) -> list[dict[str, Any]]:
    """The optimiser's parameter groups, each with its ``lr_factor``: the ``new_layers`` at 1, the rest at
    ``cfg.trunk_lr_factor``; one group at 1 without new layers."""
    if not new_layers:
        return [{"params": list(network.parameters()), "lr_factor": 1.0}]
    new = set(new_layers)
    named = list(network.named_parameters())
    return [
        {"params": [p for name, p in named if name not in new], "lr_factor": cfg.trunk_lr_factor},
        {"params": [p for name, p in named if name in new], "lr_factor": 1.0},
    ]


@dataclass
class _State:
    """What a checkpoint restores: the epoch to start at, the best so far and the history."""

    start_epoch: int = 0
    best_iou: float = -1.0
    best_epoch: int = 0
    history: list[EpochStats] = field(default_factory=list)


def _resume(run: TrainingRun, optimizer: torch.optim.Optimizer, rank: int, distributed: bool) -> _State:
    """Restores the network and optimiser from the run's checkpoint, if there is one (rank 0's copy)."""
    saved = None
    if rank == 0 and run.checkpoint_path and Path(run.checkpoint_path).exists():
        saved = torch.load(run.checkpoint_path, map_location="cpu", weights_only=False)
    if distributed:
        # every rank resumes from rank 0's copy, so the checkpoint need not be on a filesystem all nodes share
        saved = from_rank0(saved)
    if saved is None:
        return _State()
    run.network.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    history = [EpochStats(**h) for h in saved["history"]]
    return _State(saved["epoch"], saved["best_iou"], saved["best_epoch"], history)


def _checkpoint(run: TrainingRun, optimizer: torch.optim.Optimizer, state: _State) -> None:
    if not run.checkpoint_path:
        return
    saved = {
        "model": {k: v.cpu() for k, v in run.network.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": state.start_epoch,
        "best_iou": state.best_iou,
        "best_epoch": state.best_epoch,
        "history": [asdict(h) for h in state.history],
    }
    atomic_write(run.checkpoint_path, lambda tmp: torch.save(saved, tmp))


def _loaders(
    run: TrainingRun, cfg: FitConfig, device: torch.device, rank: int, size: int
) -> tuple[DataLoader, Sampler | None, DataLoader | None]:
    """The training loader (sharded under torchrun) and, on rank 0, the validation loader."""
    common = {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda"}
    if cfg.num_workers:
        common["persistent_workers"] = True
    train_ds = CacheDataset(
        run.train_items, train_transforms(cfg.spatial_size, run.zoom_crop), num_workers=cfg.num_workers, progress=False
    )
    sampler: Sampler | None = None
    if size > 1:
        sampler = DistributedSampler(train_ds, size, rank, shuffle=True, seed=cfg.seed)
    elif cfg.epoch_size:
        sampler = RandomSampler(train_ds, replacement=False, num_samples=min(cfg.epoch_size, len(train_ds)))
    # every rank gets the same number of samples (the sampler pads), hence the same number of steps
    drop_last = (len(sampler) if sampler else len(train_ds)) > cfg.batch_size
    train = DataLoader(
        train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=drop_last, **common
    )
    if rank != 0:
        return train, sampler, None
    val_ds = CacheDataset(run.val_items, val_transforms(cfg.spatial_size), num_workers=cfg.num_workers, progress=False)
    return train, sampler, DataLoader(val_ds, batch_size=cfg.batch_size, **common)


def _train_epoch(
    model: nn.Module,
    run: TrainingRun,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    on_batch: Callable[[int, int, int], None] | None,
    size: int,
    deadline: float | None = None,
) -> float:
    """One pass over the training loader, or as much of it as ends before ``deadline`` (``time.monotonic()``; at
    least one step); the mean loss over this process's steps."""
    model.train()
    losses = []
    total = len(loader)
    if on_batch is not None:
        on_batch(0, total, 0)
    for step, batch in enumerate(loader, 1):
        image, label = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
        inputs = run.inputs(run.network, image, label)
        model.train()  # ``inputs`` may have run the network in eval mode
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), label)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_batch is not None:
            on_batch(step, total, len(image) * size)
        if deadline is not None and time.monotonic() > deadline:
            break
    return float(np.mean(losses))


def fit(run: TrainingRun, cfg: FitConfig, hooks: Hooks | None = None) -> list[EpochStats]:
    """Trains ``run.network`` and writes each epoch that beats the best validation IoU so far to
    ``run.out_path``; returns the history (every epoch, resumed ones included).

    In a process group (``torchrun``) every rank calls ``fit`` with the same arguments; ``cfg.batch_size``
    is per process. Hooks, writing and the checkpoint happen on rank 0 only; every rank returns the same
    history.
    """
    hooks = hooks or Hooks()
    rank, size = world()
    distributed = dist.is_available() and dist.is_initialized()
    set_determinism(cfg.seed + rank)  # a different augmentation stream per rank; the sampler's shuffle is shared
    device = resolve_device(cfg.device)
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    network = run.network.to(device)
    loss_fn = run.loss if run.loss is not None else HybridLoss(*cfg.loss_weights)
    optimizer = torch.optim.AdamW(
        parameter_groups(network, run.new_layers, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    state = _resume(run, optimizer, rank, distributed)
    # DDP also copies rank 0's weights to the other ranks here
    model = (
        DistributedDataParallel(network, device_ids=[device] if device.type == "cuda" else None)
        if distributed
        else network
    )
    train_loader, sampler, val_loader = _loaders(run, cfg, device, rank, size)
    on_batch = hooks.on_batch if rank == 0 else None
    began = time.monotonic()
    for epoch in range(state.start_epoch, cfg.max_epochs):
        t0 = time.monotonic()
        progress = progress_of(epoch, cfg, (t0 - began) / 60.0)
        if distributed:
            progress = from_rank0(progress)  # the time budget runs on rank 0's clock alone
        if progress >= 1.0:
            break
        lr = cfg.lr * lr_factor(epoch, cfg.warmup_epochs, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        # one process may stop within the epoch at the budget; ranks of a process group must take the same steps
        deadline = began + 60.0 * cfg.max_minutes if cfg.max_minutes and not distributed else None
        train_loss = _train_epoch(model, run, train_loader, optimizer, loss_fn, device, on_batch, size, deadline)
        if distributed:
            mean = torch.tensor([train_loss], dtype=torch.float64, device=device)
            dist.all_reduce(mean)
            train_loss = mean.item() / size
        # rank 0 validates the plain module (DDP's forward would wait for the other ranks) and writes
        val = (run.validate or validate)(network, val_loader, device) if val_loader is not None else {}
        best = rank == 0 and val["iou"] > state.best_iou
        if best:
            fit_cfg = asdict(cfg) | {"spatial_size": list(cfg.spatial_size)}
            save_model(run.out_path, network, run.spec, {**run.meta, "epoch": epoch + 1, "val": val, "fit": fit_cfg})
        seconds = time.monotonic() - t0
        if distributed:
            val, seconds = from_rank0((val, seconds))  # so every rank keeps the same best epoch and history
        published = val["iou"] > state.best_iou
        if published:
            state.best_iou, state.best_epoch = val["iou"], epoch + 1
        extra = {"world_size": size} if distributed else {}
        stats = EpochStats(
            epoch + 1, cfg.max_epochs, train_loss, val, lr, seconds, state.best_iou, state.best_epoch, published, extra
        )
        state.history.append(stats)
        state.start_epoch = epoch + 1
        if rank == 0:
            hooks.on_epoch(stats)
            _checkpoint(run, optimizer, state)
    return state.history
