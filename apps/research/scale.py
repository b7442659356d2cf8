"""The server at a clinic's size: a synthetic studies folder of N small photographs, and what a user waits for.

Builds ``--count`` drawn photographs (``--size``, JPEG) in a studies folder, serves it as MONAI Label documents
(``monailabel start_server``, background scoring off until asked) and prints:

- start-up: seconds from starting the server to its first ``/info`` answer;
- the listing (``GET /datastore/?output=all``) and the size of the datastore file;
- next sample for every strategy (median and slowest of ``--requests``);
- while the uncertainty scoring runs: ``/info``, the listing and infer, each the slowest and the median of 20
  requests, beside 20 ``/info`` and 20 infer requests before the scoring started (the baseline of this run);
- the scoring's throughput (photographs scored per second, counted in the datastore over ``--scoring-seconds``);
- how long a SIGTERM takes to stop the server and its scoring process.

Example::

    python -m apps.research.scale --count 1000
    python -m apps.research.scale --count 10000 --scoring-seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from apps.make_sample_data import draw_study
from apps.process_control import stoppable
from apps.research.local_server import server_process

STRATEGIES = ("random", "first", "uncertainty", "power")
#: The server's own background scoring stays off until the benchmark asks for it.
ENV = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}


def synthetic_studies(folder: Path, count: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """``count`` drawn (H, W) = ``size`` photographs ``photo_00000.jpg`` ... in ``folder`` (made), no labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        rgb, _ = draw_study(rng, size)
        Image.fromarray(rgb).save(folder / f"photo_{i:05d}.jpg", quality=90)
    return folder


def timed(call: Callable[[], httpx.Response]) -> float:
    """Seconds one request took; raises if it failed."""
    start = time.perf_counter()
    call().raise_for_status()
    return time.perf_counter() - start


def summary(seconds: Sequence[float]) -> str:
    return f"median {statistics.median(seconds) * 1000:.0f} ms, slowest {max(seconds) * 1000:.0f} ms"


def scored(url: str) -> int:
    """How many photographs have an uncertainty score in the datastore now."""
    objects = httpx.get(f"{url}/datastore/", params={"output": "all"}, timeout=120).json()["objects"]
    return sum("uncertainty_version" in o["image"]["info"] for o in objects.values())


def scoring_pid(server_pid: int) -> int | None:
    """The pid of the server's scoring process, if one runs."""
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if '"method":"uncertainty"' in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def run(count: int, workdir: Path, size: tuple[int, int], requests: int, scoring_seconds: float) -> None:
    start = time.perf_counter()
    synthetic_studies(workdir / "studies", count, size)
    print(f"studies folder: {count} photographs of {size[1]}x{size[0]} px drawn in {time.perf_counter() - start:.1f}s")
    conf = {"models": "unet", "threads": "1"}
    start = time.perf_counter()
    with server_process(workdir, conf, timeout=1800, reuse=True, env=ENV) as server:
        print(f"start-up: {time.perf_counter() - start:.1f} s to the first /info answer")
        url = server.url
        listing = [timed(lambda: httpx.get(f"{url}/datastore/", params={"output": "all"}, timeout=120))]
        listing += [timed(lambda: httpx.get(f"{url}/datastore/", params={"output": "all"}, timeout=120))]
        size_mb = (workdir / "studies" / "datastore_v2.json").stat().st_size / 2**20
        print(f"listing (?output=all): {summary(listing)}; datastore file {size_mb:.1f} MB")
        info_idle = [timed(lambda: httpx.get(f"{url}/info/", timeout=60)) for _ in range(20)]
        print(f"/info, nothing running (baseline): {summary(info_idle)}")
        infer_idle = [
            timed(lambda: httpx.post(f"{url}/infer/unet", params={"image": "photo_00000"}, timeout=120))
            for _ in range(20)
        ]
        print(f"infer, nothing running (baseline): {summary(infer_idle)}")
        for name in STRATEGIES:
            seconds = [
                timed(lambda name=name: httpx.post(f"{url}/activelearning/{name}", json={}, timeout=600))
                for _ in range(requests)
            ]
            print(f"next sample, {name}: {summary(seconds)}")
        httpx.post(f"{url}/scoring/uncertainty", json={}, timeout=60)  # queued behind the one next sample asked
        deadline = time.monotonic() + 300
        while scoring_pid(server.proc.pid) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # past the scoring process's start (model load)
        first = scored(url)
        t0 = time.perf_counter()
        during = {
            "/info": [timed(lambda: httpx.get(f"{url}/info/", timeout=60)) for _ in range(20)],
            "listing": [
                timed(lambda: httpx.get(f"{url}/datastore/", params={"output": "all"}, timeout=120)) for _ in range(20)
            ],
            "infer": [
                timed(lambda: httpx.post(f"{url}/infer/unet", params={"image": "photo_00000"}, timeout=120))
                for _ in range(20)
            ],
        }
        for what, seconds in during.items():
            print(f"{what} while the scoring runs: {summary(seconds)}")
        time.sleep(max(0.0, scoring_seconds - (time.perf_counter() - t0)))
        done = scored(url) - first
        elapsed = time.perf_counter() - t0
        print(f"scoring throughput: {done} photographs in {elapsed:.0f} s = {done / elapsed:.2f} per second")
        pid = scoring_pid(server.proc.pid)
        start = time.perf_counter()
        os.kill(server.proc.pid, signal.SIGTERM)
        server.proc.wait(60)
        while pid is not None and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        stopped = time.perf_counter() - start
        print(f"SIGTERM to the server during the scoring: server and scoring gone after {stopped:.1f} s")
    kept = sum(
        "uncertainty_version" in o["image"]["info"]
        for o in json.loads((workdir / "studies" / "datastore_v2.json").read_text())["objects"].values()
    )
    print(f"scores kept in the datastore file after the stop: {kept} (the next run starts from there)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apps.research.scale", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="photographs in the synthetic studies folder")
    p.add_argument("--size", type=int, nargs=2, default=(48, 64), metavar=("H", "W"), help="photograph size (px)")
    p.add_argument("--requests", type=int, default=5, help="next-sample requests timed per strategy")
    p.add_argument("--scoring-seconds", type=float, default=60.0, help="how long the scoring's throughput is counted")
    p.add_argument("--workdir", type=Path, help="where the studies folder goes (default: a temporary folder)")
    return p.parse_args(argv)


@stoppable
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        run(args.count, args.workdir, tuple(args.size), args.requests, args.scoring_seconds)
        return 0
    with tempfile.TemporaryDirectory(prefix="lesion-scale-") as tmp:
        run(args.count, Path(tmp), tuple(args.size), args.requests, args.scoring_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
