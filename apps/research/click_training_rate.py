"""The click training's own rate on this machine: photographs per second of the training loop's epochs (the same
``_train_epoch`` that ``lesion-train`` and the server's train task run, augmentation and the no-grad click passes
included), for the automatic model and each click recipe, alternated in one run, medians over repeats.

Example::

    python -m apps.research.click_training_rate ../shared/data/isic --images 48 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.data import CacheDataset, DataLoader
from monai.utils import set_determinism

from lesion_app.core.checkpoint import network_from, read_checkpoint
from lesion_app.core.clicks import ClickConfig, click_network, training_options
from lesion_app.core.data import split
from lesion_app.core.losses import HybridLoss
from lesion_app.core.training.loop import FitConfig, TrainingRun, _train_epoch, parameter_groups
from lesion_app.core.transforms import train_transforms
from lesion_app.io.layout import find_pairs
from lesion_app.lib.settings import SHIPPED_MODEL_DIR

#: name -> (click config or None for the automatic model, fusion, channels-last)
RECIPES: dict[str, tuple[ClickConfig | None, str, bool]] = {
    "automatic U-Net (images only)": (None, "early", False),
    "click, today's recipe (Gaussian, early fusion, K=4)": (ClickConfig(prev_mask=True), "early", False),
    "click, RITM (disks, Conv1S, K=3, multi-point)": (
        ClickConfig(prev_mask=True, encoding="disk", max_iters=3, max_initial=4, p_zero_prev=0.1),
        "conv1s",
        False,
    ),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--images", type=int, default=48, help="training photographs per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--threads", type=int, nargs="+", default=[0], help="torch CPU threads, each alternated (0: torch's default)"
    )
    args = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    set_determinism(0)
    items = split(find_pairs(args.data), 0.2)[0][: args.images]
    dataset = CacheDataset(items, train_transforms((256, 256)), progress=False)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    automatic = read_checkpoint(SHIPPED_MODEL_DIR / "pretrained_unet.pt")
    cfg = FitConfig(lr=1e-4, trunk_lr_factor=0.1)
    runs = {}
    for name, (click_cfg, fusion, channels_last) in RECIPES.items():
        if click_cfg is None:
            network, options, new = network_from(automatic), {}, []
        else:
            network, _, new = click_network(automatic, click_cfg, fusion)
            options = training_options({"clicks": click_cfg.as_dict()})
            options.pop("meta")
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        run = TrainingRun(network, {}, items, [], "/dev/null", **options, new_layers=new)
        optimizer = torch.optim.AdamW(parameter_groups(network, new, cfg), lr=cfg.lr)
        runs[name] = (run, optimizer)
    loss_fn = HybridLoss()
    rates: dict[str, list[float]] = {}
    images = len(loader) * args.batch_size
    for _ in range(args.repeats):
        for name, (run, optimizer) in runs.items():
            for threads in args.threads:
                torch.set_num_threads(threads or default_threads)
                t0 = time.perf_counter()
                _train_epoch(run.network, run, loader, optimizer, loss_fn, torch.device("cpu"), None, 1)
                key = f"{name}, {threads or default_threads} threads"
                rates.setdefault(key, []).append(images / (time.perf_counter() - t0))
    print(
        f"training rate, photographs/s ({images} per epoch, batch {args.batch_size}, median of {args.repeats} "
        "alternated epochs; the machine is shared)"
    )
    for name, values in rates.items():
        print(f"  {name}: {statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
