"""Starts a real MONAI Label server with the lesion app on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(workdir: Path, conf: dict[str, str] | None = None, timeout: float = 90.0) -> Iterator[str]:
    """Copies sample-data into ``workdir``, serves it, yields the base URL, then stops the server.

    Models the server trains go to ``workdir/models``, never into the repository.
    """
    studies = workdir / "studies"
    shutil.copytree(REPO / "sample-data", studies)
    (workdir / "models").mkdir()
    port = free_port()
    conf = {"model_dir": str(workdir / "models"), **(conf or {})}
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "lesion_app")]
    cmd += ["--studies", str(studies), "--host", "127.0.0.1", "--port", str(port)]
    for k, v in conf.items():
        cmd += ["--conf", k, v]
    with open(workdir / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {proc.returncode}:\n{(workdir / 'server.log').read_text()[-4000:]}"
                )
            try:
                if httpx.get(f"{url}/info/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not up after {timeout}s:\n{(workdir / 'server.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
