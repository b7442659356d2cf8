"""The datastore file (``datastore_v2.json``) as state shared by processes: merged, never lost, never fatal.

MONAI Label keeps the datastore's bookkeeping in memory and writes it whole to one JSON file. Its scoring and
training run in other processes that build their own copy of the datastore, update it and write the file too;
the server process never reads the file again, so its next write puts back its stale copy and the other
process's scores are lost. A file cut short (a full disk, an editor) stops the server at start-up naming no file.

:class:`SharedDatastoreFile`, mixed into both datastores before MONAI Label's ``LocalDatastore``:

- every write happens under the datastore's file lock on a copy read fresh from the file (read-modify-write), and
  replaces the file atomically (temporary file, fsync, rename);
- every read first picks up what another process wrote (a ``stat``; the file is parsed only when it changed);
- a file that does not parse is moved aside (``datastore_v2.json.damaged-<time>``, logged with its path) and
  the bookkeeping is rebuilt from the photographs and label files on disk, which are the truth.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from filelock import FileLock
from monailabel.datastore.local import LocalDatastoreModel

from lesion_app.server import checks

logger = logging.getLogger(__name__)


class SharedDatastoreFile:
    """Read-modify-write of MONAI Label's datastore file (attributes are ``LocalDatastore``'s own).

    ``writes_refused`` (``--conf read_only``) keeps every change in memory and never touches the file.
    """

    _datastore: LocalDatastoreModel
    _datastore_config_path: str
    _datastore_path: str
    _lock_file: str
    _config_ts: float
    writes_refused: bool = False

    # -- reading ---------------------------------------------------------------------------------------------

    def _load_if_changed(self) -> None:
        """Re-reads the file if another process changed it; the caller holds the lock. A damaged file is set
        aside and the in-memory bookkeeping kept (the reconcile that follows fills it from the files on disk)."""
        path = self._datastore_config_path
        try:
            stamp = os.stat(path).st_mtime
        except FileNotFoundError:
            return
        if stamp == self._config_ts:
            return
        try:
            with open(path) as f:
                model = LocalDatastoreModel.model_validate_json(f.read())
        except (ValueError, OSError) as e:
            aside = f"{path}.damaged-{datetime.now():%Y%m%d-%H%M%S-%f}"
            os.replace(path, aside)
            logger.error(
                f"the datastore file {path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                f"kept aside as {aside}; rebuilding it from the photographs and labels on disk"
            )
            self._config_ts = 0
            return
        model.base_path = self._datastore_path
        self._datastore = model
        self._config_ts = stamp

    def _init_from_datastore_file(self, throw_exception: bool = False) -> None:
        """MONAI Label's reload, made safe: under the lock, only when changed, damage set aside (never raised)."""
        with FileLock(self._lock_file):
            self._load_if_changed()

    def _fresh(self) -> None:
        """Picks up what another process wrote, before answering a read."""
        if not self.writes_refused:
            self._init_from_datastore_file()

    # -- writing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Read-modify-write: the lock, a fresh copy, the caller's change, an atomic write."""
        with FileLock(self._lock_file):
            self._load_if_changed()
            yield
            self._update_datastore_file(lock=False)

    def _update_datastore_file(self, lock: bool = True) -> None:
        """Writes the bookkeeping atomically (no process ever reads half of it); read-only: nothing is written."""
        if self.writes_refused:
            return

        def write() -> None:
            # pydantic's own encoder, compact: 0.04 s at 10,000 photographs (json.dumps of model_dump, indented: 0.4 s)
            text = self._datastore.model_dump_json(exclude={"base_path"}, fallback=str)
            checks.stored(self._datastore_config_path, lambda f: f.write(text.encode()))
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    # -- MONAI Label's reads and info updates, on fresh state ------------------------------------------------

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """Merges ``info`` into the image's info, on the file as it is now (scores from other processes kept)."""
        with self._changing():
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise checks.not_found(f"image {image_id!r} is not in the datastore")
            obj.image.info.update(info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        """Merges ``info`` into a label's info, on the file as it is now."""
        with self._changing():
            obj = self._datastore.objects.get(label_id)
            label = obj.labels.get(label_tag) if obj else None
            if label is None:
                raise checks.not_found(f"image {label_id!r} has no {label_tag!r} label")
            label.info.update(info)

    def update_images_info(self, infos: dict[str, dict[str, Any]]) -> None:
        """Merges each image's ``info`` in one write of the file (a scoring batch); images removed meanwhile are
        left out."""
        with self._changing():
            for image_id, info in infos.items():
                obj = self._datastore.objects.get(image_id)
                if obj is not None:
                    obj.image.info.update(info)

    def image_infos(self) -> dict[str, dict[str, Any]]:
        """Every image's info by id, from one fresh read (a strategy over 10,000 photographs reads them at once)."""
        self._fresh()
        return {image_id: obj.image.info for image_id, obj in self._datastore.objects.items()}

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        self._fresh()
        return super().get_image_info(image_id)  # type: ignore[misc]

    def json(self) -> dict[str, Any]:
        self._fresh()
        return super().json()  # type: ignore[misc]

    def json_text(self) -> str:
        """What :meth:`json` gives, as JSON text encoded by pydantic (``GET /datastore/?output=all``): 0.04 s at
        10,000 photographs, where building the dict and encoding it took 0.2 s."""
        self._fresh()
        return self._datastore.model_dump_json(exclude={"base_path"}, fallback=str)
