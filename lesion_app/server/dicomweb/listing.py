"""What is on the DICOMweb server: the photographs (series of one modality) and the SEGs that refer to them.

QIDO answers are cached for ``cache_seconds`` (and dropped after every save), every page is read (servers that
cap answers would hide photographs), and a SEG's metadata is fetched once (a stored SEG never changes). A server
that is down or failing is the server's condition, not the request's: 503 with the reason.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from pydicom.dataset import Dataset

from lesion_app.server import checks

T = TypeVar("T")

SERIES_UID = "0020000E"
STUDY_UID = "0020000D"
MODALITY_TAG = "00080060"


def value_of(item: dict[str, Any], tag: str) -> str:
    """The first value of a tag in a DICOM JSON (QIDO) answer, or ""."""
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def answers_503(method: Callable[..., T]) -> Callable[..., T]:
    """A DICOMweb server that is down or failing is the server's condition, not the request's: 503, the reason."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (requests.RequestException, OSError) as e:
            raise checks.unavailable(f"the DICOMweb server {self._client.base_url} failed: {type(e).__name__}") from e

    return wrapper


def seg_reference(ds: Dataset) -> tuple[str, str]:
    """The image series a SEG's metadata refers to, and the SEG's date and time (the newest SEG wins)."""
    refs = ds.get("ReferencedSeriesSequence") or []
    image = str(refs[0].SeriesInstanceUID) if refs else ""
    stamp = f"{ds.get('SeriesDate', '')}{ds.get('SeriesTime', '')}{ds.get('ContentDate', '')}"
    return image, stamp + str(ds.get("ContentTime", ""))


class DicomWebListing:
    """The photographs and their newest SEGs on one DICOMweb server, cached.

    Args:
        client: a ``dicomweb_client.DICOMwebClient`` (MONAI Label's ``DICOMwebClientX``).
        modality: the modality whose series are the photographs (``XC``).
        cache_seconds: how long a listing is reused.
    """

    def __init__(self, client: Any, modality: str = "XC", cache_seconds: float = 30.0) -> None:
        self._client = client
        self.modality = modality
        self.cache_seconds = float(cache_seconds)
        self._listing: dict[str, tuple[float, Any]] = {}
        self._listing_lock = threading.Lock()
        #: SEG series UID -> (referenced image series UID, time stamp)
        self._seg_refs: dict[str, tuple[str, str]] = {}

    @property
    def base_url(self) -> str:
        """The DICOMweb server's URL, for messages."""
        return str(self._client.base_url)

    # -- listings ----------------------------------------------------------------------------------------

    def _cached(self, key: str, compute: Any) -> Any:
        with self._listing_lock:
            hit = self._listing.get(key)
            if hit and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
        value = compute()
        with self._listing_lock:
            self._listing[key] = (time.monotonic(), value)
        return value

    def invalidate(self) -> None:
        """Forgets the cached listings, after a save or when the server is known to have changed."""
        with self._listing_lock:
            self._listing.clear()

    @answers_503
    def series(self) -> dict[str, dict[str, Any]]:
        """Series UID -> QIDO answer, for every series of the photographs' modality."""

        def query() -> dict[str, dict[str, Any]]:
            # every page: servers that cap a QIDO answer (a PACS, a cloud store) would hide photographs otherwise
            found = self._client.search_for_series(search_filters={"Modality": self.modality}, get_remaining=True)
            return {value_of(s, SERIES_UID): s for s in found if value_of(s, SERIES_UID)}

        return self._cached("series", query)

    @answers_503
    def segs(self) -> dict[str, tuple[str, str]]:
        """Image series UID -> (study UID, SEG series UID) of its newest SEG on the server."""

        def query() -> dict[str, tuple[str, str]]:
            images = self.series()
            found: dict[str, tuple[str, str, str]] = {}
            for seg in self._client.search_for_series(search_filters={"Modality": "SEG"}, get_remaining=True):
                study, series = value_of(seg, STUDY_UID), value_of(seg, SERIES_UID)
                if series not in self._seg_refs:
                    meta = self._client.retrieve_series_metadata(study, series)
                    if not meta:
                        continue
                    self._seg_refs[series] = seg_reference(Dataset.from_json(meta[0]))
                image, stamp = self._seg_refs[series]
                if image not in images:
                    continue
                if image not in found or stamp > found[image][2]:
                    found[image] = (study, series, stamp)
            return {image: (study, series) for image, (study, series, _) in found.items()}

        return self._cached("segs", query)
