"""Concurrent infer load against a running lesion_app server: throughput, latency, errors, peak memory.

N client threads (httpx, one connection each) send infer requests over loopback for a mix of the
datastore's images until ``--requests`` are done or ``--seconds`` have passed; a sampler reads the RSS of
the server's process tree (the server and its train/scoring subprocesses) every 0.2 s. Prints a Markdown
table (``--json`` writes the figures as JSON too) and exits 1 if any request failed.

Example::

    lesion-load --start --clients 8 --requests 200                     # own server over a copy of sample-data
    lesion-load --start --during-training --train-epochs 3              # the same while a training runs
    lesion-load --url http://127.0.0.1:8000 --models unet,deeplabv3 --json load.json

With ``--start`` the server runs with ``MONAI_LABEL_INFER_CONCURRENCY`` (``--infer-concurrency``, default
1), ``MONAI_LABEL_INFER_TIMEOUT`` (``--infer-timeout``) and ``--conf threads`` (``--threads``, default 1)
and without the start-up uncertainty scoring, which would otherwise share the CPU with the load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

from apps.process_control import stoppable

#: How often the server's memory is sampled, in seconds.
SAMPLE_EVERY = 0.2


@dataclass
class LoadResult:
    """The figures of one load run (times in milliseconds, memory in MiB)."""

    clients: int
    requests: int
    ok: int
    errors: int
    seconds: float
    throughput: float
    median_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    peak_rss_mib: float | None
    models: list[str]
    images: int
    training: dict[str, Any] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.0f}"

        rss = "n/a" if self.peak_rss_mib is None else f"{self.peak_rss_mib:.0f}"
        training = "yes" if self.training.get("requested") else "no"
        if self.training.get("requested"):
            training += f" (running in {self.training.get('running_fraction', 0):.0%} of samples)"
        rows = [
            "| clients | requests | failed | seconds | req/s | median ms | p95 ms | max ms | peak RSS MiB | training |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {self.clients} | {self.requests} | {self.errors} | {self.seconds:.1f} | {self.throughput:.2f} "
            f"| {ms(self.median_ms)} | {ms(self.p95_ms)} | {ms(self.max_ms)} | {rss} | {training} |",
        ]
        if self.first_errors:
            rows += ["", "First errors:", *[f"- {e}" for e in self.first_errors]]
        return "\n".join(rows)


def is_train_process(process: psutil.Process) -> bool:
    """MONAI Label's train subprocess: ``python -m monailabel.interfaces.utils.app -m train ...``."""
    try:
        cmd = process.cmdline()
    except psutil.Error:
        return False
    return "monailabel.interfaces.utils.app" in cmd and "train" in cmd


class MemorySampler(threading.Thread):
    """Peak RSS of a process and all its descendants; also whether a train subprocess was alive."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.samples = 0
        self.training_samples = 0
        self._done = threading.Event()

    def sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for p in processes:
            with suppress(psutil.Error):  # exited between listing and reading
                rss += p.memory_info().rss
        self.peak = max(self.peak, rss)
        self.samples += 1
        self.training_samples += any(is_train_process(p) for p in processes[1:])

    def run(self) -> None:
        while not self._done.wait(SAMPLE_EVERY):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()


def server_pid(url: str) -> int | None:
    """The process listening on the URL's port (for ``--url``); None if it cannot be seen from here."""
    port = urlparse(url).port
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except psutil.Error:
        return None
    return None


def image_ids(client: httpx.Client, url: str) -> list[str]:
    """Every image id in the server's datastore, sorted."""
    r = client.get(f"{url}/datastore/", params={"output": "all"})
    r.raise_for_status()
    objects = r.json().get("objects", {})
    return sorted(objects)


def train_status(client: httpx.Client, url: str) -> str | None:
    r = client.get(f"{url}/train/", params={"check_if_running": "false"}, timeout=120)
    return r.json().get("status") if r.status_code == 200 and isinstance(r.json(), dict) else None


def start_training(client: httpx.Client, url: str, model: str, epochs: int, wait: float = 120.0) -> str:
    """POSTs a training and waits until MONAI Label says it is RUNNING (raises if it is not)."""
    r = client.post(f"{url}/train/{model}", json={"max_epochs": epochs}, timeout=60)
    r.raise_for_status()
    deadline = time.monotonic() + wait
    while (status := train_status(client, url)) != "RUNNING":
        if status not in ("SUBMITTED", None) or time.monotonic() > deadline:
            raise RuntimeError(f"training of {model} is {status}, not RUNNING")
        time.sleep(0.5)
    return status


