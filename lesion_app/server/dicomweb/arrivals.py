"""When the app first saw each SEG on the DICOMweb server: the order in which corrections arrived.

A SEG's own SeriesDate/SeriesTime come from the clock of whoever wrote it: the server's for the app's SEGs, the
browser's (and its time zone) for OHIF's. Comparing them across writers can put an older correction first.
The app's own clock is consistent: every SEG gets the time the app first listed it (or stored it), kept in a
small JSON file beside the datastore cache so the training process, which builds its own listing, orders SEGs
as the server process does. SEGs first seen in the same listing share a time; their own dates break the tie.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock

from lesion_app.io import files

logger = logging.getLogger(__name__)


class Arrivals:
    """SEG series UID -> the (Unix) time the app first saw it; in memory only when ``path`` is None."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else None
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def _read(self) -> dict[str, float]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return {str(k): float(v) for k, v in data.items()}
        except (ValueError, OSError, AttributeError) as e:  # a damaged file costs only the order of old SEGs
            logger.warning(f"{self.path} cannot be read ({type(e).__name__}); SEG arrival times start again")
            return {}

    def _write(self, seen: dict[str, float]) -> None:
        assert self.path is not None
        try:
            files.atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps(seen)))
        except OSError as e:  # a read-only or full disk: the order holds in this process only
            logger.warning(f"cannot record SEG arrival times in {self.path} ({e}); kept in memory")

    def stamp(self, uids: Iterable[str], now: float) -> dict[str, float]:
        """The first-seen time of each of ``uids``; those never seen before get ``now`` (and are recorded)."""
        wanted = set(uids)
        with self._lock:
            missing = wanted - self._seen.keys()
            if missing and self.path is not None:
                with FileLock(str(self.path) + ".lock"):
                    on_disk = self._read()
                    self._seen.update(on_disk)
                    new = {uid: now for uid in wanted - self._seen.keys()}
                    if new:
                        self._seen.update(new)
                        self._write({**on_disk, **new})
            else:
                self._seen.update({uid: now for uid in missing})
            return {uid: self._seen[uid] for uid in wanted}
