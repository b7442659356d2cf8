"""Datastore for 2D dermoscopy photographs: MONAI Label's local datastore with its input checked.

The stock :class:`LocalDatastore` writes wherever an id points (``../`` escapes the studies folder), lets
any file replace a final label and answers malformed uploads with HTTP 500. :class:`LesionDatastore`
validates every write first (see :mod:`lesion_app.server.checks`), answers bad input with a 4xx
:class:`fastapi.HTTPException` (MONAI Label's endpoints pass it through as that status), writes files
and the datastore JSON atomically, and can refuse every write (``--conf read_only true``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from monailabel.config import settings as ml_settings
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from lesion_app.io import layout
from lesion_app.io.layout import IMAGE_SUFFIXES, label_file_name
from lesion_app.server import checks
from lesion_app.server.datastore_file import SharedDatastoreFile

logger = logging.getLogger(__name__)

#: MONAI Label's watcher patterns for the photographs (its listing is :meth:`LesionDatastore._list_files`).
IMAGE_PATTERNS = tuple(f"*{suffix}" for suffix in IMAGE_SUFFIXES)

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_UPLOAD_MB = 50.0


class LesionDatastore(SharedDatastoreFile, LocalDatastore):
    """A local datastore that checks uploads and the labels it finds, never writes outside its folder, never
    half-writes a file and never loses what another process wrote (:class:`SharedDatastoreFile`)."""

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
        #: files left out because another file has their id (``a.png`` beside ``a.jpg``) -> that file
        self.id_clashes: dict[str, str] = {}
        #: label file -> ((label mtime, size, image mtime), the reason it fails the checks or None)
        self._label_checks: dict[str, tuple[tuple[float, int, float], str | None]] = {}
        super().__init__(datastore_path, read_only=not reconcile, **kwargs)
        self._root = os.path.abspath(datastore_path)

    # -- writes ------------------------------------------------------------------------------------------

    def _inside(self, path: str) -> str:
        """A destination's path as the studies folder names it, which must lie inside that folder (belt and
        braces: ids are checked already).

        Links are not resolved: a part of the studies folder that is a link to another folder (``labels/`` on
        another disk) is part of it; a file that is a link is replaced (atomic writes rename onto the link) or
        removed (:meth:`_remove_entry`) as the link itself, never followed to the file behind it.
        """
        entry = os.path.abspath(path)
        if os.path.commonpath([entry, self._root]) != self._root:
            raise checks.bad_request("the request names a path outside the studies folder")
        return entry

    def _remove_entry(self, path: str) -> None:
        """Removes a file of the studies folder; a link is removed itself, the file behind it is left alone."""
        entry = self._inside(path)
        if os.path.islink(entry) or os.path.isfile(entry):
            os.unlink(entry)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Adds a photograph that decodes completely; 409 if the id exists (its labels would no longer fit)."""
        checks.refuse_if_read_only(self.writes_refused, f"add image {image_id!r}")
        ext = checks.image_extension(os.path.basename(image_filename))
        if not image_id:
            image_id = os.path.basename(image_filename)[: -len(ext)]
        checks.check_image_id(image_id)
        self._fresh()
        if image_id in self._datastore.objects:
            raise checks.conflict(f"image {image_id!r} exists; remove it first or use another id")
        checks.check_upload_size(image_filename, self.max_upload_bytes, "image")
        checks.check_image_file(image_filename, self.max_image_pixels)

        name = self._filename(image_id, ext)
        dest = self._inside(os.path.join(self._datastore.image_path(), name))
        logger.info(f"Adding Image: {image_id} => {name}")
        try:
            with self._changing():  # the file lock is not re-entrant: nothing in here may take it again
                if image_id in self._datastore.objects or os.path.lexists(dest):
                    raise checks.conflict(f"image {image_id!r} exists; remove it first")
                checks.stored_copy(image_filename, dest)
                info = dict(image_info or {})
                info.update(ts=int(time.time()), name=name)
                self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
        except BaseException:
            if image_id in self._datastore.objects and os.path.lexists(dest):
                self._datastore.objects.pop(image_id, None)
                self._remove_entry(dest)
            raise
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Saves a 2D binary label of the image's (upright) size as ``labels/<tag>/<id>.png``, 0/1, atomically.

        Every encoding (0/1 or 0/255 PNG, 16-bit, palette, TIFF, BMP, 3D Slicer's NRRD and NIfTI) is stored as
        the same 0/1 PNG, which the trainer, the scoring and the viewers read alike. Any failure leaves the
        previous label as it was.
        """
        checks.refuse_if_read_only(self.writes_refused, f"save a label for {image_id!r}")
        checks.check_tag(label_tag)
        self._fresh()
        self._known(image_id)
        image_path = self.get_image_uri(image_id)
        _, mask = checks.checked_label(
            label_filename, image_path, image_id, self.max_upload_bytes, self.max_image_pixels
        )

        label_dir = self._datastore.label_path(label_tag)
        name = label_file_name(image_id)
        dest = self._inside(os.path.join(label_dir, name))
        logger.info(f"Saving Label: {image_id} => {label_tag} => {name}")
        with self._changing():
            obj = self._known(image_id)  # as the file has it now
            os.makedirs(label_dir, exist_ok=True)
            old = obj.labels.get(label_tag)
            checks.stored_png(mask, dest)
            info = dict(label_info or {})
            info.update(ts=int(time.time()), name=name)
            obj.labels[label_tag] = DataModel(info=info, ext=".png")
            if old is not None and old.ext != ".png":  # the same label under its former extension
                self._remove_entry(os.path.join(label_dir, self._filename(image_id, old.ext)))
        return image_id

    def remove_image(self, image_id: str) -> None:
        """Removes the photograph's entry in the studies folder (a link: the link) and its labels, never a file
        behind a link (MONAI Label removes the link's target and leaves a dangling link)."""
        checks.refuse_if_read_only(self.writes_refused, f"remove image {image_id!r}")
        obj = self._known(image_id)
        logger.info(f"Removing Image: {image_id}")
        for tag, label in list(obj.labels.items()):
            self._remove_entry(os.path.join(self._datastore.label_path(tag), self._filename(image_id, label.ext)))
        self._remove_entry(os.path.join(self._datastore.image_path(), self._filename(image_id, obj.image.ext)))
        self._forget(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Removes one label file of the studies folder (a link: the link itself)."""
        checks.refuse_if_read_only(self.writes_refused, f"remove the {label_tag!r} label of {label_id!r}")
        checks.check_reference(label_tag, "label tag")
        label = self._known(label_id).labels.get(label_tag)
        if not label:
            raise checks.not_found(f"image {label_id!r} has no {label_tag!r} label")
        logger.info(f"Removing label: {label_id} => {label_tag}")
        self._remove_entry(os.path.join(self._datastore.label_path(label_tag), self._filename(label_id, label.ext)))
        self._forget(label_id, label_tag)

    def _forget(self, image_id: str, label_tag: str | None = None) -> None:
        """The bookkeeping follows a removal at once: MONAI Label deletes the file and, with auto-reload on, leaves the
        entry until its file watcher notices, so an upload under the same id meanwhile was a 409 and a training
        could still list a deleted label."""
        with self._changing():
            obj = self._datastore.objects.get(image_id)
            if obj is not None and label_tag is None:
                del self._datastore.objects[image_id]
            elif obj is not None:
                obj.labels.pop(label_tag, None)

    # -- listing -----------------------------------------------------------------------------------------

    def _list_files(self, path: str, patterns: Any) -> dict[str, str]:
        """The photographs (or labels) in a folder by :mod:`lesion_app.io.layout`'s rules: image suffixes in any
        case, no hidden or AppleDouble (``._x.jpg``) files, valid ids only, one file per id (``a.png`` beside
        ``a.jpg`` is left out and reported in :attr:`id_clashes`); what is skipped is logged once."""
        found: dict[str, str] = {}
        ids: dict[str, str] = {}  # image id -> the file listed under it
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
            image_id = layout.image_id(entry)
            if image_id in ids:  # a.jpg and a.png: which one is meant cannot be told; never resolved silently
                if entry.name not in self._skipped:
                    self._skipped.add(entry.name)
                    self.id_clashes[entry.name] = ids[image_id]
                    logger.warning(f"skipped {entry}: its id {image_id!r} is {ids[image_id]}'s; rename one of them")
                continue
            ids[image_id] = entry.name
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

    # -- labels found on disk --------------------------------------------------------------------------------

    def _label_problem(self, image_id: str, label_path: str, image_path: str) -> str | None:
        """Why a final label found on disk fails the checks an upload passes (size, values, axes), or None;
        remembered per version of the two files."""
        try:
            key = (os.stat(label_path).st_mtime, os.stat(label_path).st_size, os.stat(image_path).st_mtime)
        except OSError as e:
            return f"cannot be read ({e.strerror})"
        cached = self._label_checks.get(label_path)
        if cached and cached[0] == key:
            return cached[1]
        problem = checks.label_problem(label_path, image_path, image_id, self.max_image_pixels)
        self._label_checks[label_path] = (key, problem)
        if problem:
            logger.warning(f"the final label {label_path} is not used for training: {problem}")
        return problem

    def invalid_labels(self) -> dict[str, str]:
        """Final labels on disk that fail the upload checks: image id -> the reason. They are never deleted."""
        self._fresh()
        image_dir, label_dir = self._datastore.image_path(), self._datastore.label_path(DefaultLabelTag.FINAL)
        found = {}
        for image_id, obj in self._datastore.filter_by_tag(DefaultLabelTag.FINAL).items():
            label = os.path.join(label_dir, self._filename(image_id, obj.labels[DefaultLabelTag.FINAL].ext))
            image = os.path.join(image_dir, self._filename(image_id, obj.image.ext))
            if problem := self._label_problem(image_id, label, image):
                found[image_id] = problem
        return found

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """The final labels to train on: those that pass the upload checks (:meth:`invalid_labels` are left out)."""
        invalid = self.invalid_labels()
        return [d for d in super().datalist(full_path) if layout.image_id(d["image"]) not in invalid]

    def status(self) -> dict[str, Any]:
        """``/info``'s datastore counts, with the labels found on disk that are not used and why, and the files left
        out because another one has their id."""
        self._fresh()
        return {**super().status(), "invalid_labels": self.invalid_labels(), "id_clashes": dict(self.id_clashes)}


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
