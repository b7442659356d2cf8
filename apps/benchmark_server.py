"""Server start-up time and per-image infer latency through HTTP, against the same pipeline in-process.

Starts the app on a free loopback port over a copy of sample-data, then for each model sends
sequential infer requests for a 512-px JPEG and prints the median and p95 latency, next to the
median of the identical pipeline (load, resize, network, restore, PNG) run in this process: the
difference is what the server adds.

Example::

    python -m apps.benchmark_server --requests 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from apps.server import REPO, running_server
from lesion_app.lib.inference import predict_mask
from lesion_app.lib.models import load_model


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def timings(call: Callable[[], None], repeats: int, warmup: int = 3) -> list[float]:
    """Seconds per call, after ``warmup`` untimed calls (model load, allocator warm-up)."""
    for _ in range(warmup):
        call()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--image", default="lesion_005", help="image id in sample-data (512x384 JPEG)")
    p.add_argument("--models", default="unet,deeplabv3")
    args = p.parse_args(argv)
    models = args.models.split(",")
    image_path = next((REPO / "sample-data").glob(f"{args.image}.*"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with running_server(Path(tmp)) as url:
            startup = time.perf_counter() - t0
            print(f"server start-up (process start to first /info answer): {startup:.1f}s")
            with Image.open(image_path) as img:
                print(f"image {image_path.name} {img.width}x{img.height}")
            print("| model | HTTP median ms | HTTP p95 ms | in-process median ms | server overhead |")
            print("|---|---|---|---|---|")
            with httpx.Client(timeout=60) as client:
                for model in models:
                    network, _ = load_model(REPO / "lesion_app" / "model" / f"pretrained_{model}.pt")

                    def in_process(network=network) -> None:
                        mask = predict_mask(network, str(image_path))
                        Image.fromarray(mask).save(Path(tmp) / "local.png")

                    def over_http(model=model) -> None:
                        r = client.post(f"{url}/infer/{model}", params={"image": args.image, "output": "image"})
                        r.raise_for_status()

                    local, remote = timings(in_process, args.requests), timings(over_http, args.requests)
                    med, p95, loc = statistics.median(remote), percentile(remote, 95), statistics.median(local)
                    print(f"| {model} | {med * 1e3:.1f} | {p95 * 1e3:.1f} | {loc * 1e3:.1f} | {med / loc:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
