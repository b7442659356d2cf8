"""Atomic file writes: a reader (the server, a viewer, a second process) never sees half a file.

Every model, label, datastore file and result the project writes goes through :func:`atomic_write`: the
content is written to a temporary file beside the target, flushed to disk, then renamed over it, and the
folder is synced so the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

#: Fault injection for the crash tests (tests/integration/test_faults.py): seconds ``atomic_write`` sleeps
#: between writing the temp file and renaming it, so a test can kill the server at that exact point.
FAULT_SLEEP_ENV = "LESION_FAULT_SLEEP_BEFORE_RENAME"
#: Optional glob on the target's file name (e.g. ``.candidate_*``); without it every atomic write sleeps.
FAULT_MATCH_ENV = "LESION_FAULT_MATCH"


def _fault_pause(path: Path) -> None:
    seconds = float(os.environ.get(FAULT_SLEEP_ENV) or 0)
    if seconds > 0 and fnmatch.fnmatch(path.name, os.environ.get(FAULT_MATCH_ENV) or "*"):
        logger.warning("%s: holding %s for %gs, its temp file complete, unrenamed", FAULT_SLEEP_ENV, path, seconds)
        time.sleep(seconds)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Calls ``write(tmp_path)``, then renames the temporary file onto ``path`` (same folder, so atomic).

    The file is created with mode 0644 (models and labels are meant to be readable). Raises whatever
    ``write`` or the file system raises (``OSError`` for a full or read-only disk); the target is then
    unchanged and no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _fault_pause(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_stream(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """:func:`atomic_write` for code that writes to an open binary file object."""

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, to_file)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copies ``src`` to ``dest`` byte for byte, atomically."""

    def copy(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            while chunk := s.read(1 << 20):
                f.write(chunk)

    atomic_write_stream(dest, copy)


def _fsync_folder(folder: Path) -> None:
    """Makes a rename durable; not every file system lets a folder be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