def run_load(
    url: str,
    clients: int = 8,
    requests: int = 200,
    seconds: float = 300.0,
    models: tuple[str, ...] = ("unet",),
    pid: int | None = None,
    during_training: str | None = None,
    train_epochs: int = 3,
    timeout: float = 120.0,
) -> LoadResult:
    """Sends the load and measures it; ``during_training`` names a model to train while it runs."""
    with httpx.Client(timeout=timeout) as client:
        ids = image_ids(client, url)
        if not ids:
            raise RuntimeError("the datastore has no images")
        for model in models:  # warm-up: model load, allocator; not timed
            client.post(f"{url}/infer/{model}", params={"image": ids[0], "output": "json"}).raise_for_status()
        training: dict[str, Any] = {"requested": during_training is not None}
        pid = pid or server_pid(url)
        sampler = MemorySampler(pid) if pid else None
        if sampler:
            sampler.sample()
            sampler.start()
        if during_training:
            training["model"] = during_training
            training["epochs"] = train_epochs
            training["status_at_start"] = start_training(client, url, during_training, train_epochs)
    jobs = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(timeout=timeout) as http:
            while True:
                with lock:
                    i = next(jobs)
                if i >= requests or time.monotonic() > deadline:
                    return
                model, image = models[i % len(models)], ids[i % len(ids)]
                t = time.perf_counter()
                try:
                    r = http.post(f"{url}/infer/{model}", params={"image": image, "output": "image"})
                    message = None if r.status_code == 200 else f"{model} {image}: HTTP {r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    message = f"{model} {image}: {type(e).__name__}: {e}"
                elapsed = time.perf_counter() - t
                with lock:
                    if message is None:
                        latencies.append(elapsed)
                    else:
                        errors.append(message)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if sampler:
        sampler.stop()
    if during_training:
        with httpx.Client(timeout=timeout) as client:
            training["status_at_end"] = train_status(client, url)
        if sampler and sampler.samples:
            training["running_fraction"] = sampler.training_samples / sampler.samples
    ms = [x * 1e3 for x in latencies]
    done = len(latencies) + len(errors)
    return LoadResult(
        clients=clients,
        requests=done,
        ok=len(latencies),
        errors=len(errors),
        seconds=wall,
        throughput=done / wall if wall > 0 else 0.0,
        median_ms=statistics.median(ms) if ms else None,
        p95_ms=float(np.percentile(ms, 95)) if ms else None,
        max_ms=max(ms) if ms else None,
        peak_rss_mib=sampler.peak / 2**20 if sampler else None,
        models=list(models),
        images=len(ids),
        training=training,
        first_errors=errors[:5],
    )


def server_env(infer_concurrency: int, infer_timeout: int) -> dict[str, str]:
    """The MONAI Label settings ``--start`` runs with (see the module docstring for why)."""
    return {
        "MONAI_LABEL_INFER_CONCURRENCY": str(infer_concurrency),
        "MONAI_LABEL_INFER_TIMEOUT": str(infer_timeout),
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    }


@contextmanager
def started_server(conf: dict[str, str], env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """A server over a temporary copy of sample-data: (url, pid)."""
    from apps.research.local_server import server_process

    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp), conf, env=env) as server:
        yield server.url, server.proc.pid


@stoppable
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-load", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    where.add_argument("--start", action="store_true", help="start a server over a temporary copy of sample-data")
    p.add_argument("--pid", type=int, help="the server's process id (--url; found from the port if left out)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--seconds", type=float, default=300.0, help="stop sending after this long")
    p.add_argument("--models", default="unet", help="comma-separated models, requests go round-robin")
    p.add_argument("--during-training", nargs="?", const="unet", metavar="MODEL", help="train MODEL during the load")
    p.add_argument("--train-epochs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, seconds")
    p.add_argument("--threads", type=int, default=1, help="--start: the server's --conf threads")
    p.add_argument("--infer-concurrency", type=int, default=1, help="--start: MONAI_LABEL_INFER_CONCURRENCY")
    p.add_argument("--infer-timeout", type=int, default=60, help="--start: MONAI_LABEL_INFER_TIMEOUT, seconds")
    p.add_argument("--conf", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="--start")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write the figures as JSON ('-': stdout)")
    args = p.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    settings: dict[str, Any] = {}
    with ExitStack() as stack:
        if args.start:
            conf = {"threads": str(args.threads), **dict(args.conf)}
            env = server_env(args.infer_concurrency, args.infer_timeout)
            url, pid = stack.enter_context(started_server(conf, env))
            settings = {"conf": conf, "env": env}
        else:
            url, pid = args.url.rstrip("/"), args.pid
        result = run_load(
            url,
            clients=args.clients,
            requests=args.requests,
            seconds=args.seconds,
            models=models,
            pid=pid,
            during_training=args.during_training,
            train_epochs=args.train_epochs,
            timeout=args.timeout,
        )
    result.settings = settings
    print(result.markdown(), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        text = json.dumps(asdict(result), indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    trained_during = not args.during_training or result.training.get("running_fraction", 0) > 0
    return 0 if result.errors == 0 and result.ok > 0 and trained_during else 1


if __name__ == "__main__":
    raise SystemExit(main())
