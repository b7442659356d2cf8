"""A DICOMweb server (Orthanc, a PACS) as the app's datastore, for dermoscopic photographs.

MONAI Label's :class:`DICOMWebDatastore` is built for CT volumes: it lists CT series only, caches listings for
two hours (a saved label stays "unlabelled" that long), converts images to NIfTI, downloads dcmqi at start-up
and stores whatever label file arrives. Here:

- images are the series of one modality (``--conf dicomweb_modality``, XC by default: external-camera
  photography, what :mod:`apps.dicom_import` writes), each one single-frame colour photograph;
- listings are cached for ``--conf dicomweb_cache_seconds`` and dropped after every save;
- a photograph is cached once as an RGB NRRD carrying its DICOM frame's geometry (so 3D Slicer and the DICOM
  SEG place masks exactly), written atomically;
- a final label is checked like the local datastore's (size, values, axes), turned into a DICOM SEG with
  highdicom (an empty one too: "no lesion"; ``ContentCreatorName`` the label's ``annotator``) and stored on the
  server (STOW-RS); the local cache keeps a 0/1 PNG;
- the model's proposal (label tag ``original``) is stored on the server too, as a SEG marked as the app's proposal
  (:mod:`lesion_app.io.seg`), so OHIF can load it for correction; a proposal is never a label;
- training reads the SEGs on the server: a photograph's label is its newest usable correction
  (:mod:`.listing`), whoever saved it (OHIF, 3D Slicer, this app); an empty one means "no lesion" and is kept as
  an all-zero label; odd SEGs are reported (``/info``, the worklist, the log), never fatal.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import requests
from dicomweb_client import DICOMwebClient
from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom import dcmread
from pydicom.dataset import Dataset

from lesion_app.io.dicom import (
    FrameGeometry,
    PhotoUids,
    dicom_to_rgb,
    mask_to_seg,
    photo_to_dicom,
    proposal_to_seg,
    write_photo_nrrd,
)
from lesion_app.io.layout import label_file_name
from lesion_app.io.seg import APP_CREATOR, read_lesion
from lesion_app.server import checks
from lesion_app.server.datastore_file import SharedDatastoreFile
from lesion_app.server.dicomweb.arrivals import Arrivals
from lesion_app.server.dicomweb.listing import (
    MODALITY_TAG,
    STUDY_UID,
    DicomWebListing,
    SegSeries,
    answers_503,
    value_of,
)
from lesion_app.server.reports import ensure_report, label_measurements, store_report

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LesionDicomWebDatastore(SharedDatastoreFile, DICOMWebDatastore):
    """Photographs and their lesion SEGs on a DICOMweb server, with a local cache for the app."""

    def __init__(
        self,
        client: DICOMwebClient,
        modality: str = "XC",
        cache_path: str | None = None,
        cache_seconds: float = 30.0,
        max_image_pixels: int = 40_000_000,
        max_upload_mb: float = 50.0,
        read_only: bool = False,
    ) -> None:
        self.modality = modality
        self.cache_seconds = float(cache_seconds)
        self.max_image_pixels = int(max_image_pixels)
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self.writes_refused = bool(read_only)
        self.listing = DicomWebListing(client, modality, cache_seconds)
        # dicomweb-client retries a failed request five times over half a minute; a viewer waits for us
        client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=100)
        super().__init__(client, {"Modality": modality}, cache_path, fetch_by_frame=False, convert_to_nifti=True)
        if not self.writes_refused:  # shared with the training process, which lists the SEGs too
            self.listing.arrivals = Arrivals(Path(self._datastore_path) / "seg_arrivals.json")
        #: SEG series UID -> why its pixels could not be read as a label (found when syncing)
        self.unreadable_segs: dict[str, list[str]] = {}

    def list_images(self) -> list[str]:
        return sorted(self.listing.series())

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        if label_tag not in (None, DefaultLabelTag.FINAL, DefaultLabelTag.FINAL.value):
            return LocalDatastore.get_labeled_images(self, label_tag, labels)
        return sorted(self.listing.labels())

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [s for s in self.list_images() if s not in labelled]

    def labels_in_line(self) -> None:
        """The final labels as the SEGs on the server are now: the SEG listing asked again (one QIDO) and new or
        changed corrections read, so every listing follows every save, whoever made it (OHIF through the app's
        DICOMweb path, 3D Slicer or another tool straight to the server)."""
        self.listing.invalidate("segs")
        self._sync_final_labels()

    def json(self) -> dict[str, Any]:
        """``GET /datastore/?output=all``: the bookkeeping with every final label on the server."""
        self.labels_in_line()
        return super().json()

    def json_text(self) -> str:
        self.labels_in_line()
        return super().json_text()

    def status(self) -> dict[str, Any]:
        """``/info``'s datastore counts; while the DICOMweb server is down, ``/info`` still answers and says so."""
        try:
            self.labels_in_line()
            problems = self.listing.problems() + [p for lines in self.unreadable_segs.values() for p in lines]
            return {**super().status(), "server": self._client.base_url, "seg_problems": problems}
        except HTTPException as e:
            return {
                "total": None,
                "completed": None,
                "label_tags": {},
                "server": self._client.base_url,
                "error": e.detail,
            }

    def _known(self, image_id: str) -> dict[str, Any]:
        """The QIDO answer for an image id a request names: 400 if malformed, 404 if not on the server."""
        checks.check_reference(image_id or "")
        series = self.listing.series().get(image_id)
        if series is None:
            self.listing.invalidate()  # it may have arrived since the listing was cached
            series = self.listing.series().get(image_id)
        if series is None:
            raise checks.not_found(f"image {image_id!r} is not a {self.modality} series here")
        return series

    # -- images ------------------------------------------------------------------------------------------

    def _series_dir(self, image_id: str) -> Path:
        return Path(self._datastore.image_path()) / image_id

    @answers_503
    def _download(self, image_id: str, study: str) -> Path:
        """The series' DICOM files in the cache, downloaded into a temporary folder and renamed into place."""
        target = self._series_dir(image_id)
        if target.is_dir() and any(target.glob("*.dcm")):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{image_id}.", dir=target.parent))
        try:
            for instance in self._client.retrieve_series(study, image_id):
                instance.save_as(str(tmp / f"{instance.SOPInstanceUID}.dcm"), write_like_original=False)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def get_image_uri(self, image_id: str) -> str:
        """The cached RGB NRRD of a photograph, fetched and converted on first use."""
        name = f"{image_id}.nrrd"
        cached = Path(self._datastore.image_path()) / name
        if cached.is_file() and image_id in self._datastore.objects:
            return str(cached)
        series = self._known(image_id)
        folder = self._download(image_id, value_of(series, STUDY_UID))
        files = sorted(folder.glob("*.dcm"))
        if len(files) != 1:
            raise checks.unprocessable(
                f"series {image_id} holds {len(files)} instances; a dermoscopic photograph is one image",
            )
        ds = dcmread(str(files[0]))
        try:
            rgb = dicom_to_rgb(ds)
        except Exception as e:
            raise checks.unreadable_image(files[0], e) from None
        if rgb.shape[0] * rgb.shape[1] > self.max_image_pixels:
            raise checks.too_large(f"series {image_id} is {rgb.shape[1]}x{rgb.shape[0]} pixels")
        with tempfile.TemporaryDirectory(prefix="lesion_photo_") as tmp:
            converted = Path(tmp) / name  # ITK picks its writer by the extension
            write_photo_nrrd(rgb, FrameGeometry.of(ds), converted)
            checks.stored_copy(converted, cached)
        info = {
            "SeriesInstanceUID": image_id,
            "StudyInstanceUID": value_of(series, STUDY_UID),
            "Modality": value_of(series, MODALITY_TAG),
            "PatientID": str(ds.get("PatientID", "")),
            "SeriesDescription": str(ds.get("SeriesDescription", "")),
            "ts": int(time.time()),
            "name": name,
        }
        with self._changing():
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=".nrrd"))
            else:
                obj.image = DataModel(info={**obj.image.info, **info}, ext=".nrrd")
        return str(cached)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """An uploaded photograph goes to the DICOMweb server as DICOM (as ``lesion-dicom-import`` does); its id
        is the new SeriesInstanceUID. The upload's id (or file name) keys the UIDs: the same id, the same UIDs."""
        checks.refuse_if_read_only(self.writes_refused, f"add image {image_id or os.path.basename(image_filename)!r}")
        ext = checks.image_extension(os.path.basename(image_filename))
        key = image_id or os.path.basename(image_filename)[: -len(ext)]
        checks.check_image_id(key)
        checks.check_upload_size(image_filename, self.max_upload_bytes, "image")
        checks.check_image_file(image_filename, self.max_image_pixels, image_id)
        uids = PhotoUids.from_key(f"{key}/{key}{ext}")
        if uids.series in self.listing.series():
            raise checks.conflict(f"image {key!r} is on the server as series {uids.series}")
        ds = photo_to_dicom(image_filename, uids, patient_id=key, modality=self.modality)
        ds.SeriesDescription = f"{key}{ext}"[:64]
        try:
            self._client.store_instances([ds])
        except Exception as e:
            raise checks.bad_gateway(f"the DICOMweb server refused the image ({e})") from None
        self.listing.invalidate()
        logger.info(f"uploaded {key} to the DICOMweb server as series {uids.series}")
        return uids.series

    def remove_image(self, image_id: str) -> None:
        raise checks.not_allowed("images live on the DICOMweb server: delete the series there (e.g. Orthanc's UI)")

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Local labels (``original``, ...) are removed; a final label is a SEG on the server, deleted there."""
        checks.check_tag(label_tag)
        if label_tag == DefaultLabelTag.FINAL:
            raise checks.not_allowed(
                "final labels are DICOM SEGs on the DICOMweb server: delete the SEG series there",
            )
        LocalDatastore.remove_label(self, label_id, label_tag)

    # -- labels ------------------------------------------------------------------------------------------

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        """A checked 0/1 label; the final one goes to the DICOMweb server as a DICOM SEG first."""
        checks.refuse_if_read_only(self.writes_refused, f"save a label for {image_id!r}")
        checks.check_tag(label_tag)
        image_path = self.get_image_uri(image_id)
        _, mask = checks.checked_label(
            label_filename, image_path, image_id, self.max_upload_bytes, self.max_image_pixels
        )
        info = dict(label_info or {})
        if label_tag == DefaultLabelTag.FINAL:
            info.update(self._store_seg(image_id, mask, info))
        elif label_tag == DefaultLabelTag.ORIGINAL:
            info.update(self._store_proposal(image_id, mask))
        label_dir = Path(self._datastore.label_path(label_tag))
        label_dir.mkdir(parents=True, exist_ok=True)
        name = label_file_name(image_id)
        with self._changing():
            checks.stored_png(mask, label_dir / name)
            obj = self._datastore.objects[image_id]
            obj.labels[label_tag] = DataModel(info={**info, "ts": int(time.time()), "name": name}, ext=".png")
        self.listing.invalidate()
        return image_id

    def _store_seg(self, image_id: str, mask: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
        """The final label as a SEG; an empty mask is a SEG too ("no lesion"), its creator the ``annotator``."""
        description = str(info.get("model") or "lesion")
        creator = str(info.get("annotator") or "") or APP_CREATOR
        source = self._series_dir(image_id)
        written: list[Dataset] = []
        stored = self._send_seg(
            image_id, lambda dest: written.append(mask_to_seg(mask, source, dest, description, creator=creator))
        )
        # its TID 1500 measurement report beside it (issue 28): lesion_app.server.reports
        return {**stored, **store_report(self._client, self.get_image_uri(image_id), source, mask, written[0])}

    def _store_proposal(self, image_id: str, mask: np.ndarray) -> dict[str, Any]:
        """The model's mask as the app's proposal SEG; an empty one (no lesion found) stays local only."""
        if not mask.any():
            logger.info(f"the proposal for {image_id} is empty (no lesion found): no SEG is stored")
            return {"proposal": "empty"}
        return self._send_seg(image_id, lambda dest: proposal_to_seg(mask, self._series_dir(image_id), dest))

    def _send_seg(self, image_id: str, write: Any) -> dict[str, Any]:
        """Writes a SEG with ``write(path)`` (:func:`mask_to_seg`) and stores it on the server; its arrival is
        recorded now. Every SEG the app stores (labels from any client, proposals) passes here: after the store,
        ``seg`` is the stored instance (its SOP, series and study UIDs)."""
        with tempfile.TemporaryDirectory(prefix="lesion_seg_") as tmp:
            seg_file = Path(tmp) / "seg.dcm"
            try:
                write(seg_file)
            except (FileNotFoundError, RuntimeError, ValueError) as e:
                raise checks.unavailable(f"cannot write the DICOM SEG: {e}") from None
            seg = dcmread(str(seg_file))
            try:
                self._client.store_instances([seg])
            except (requests.ConnectionError, requests.Timeout) as e:
                where = self._client.base_url
                raise checks.unavailable(
                    f"the DICOMweb server {where} does not answer ({type(e).__name__}): the SEG "
                    "was not stored; save again when it is back"
                ) from None
            except Exception as e:
                raise checks.bad_gateway(f"the DICOMweb server refused the SEG ({type(e).__name__}: {e})") from None
        self.listing.arrivals.stamp([str(seg.SeriesInstanceUID)], time.time())
        logger.info(f"stored SEG {seg.SeriesInstanceUID} ({seg.SeriesDescription}) for {image_id} on the server")
        return {"SeriesInstanceUID": str(seg.SeriesInstanceUID), "StudyInstanceUID": str(seg.StudyInstanceUID)}

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """A final label is first brought in line with the photograph's newest correction on the server."""
        if label_tag == DefaultLabelTag.FINAL and label_id in self.listing.series():
            label = self.listing.labels().get(label_id)
            if label is not None:
                self._sync_label(label)
        return LocalDatastore.get_label_uri(self, label_id, label_tag)

    @answers_503
    def _sync_label(self, seg: SegSeries) -> None:
        """The photograph's cached final label becomes the mask of ``seg`` (its newest correction), unless it is
        already; a SEG whose pixels cannot be read is reported and leaves the label as it was."""
        image_id = seg.image
        image_path = self.get_image_uri(image_id)
        current = self._datastore.objects[image_id].labels.get(DefaultLabelTag.FINAL)
        if current and current.info.get("SeriesInstanceUID") == seg.series:
            return
        photo = self.listing.photo(image_id)
        instances = self._client.retrieve_series(seg.study, seg.series)
        reading = read_lesion(instances[0], photo.rows, photo.columns, photo.sop)
        if reading.mask is None:
            self.unreadable_segs[seg.series] = [f"SEG {seg.series} of {image_id}: {p}" for p in reading.problems]
            logger.warning(f"SEG {seg.series} of {image_id} is not used as its label: {reading.problems}")
            return
        if reading.problems:
            logger.warning(f"SEG {seg.series} of {image_id}, used as its label: {'; '.join(reading.problems)}")
        measured = label_measurements(reading.mask, image_path)  # for the worklist (issue 28)
        if not self.writes_refused:  # another client's SEG: its TID 1500 report, once (issue 28)
            ensure_report(self._client, image_path, self._series_dir(image_id), reading.mask, instances[0])
        label_dir = Path(self._datastore.label_path(DefaultLabelTag.FINAL))
        label_dir.mkdir(parents=True, exist_ok=True)
        with self._changing():
            checks.stored_png(reading.mask, label_dir / label_file_name(image_id))
            info = {
                "SeriesInstanceUID": seg.series,
                "StudyInstanceUID": seg.study,
                "ts": int(time.time()),
                "name": label_file_name(image_id),
                "notes": reading.problems,  # e.g. "it is empty: no lesion" (stored as an all-zero label)
                "measurements": measured,
                "annotator": str(instances[0].get("ContentCreatorName", "") or ""),  # who saved it (any client)
            }
            self._datastore.objects[image_id].labels[DefaultLabelTag.FINAL] = DataModel(info=info, ext=".png")

    @answers_503
    def _sync_final_labels(self) -> None:
        """Brings the cache's final labels in line with the SEGs on the server (the newest correction wins)."""
        labels = self.listing.labels()
        self._fresh()
        for seg in labels.values():
            self._sync_label(seg)
        label_dir = Path(self._datastore.label_path(DefaultLabelTag.FINAL))
        with self._changing():  # SEGs deleted on the server
            for image_id, obj in list(self._datastore.objects.items()):
                if image_id not in labels and obj.labels.pop(DefaultLabelTag.FINAL, None) is not None:
                    (label_dir / label_file_name(image_id)).unlink(missing_ok=True)

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        self.listing.invalidate()
        self._sync_final_labels()
        return LocalDatastore.datalist(self, full_path)


