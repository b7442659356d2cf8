"""Server start-up time and per-image infer latency through HTTP, against the same pipeline in-process.

Starts the app on a free loopback port over a copy of sample-data, then for each model sends
sequential infer requests for a 512-px JPEG and prints the median and p95 latency, next to the
median of the identical pipeline (load, resize, network, restore, PNG) run in this process: the
difference is what the server adds.

Example::

    python -m apps.research.benchmark_server --requests 30
    python -m apps.research.benchmark_server --requests 30 --models ensemble --tta
    python -m apps.research.benchmark_server --requests 10 --models unet,deepedit --rounds 3 \
        --deepedit ~/.cache/lesion-click-training/best.pt --click-options '{"click_zoom": 1}'

With ``--rounds`` the models take turns that many times (so a busy machine slows them alike) and each line is the
median of the rounds' medians; ``--deepedit`` serves another click model file in place of the shipped one.

The in-process pipeline uses the same options as the server (clean-up on, flips with ``--tta``). The
server's background scoring (uncertainty of every unlabelled image at start-up) is switched off here
(``MONAI_LABEL_AUTO_UPDATE_SCORING=false``) so that it does not share the CPU with the requests timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from apps.process_control import stoppable
from apps.research.local_server import REPO, running_server
from lesion_app.core.predictor import Predictor
from lesion_app.lib.settings import CLICK_MODELS, SHIPPED_MODEL_DIR, shipped_models


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


def click_timings(
    client: httpx.Client, url: str, model: str, image_id: str, image: Path, clicks: int, **options: object
) -> list[float]:
    """Seconds per click request: the clicks of a session sent as 3D Slicer sends them, all clicks so far with each
    new one (``[i, j, 0]`` on the photograph's grid), positive and negative in turn around the photograph's middle;
    ``options`` go with each request (``click_brs_iterations=0``: without the refinement)."""
    with Image.open(image) as img:
        w, h = img.size
    points = [[w // 2 + (k * 37) % 61 - 30, h // 2 + (k * 53) % 47 - 23, 0] for k in range(clicks)]
    out = []
    for n in range(1, clicks + 1):
        params = {"foreground": points[:n:2], "background": points[1:n:2], "label": "lesion", "slice": 0, **options}
        t = time.perf_counter()
        r = client.post(
            f"{url}/infer/{model}", params={"image": image_id, "output": "image"}, data={"params": json.dumps(params)}
        )
        r.raise_for_status()
        out.append(time.perf_counter() - t)
    return out


def model_timings(
    client: httpx.Client,
    url: str,
    model: str,
    args: argparse.Namespace,
    image_path: Path,
    click_options: dict,
    tmp: str,
) -> list[tuple[str, tuple[float, float, float | None]]]:
    """One round of one model: (row name, (HTTP median s, HTTP p95 s, in-process median s or None)) per row; a
    click model per click, with its options and without f-BRS."""
    if model in CLICK_MODELS:
        out = []
        for label, options in (("", {}), (", without f-BRS", {"click_brs_iterations": 0})):
            options = {**click_options, **options}
            clicked = click_timings(client, url, model, args.image, image_path, args.requests, **options)
            name = f"{model} (one click, as 3D Slicer sends it{label})"
            out.append((name, (statistics.median(clicked), percentile(clicked, 95), None)))
        return out
    predictor = Predictor.from_files(shipped_models(model), tta=args.tta, postprocess=True)

    def in_process() -> None:
        Image.fromarray(predictor.mask(str(image_path))).save(Path(tmp) / "local.png")

    def over_http() -> None:
        r = client.post(
            f"{url}/infer/{model}",
            params={"image": args.image, "output": "image"},
            data={"params": json.dumps({"tta": args.tta})},
        )
        r.raise_for_status()

    local, remote = timings(in_process, args.requests), timings(over_http, args.requests)
    return [(model, (statistics.median(remote), percentile(remote, 95), statistics.median(local)))]


@stoppable
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.research.benchmark_server", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--image", default="lesion_005", help="image id in sample-data (512x384 JPEG)")
    p.add_argument("--models", default="unet,deeplabv3,ensemble,deepedit", help="deepedit: per click, as Slicer asks")
    p.add_argument("--tta", action="store_true", help="ask for flip test-time augmentation")
    p.add_argument("--rounds", type=int, default=1, help="times the models take turns; medians of the rounds")
    p.add_argument("--deepedit", help="a click model file to serve as deepedit instead of the shipped one")
    p.add_argument("--click-options", default="{}", help="JSON of options sent with every click (click_zoom ...)")
    p.add_argument("--threads", type=int, default=0, help="the server's --conf threads (0: its default)")
    args = p.parse_args(argv)
    click_options = json.loads(args.click_options)
    models = args.models.split(",")
    image_path = next((REPO / "sample-data").glob(f"{args.image}.*"))
    os.environ["MONAI_LABEL_AUTO_UPDATE_SCORING"] = "false"
    with tempfile.TemporaryDirectory() as tmp:
        conf = {"threads": str(args.threads)} if args.threads else {}
        if args.deepedit:
            models_dir = Path(tmp) / "pretrained"
            models_dir.mkdir()
            for path in SHIPPED_MODEL_DIR.glob("pretrained_*.pt"):
                shutil.copy(path, models_dir / path.name)
            shutil.copy(args.deepedit, models_dir / "pretrained_deepedit.pt")
            conf["pretrained_dir"] = str(models_dir)
        t0 = time.perf_counter()
        with running_server(Path(tmp) / "server", conf) as url:
            startup = time.perf_counter() - t0
            print(f"server start-up (process start to first /info answer): {startup:.1f}s")
            with Image.open(image_path) as img:
                print(f"image {image_path.name} {img.width}x{img.height}")
            rows: dict[str, list[tuple[float, float, float | None]]] = {}
            with httpx.Client(timeout=600) as client:
                for _ in range(args.rounds):
                    for model in models:
                        for name, timing in model_timings(client, url, model, args, image_path, click_options, tmp):
                            rows.setdefault(name, []).append(timing)
            print(f"medians of {args.rounds} rounds, the models taking turns")
            print("| model | HTTP median ms | HTTP p95 ms | in-process median ms | server overhead |")
            print("|---|---|---|---|---|")
            for name, timings_ in rows.items():
                med = statistics.median(t[0] for t in timings_)
                p95 = statistics.median(t[1] for t in timings_)
                local = [t[2] for t in timings_ if t[2] is not None]
                loc = f"{statistics.median(local) * 1e3:.1f} | {med / statistics.median(local):.2f}x" if local else " |"
                print(f"| {name} | {med * 1e3:.1f} | {p95 * 1e3:.1f} | {loc} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
