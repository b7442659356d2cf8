"""One training per model at a time, across server restarts: a lock file the running training holds.

The training process holds an exclusive ``flock`` on ``<model_dir>/.training_<model>.lock`` for its whole run
and writes its pid and run id into it; the kernel releases the lock when the process ends, however it ends, so
a lock that is held always means a live run. A restarted server checks it: a run it did not start (left by a
server that was stopped or killed) is stopped before anything else (:func:`stop_leftover`), and a training
request is refused while the lock is held (:func:`holder`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def lock_path(model_dir: str | os.PathLike, model: str) -> Path:
    """The lock file of ``model``'s trainings."""
    return Path(model_dir) / f".training_{model}.lock"


class RunLock:
    """The lock of one run: :meth:`acquire` (False if another run holds it), held until :meth:`release` or the
    process ends."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, run: dict[str, Any]) -> bool:
        """Takes the lock without waiting and records ``run`` (its pid and id) in the file; False if held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(run).encode())
        os.fsync(fd)
        self._fd = fd
        return True

    def release(self) -> None:
        """Releases the lock (the file stays: removing it would race with the next run's open)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """The run holding the lock (``{"pid", "run", ...}`` as it wrote them), or None when no run holds it."""
    path = Path(path)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(path.read_text() or "{}") or {"pid": None}
            except ValueError:
                return {"pid": None}
        return None
    finally:
        os.close(fd)


def stop_leftover(path: str | os.PathLike, timeout: float = 15.0) -> dict[str, Any] | None:
    """Stops the run holding the lock, which no live server started (SIGTERM; SIGKILL after ``timeout``
    seconds); returns what it recorded, or None when no run held the lock."""
    run = holder(path)
    pid = run.get("pid") if run else None
    if not isinstance(pid, int):
        return run
    logger.warning(f"a training left running by a server that ended (pid {pid}, {path}): stopping it")
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while holder(path) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if holder(path) is None:
            break
    return run