def dicomweb_login() -> tuple[str, str] | None:
    """(user, password) for the DICOMweb server from MONAI Label's settings
    (``MONAI_LABEL_DICOMWEB_USERNAME``/``_PASSWORD``, or the datastore ones), or None."""
    from monailabel.config import settings as ml

    user = ml.MONAI_LABEL_DICOMWEB_USERNAME or ml.MONAI_LABEL_DATASTORE_USERNAME
    password = ml.MONAI_LABEL_DICOMWEB_PASSWORD or ml.MONAI_LABEL_DATASTORE_PASSWORD
    return (user, password) if user and password else None


def dicomweb_datastore(url: str, settings: Any) -> LesionDicomWebDatastore:
    """The datastore for ``--studies http(s)://.../dicom-web``, with MONAI Label's DICOMweb login
    (:func:`dicomweb_login`) and cache path (``MONAI_LABEL_DICOMWEB_CACHE_PATH``)."""
    from dicomweb_client.session_utils import create_session_from_user_pass
    from monailabel.config import settings as ml
    from monailabel.datastore.dicom import DICOMwebClientX

    login = dicomweb_login()
    session = create_session_from_user_pass(*login) if login else None
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=ml.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=ml.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=ml.MONAI_LABEL_STOW_PREFIX,
    )
    cache = (ml.MONAI_LABEL_DICOMWEB_CACHE_PATH or ml.MONAI_LABEL_DATASTORE_CACHE_PATH or "").strip() or None
    logger.info(f"DICOMweb {url}: images are {settings.dicomweb_modality} series; SEGs written by highdicom")
    return LesionDicomWebDatastore(
        client,
        modality=settings.dicomweb_modality,
        cache_path=cache,
        cache_seconds=settings.dicomweb_cache_seconds,
        max_image_pixels=settings.max_image_pixels,
        max_upload_mb=settings.max_upload_mb,
        read_only=settings.read_only,
    )
