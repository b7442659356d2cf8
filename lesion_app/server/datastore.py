"""Datastore for 2D dermoscopy photographs: MONAI Label's local datastore with its input checked.

The stock :class:`LocalDatastore` writes wherever an id points (``../`` escapes the studies folder), lets
any file replace a final label and answers malformed uploads with HTTP 500. :class:`LesionDatastore`
validates every write first (see :mod:`lesion_app.server.checks`), answers bad input with a 4xx
:class:`fastapi.HTTPException` (MONAI Label's endpoints pass it through as that status), writes files
and the datastore JSON atomically, and can refuse every write (``--conf read_only true``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from monailabel.config import settings as ml_settings
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.utils.others.generic import remove_file

from lesion_app.io import layout
from lesion_app.io.layout import IMAGE_SUFFIXES, label_file_name
from lesion_app.server import checks

logger = logging.getLogger(__name__)

#: MONAI Label's watcher patterns for the photographs (its listing is :meth:`LesionDatastore._list_files`).
IMAGE_PATTERNS = tuple(f"*{suffix}" for suffix in IMAGE_SUFFIXES)

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_UPLOAD_MB = 50.0


class LesionDatastore(LocalDatastore):
    """A local datastore that checks uploads, never writes outside its folder and never half-writes a file."""

    def __init__(
        self,
        datastore_path: str,
        *,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
        read_only: bool = False,
        reconcile: bool = True,
        **kwargs: Any,
    ) -> None:
        """``read_only`` refuses every write (403); ``reconcile=False`` is MONAI Label's own ``read_only``:
        files added to the folder by hand are not picked up at start-up."""
        self.max_image_pixels = int(max_image_pixels)
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self.writes_refused = bool(read_only)
        self._skipped: set[str] = set()
        super().__init__(datastore_path, read_only=not reconcile, **kwargs)
        self._root = os.path.realpath(datastore_path)

    # -- writes ------------------------------------------------------------------------------------------

    def _inside(self, path: str) -> str:
        """The real path of a destination, which must lie inside the studies folder (belt and braces)."""
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._root]) != self._root:
            raise checks.bad_request("the request names a path outside the studies folder")
        return real

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Adds a photograph that decodes completely; 409 if the id exists (its labels would no longer fit)."""
        checks.refuse_if_read_only(self.writes_refused, f"add image {image_id!r}")
        ext = checks.image_extension(os.path.basename(image_filename))
        if not image_id:
            image_id = os.path.basename(image_filename)[: -len(ext)]
        checks.check_image_id(image_id)
        if image_id in self._datastore.objects:
            raise checks.conflict(f"image {image_id!r} exists; remove it first or use another id")
        checks.check_upload_size(image_filename, self.max_upload_bytes, "image")
        checks.check_image_file(image_filename, self.max_image_pixels)

        name = self._filename(image_id, ext)
        dest = self._inside(os.path.join(self._datastore.image_path(), name))
        logger.info(f"Adding Image: {image_id} => {name}")
        with FileLock(self._lock_file):  # not re-entrant: nothing in here may take it again
            if image_id in self._datastore.objects or os.path.exists(dest):
                raise checks.conflict(f"image {image_id!r} exists; remove it first")
            checks.stored_copy(image_filename, dest)
            info = dict(image_info or {})
            info.update(ts=int(time.time()), name=name)
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            try:
                self._update_datastore_file(lock=False)
            except BaseException:
                self._datastore.objects.pop(image_id, None)
                remove_file(dest)
                raise
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Saves a 2D binary label of the image's (upright) size as ``labels/<tag>/<id>.png``, atomically.

        PNG uploads are stored byte for byte; TIFF, BMP, NRRD and NIfTI are stored as 0/1 PNG, which the
        trainer reads. Any failure leaves the previous label as it was.
        """
        checks.refuse_if_read_only(self.writes_refused, f"save a label for {image_id!r}")
        checks.check_tag(label_tag)
        obj = self._known(image_id)
        image_path = self.get_image_uri(image_id)
        ext, mask = checks.checked_label(
            label_filename, image_path, image_id, self.max_upload_bytes, self.max_image_pixels
        )

        label_dir = self._datastore.label_path(label_tag)
        name = label_file_name(image_id)
        dest = self._inside(os.path.join(label_dir, name))
        logger.info(f"Saving Label: {image_id} => {label_tag} => {name}")
        with FileLock(self._lock_file):
            os.makedirs(label_dir, exist_ok=True)
            old = obj.labels.get(label_tag)
            if ext == ".png":
                checks.stored_copy(label_filename, dest)
            else:
                checks.stored_png(mask, dest)
            info = dict(label_info or {})
            info.update(ts=int(time.time()), name=name)
            obj.labels[label_tag] = DataModel(info=info, ext=".png")
            self._update_datastore_file(lock=False)
            if old is not None and old.ext != ".png":  # the same label under its former extension
                remove_file(self._inside(os.path.join(label_dir, self._filename(image_id, old.ext))))
        return image_id

    def remove_image(self, image_id: str) -> None:
        checks.refuse_if_read_only(self.writes_refused, f"remove image {image_id!r}")
        self._known(image_id)
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        checks.refuse_if_read_only(self.writes_refused, f"remove the {label_tag!r} label of {label_id!r}")
        checks.check_reference(label_tag, "label tag")
        if not self._known(label_id).labels.get(label_tag):
            raise checks.not_found(f"image {label_id!r} has no {label_tag!r} label")
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        """Kept in memory in read-only mode (scoring stores its results here); 404 for an unknown image."""
        self._known(image_id)
        super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        if not self._known(label_id).labels.get(label_tag):
            raise checks.not_found(f"image {label_id!r} has no {label_tag!r} label")
        super().update_label_info(label_id, label_tag, info)

    # -- listing -----------------------------------------------------------------------------------------

    def _list_files(self, path: str, patterns: Any) -> dict[str, str]:
        """The photographs (or labels) in a folder by :mod:`lesion_app.io.layout`'s rules: image suffixes in any
        case, no hidden or AppleDouble (``._x.jpg``) files, valid ids only; what is skipped is logged once."""
        found: dict[str, str] = {}
        for entry in sorted(Path(path).iterdir()) if os.path.isdir(path) else []:
            if not layout.is_image_file(entry):
                if entry.is_file() and layout.image_suffix(entry.name) and entry.name not in self._skipped:
                    self._skipped.add(entry.name)
                    logger.warning(f"skipped {entry}: hidden or metadata file, not a photograph")
                continue
            problem = layout.id_problem(layout.image_id(entry))
            if problem:
                if entry.name not in self._skipped:
                    self._skipped.add(entry.name)
                    logger.warning(f"skipped {entry}: its id {layout.image_id(entry)!r} {problem}")
                continue
            found[entry.name] = entry.name
        return found

    def _to_id(self, file: str) -> tuple[str, str]:
        """(image id, the file's own extension): ``X.TIF`` -> (``X``, ``.TIF``), so the file is found again."""
        image_id = layout.image_id(file)
        return image_id, os.path.basename(file)[len(image_id) :]

    # -- reads -------------------------------------------------------------------------------------------

    def _known(self, image_id: str) -> ImageLabelModel:
        """The datastore entry of an id a request names: 400 if it is malformed, 404 if it is unknown."""
        obj = self._datastore.objects.get(image_id) if isinstance(image_id, str) else None
        if obj is None:
            checks.check_reference(image_id or "")
            raise checks.not_found(f"image {image_id!r} is not in the datastore")
        return obj

    def get_image_uri(self, image_id: str) -> str:
        """404 for an unknown id (infer answered 500: it went on with an empty path)."""
        self._known(image_id)
        return super().get_image_uri(image_id)

    # -- the datastore file ------------------------------------------------------------------------------

    def _update_datastore_file(self, lock: bool = True) -> None:
        """Writes the datastore JSON atomically (the scoring process never reads half of it); in read-only
        mode the studies folder is never written and changes stay in memory."""
        if self.writes_refused:
            return

        def write() -> None:
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            checks.stored(self._datastore_config_path, lambda f: f.write(text.encode()))
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()


def local_datastore(studies: str, settings: Any) -> LesionDatastore:
    """The datastore for a ``--studies`` folder, with the app's limits (``settings``: :class:`LesionSettings`) and
    MONAI Label's own auto-reload and read-only settings."""
    return LesionDatastore(
        studies,
        max_image_pixels=settings.max_image_pixels,
        max_upload_mb=settings.max_upload_mb,
        read_only=settings.read_only,
        extensions=list(IMAGE_PATTERNS),
        auto_reload=ml_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
        reconcile=not ml_settings.MONAI_LABEL_DATASTORE_READ_ONLY,
    )
