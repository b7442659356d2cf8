"""Starts a real MONAI Label server with the lesion app on a free loopback port (tests, benchmarks, load).

``running_server`` yields the base URL; ``server_process`` yields a :class:`Server` with the process too,
so fault tests can SIGKILL it (its whole process group: MONAI Label trains in a child process) and start
it again on the same workdir. The server is stopped when the block ends, also by an error, Ctrl-C, or SIGTERM
and SIGHUP in a :func:`apps.process_control.stoppable` program; it gets SIGTERM if the caller dies (Linux).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from apps.process_control import parent_death_signal, stop_process_tree, wait_gone

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A started server: its URL, its process (the leader of its own process group) and its log."""

    url: str
    proc: subprocess.Popen
    workdir: Path
    log: Path
    log_offset: int = 0  # where this start's output begins in ``log`` (restarts append to it)

    def log_text(self) -> str:
        """What this start of the server has logged so far."""
        with open(self.log, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server and everything it started (train and scoring subprocesses): a crash, no clean-up."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        wait_gone(children, 10.0)  # no child still runs (a zombie writes nothing), so a restart finds the files quiet

    def stop(self) -> None:
        """SIGTERM the process group and whatever the server started; SIGKILL what is still there after 15 s."""
        stop_process_tree(self.proc, timeout=15)


def own_checkout_first() -> str:
    """``PYTHONPATH`` for a server this checkout starts: its own ``lesion_app`` before the one the virtual
    environment's editable install names (a worktree's benchmark serves the worktree's code, not the main one's)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@contextmanager
def server_process(
    workdir: Path,
    conf: dict[str, str] | None = None,
    timeout: float = 90.0,
    *,
    reuse: bool = False,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    studies_url: str | None = None,
) -> Iterator[Server]:
    """Serves ``workdir/studies`` (a fresh copy of sample-data) and yields the :class:`Server`; stops it after.

    Models the server trains go to ``workdir/models``, never into the repository. ``reuse=True`` serves what
    an earlier start left in ``workdir`` (a restart after a crash), copying sample-data only if nothing is
    there. ``env`` is added to this process's environment (e.g. ``MONAI_LABEL_*`` settings); ``preexec_fn``
    runs in the child before it starts (e.g. ``resource.setrlimit``), after it has asked for SIGTERM when this
    process dies. ``studies_url`` serves a DICOMweb server instead, caching in ``workdir/dicom-cache``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    studies = workdir / "studies"
    if studies_url:
        env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(workdir / "dicom-cache"), **(env or {})}
    elif not (reuse and studies.exists()):
        shutil.copytree(REPO / "sample-data", studies)
    (workdir / "models").mkdir(exist_ok=reuse)
    port = free_port()
    conf = {"model_dir": str(workdir / "models"), **(conf or {})}
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "lesion_app")]
    cmd += ["--studies", studies_url or str(studies), "--host", "127.0.0.1", "--port", str(port)]
    for k, v in conf.items():
        cmd += ["--conf", k, v]
    die_with_us = parent_death_signal()

    def preexec() -> None:
        die_with_us()
        if preexec_fn is not None:
            preexec_fn()

    log_path = workdir / "server.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "a") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": own_checkout_first(), **(env or {})},
            preexec_fn=preexec,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, workdir, log_path, offset)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()[-4000:]}")
            try:
                if httpx.get(f"{server.url}/info/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not up after {timeout}s:\n{server.log_text()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


@contextmanager
def running_server(
    workdir: Path,
    conf: dict[str, str] | None = None,
    timeout: float = 90.0,
    *,
    reuse: bool = False,
    env: dict[str, str] | None = None,
    studies_url: str | None = None,
) -> Iterator[str]:
    """Copies sample-data into ``workdir`` (or uses ``studies_url``), serves it, yields the base URL, then stops."""
    with server_process(workdir, conf, timeout, reuse=reuse, env=env, studies_url=studies_url) as server:
        yield server.url
