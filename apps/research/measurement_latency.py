"""What the measurements add to an infer request: the served model's infer task on ISIC photographs, with and without.

The infer task (the one the server runs, in this process, no HTTP) segments each photograph twice, once as served
(its result carries ``measurements``; its loader keeps the decoded photograph for their colour values) and once with
the measurements and the kept photograph left out, alternating which goes first; the medians of both and of their
difference per photograph are printed. Example::

    python -m apps.research.measurement_latency ../shared/data/isic/images --count 30 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import lesion_app
from lesion_app.core.transforms import infer_transforms
from lesion_app.io.layout import image_files
from lesion_app.lib import configs
from lesion_app.lib.infers import segmentation
from lesion_app.lib.settings import LesionSettings


def infer_task(model: str) -> Any:
    """The model's infer task as the server builds it (shipped weights, default settings)."""
    app_dir = Path(lesion_app.__file__).parent
    settings = LesionSettings.from_conf({"models": model}, app_dir)
    config = configs.CONFIGS[model]()
    config.init(model, settings.model_dir, {}, None, settings=settings)
    return config.infer()[model]


def timed(task: Any, image: Path) -> float:
    """Seconds one infer request takes, result JSON included."""
    start = time.perf_counter()
    task({"image": str(image), "device": "cpu"})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="measurement_latency", description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, help="a folder of photographs (the first --count, by name)")
    p.add_argument("--count", type=int, default=30, help="photographs timed")
    p.add_argument("--model", default="unet", help="the served model (default: unet, the default served model)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = infer_task(args.model)
    photos = image_files(args.images)[: args.count]
    measured = segmentation.mask_measurements
    served = task.pre_transforms
    plain = lambda data=None: list(infer_transforms(task.spatial_size).transforms)  # noqa: E731
    own: list[float] = []

    def measuring(*args: Any) -> Any:  # the measurements as served, their own time noted
        start = time.perf_counter()
        values = measured(*args)
        own.append(time.perf_counter() - start)
        return values

    timed(task, photos[0])  # load the network once
    with_m, without_m = [], []
    for i, photo in enumerate(photos):
        for first in (True, False) if i % 2 else (False, True):
            segmentation.mask_measurements = measuring if first else (lambda *a: {})  # type: ignore[assignment]
            task.pre_transforms = served if first else plain
            (with_m if first else without_m).append(timed(task, photo))
    segmentation.mask_measurements = measured  # type: ignore[assignment]
    task.pre_transforms = served
    added = [a - b for a, b in zip(with_m, without_m)]
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print(f"{args.model} infer task, {len(photos)} photographs of {args.images}, {args.threads} threads")
    print(f"median per request: with measurements {ms(with_m):.1f} ms, without {ms(without_m):.1f} ms")
    print(f"median added per request: {ms(added):.1f} ms; the measurements' own time: median {ms(own[1:]):.1f} ms")
    print(f"load average while timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
