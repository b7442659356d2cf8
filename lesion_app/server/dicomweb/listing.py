"""What is on the DICOMweb server: the photographs (series of one modality) and the SEGs that refer to them.

Each SEG is either the app's **proposal** (its model's mask, marked by :func:`lesion_app.io.seg.is_proposal`) or a
**correction** (anything else: OHIF's saves, 3D Slicer's, the app's own final labels). A photograph's final label
is its newest usable correction; a proposal never is one, and no SEG is ever deleted or overwritten.

"Newest" is the order in which the app first saw the SEGs (:mod:`.arrivals`, the app's own clock), then, for
SEGs first seen together, their SeriesDate/Time and ContentDate/Time as written, then SeriesNumber, then UID.

QIDO answers are cached for ``cache_seconds`` (and dropped after every save), every page is read (servers that
cap answers would hide photographs), and the metadata of a SEG or a photograph is fetched once (a stored
instance never changes). A server that is down or failing is the server's condition, not the request's: 503.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from pydicom.dataset import Dataset

from lesion_app.io.seg import SegCheck, check_seg, is_proposal, referenced_series
from lesion_app.server import checks
from lesion_app.server.dicomweb.arrivals import Arrivals

T = TypeVar("T")

SERIES_UID = "0020000E"
STUDY_UID = "0020000D"
MODALITY_TAG = "00080060"
SERIES_DESCRIPTION = "0008103E"


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


def metadata(item: dict[str, Any]) -> Dataset:
    """A DICOM JSON metadata item as a dataset, without its bulk data (pixels are fetched only when needed)."""
    return Dataset.from_json({k: v for k, v in item.items() if "BulkDataURI" not in v and "InlineBinary" not in v})


def seg_stamp(ds: Dataset) -> str:
    """The SEG's own SeriesDate+SeriesTime+ContentDate+ContentTime, as its writer's clock gave them."""
    return "".join(str(ds.get(k, "")) for k in ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime"))


@dataclass(frozen=True)
class Photo:
    """A photograph's single instance: what a SEG is checked and decoded against."""

    study: str
    series: str
    sop: str
    rows: int
    columns: int


@dataclass(frozen=True)
class SegSeries:
    """One SEG series on the server, classified.

    ``image`` is the photograph it refers to ("" if it refers to none on the server); ``check`` says whether it
    can be that photograph's label and what is odd about it; ``arrived`` is when the app first saw it (Unix s).
    """

    study: str
    series: str
    image: str
    description: str
    proposal: bool
    check: SegCheck
    arrived: float
    stamp: str
    number: int
    creator: str = ""  # its ContentCreatorName: who saved it (the app's saves: the annotator)

    @property
    def order(self) -> tuple[float, str, int, str]:
        """Sort key, oldest first: arrival, the SEG's own dates, SeriesNumber, UID."""
        return (self.arrived, self.stamp, self.number, self.series)

    @property
    def kind(self) -> str:
        return "proposal" if self.proposal else "correction"

    def problems(self) -> list[str]:
        """Each odd thing about this SEG, as one line naming it."""
        where = f"of {self.image}" if self.image else "referring to no photograph here"
        return [
            f"SEG {self.series} ({self.description or 'no description'}, {self.kind}) {where}: {p}"
            for p in self.check.problems
        ]


def _newest(found: dict[str, SegSeries], seg: SegSeries) -> None:
    if seg.image not in found or seg.order > found[seg.image].order:
        found[seg.image] = seg


class DicomWebListing:
    """The photographs and their SEGs on one DICOMweb server, cached.

    Args:
        client: a ``dicomweb_client.DICOMwebClient`` (MONAI Label's ``DICOMwebClientX``).
        modality: the modality whose series are the photographs (``XC``).
        cache_seconds: how long a listing is reused.
        arrivals: when the app first saw each SEG (shared with other processes through its file).
    """

    def __init__(
        self, client: Any, modality: str = "XC", cache_seconds: float = 30.0, arrivals: Arrivals | None = None
    ) -> None:
        self._client = client
        self.modality = modality
        self.cache_seconds = float(cache_seconds)
        self.arrivals = arrivals or Arrivals()
        self._listing: dict[str, tuple[float, Any]] = {}
        self._listing_lock = threading.Lock()
        self._seg_meta: dict[str, Dataset] = {}  # SEG series UID -> its first instance's metadata
        self._photos: dict[str, Photo] = {}  # photograph series UID -> its instance

    @property
    def base_url(self) -> str:
        """The DICOMweb server's URL, for messages."""
        return str(self._client.base_url)

    # -- caching -----------------------------------------------------------------------------------------

    def _cached(self, key: str, compute: Any) -> Any:
        with self._listing_lock:
            hit = self._listing.get(key)
            if hit and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
        value = compute()
        with self._listing_lock:
            self._listing[key] = (time.monotonic(), value)
        return value

    def invalidate(self, *keys: str) -> None:
        """Forgets the cached listings (only ``keys``, "series" or "segs", when given), after a save or when the
        server is known to have changed."""
        with self._listing_lock:
            for key in keys or list(self._listing):
                self._listing.pop(key, None)

    # -- photographs -------------------------------------------------------------------------------------

    @answers_503
    def series(self) -> dict[str, dict[str, Any]]:
        """Series UID -> QIDO answer, for every series of the photographs' modality."""

        def query() -> dict[str, dict[str, Any]]:
            # every page: servers that cap a QIDO answer (a PACS, a cloud store) would hide photographs otherwise
            found = self._client.search_for_series(search_filters={"Modality": self.modality}, get_remaining=True)
            return {value_of(s, SERIES_UID): s for s in found if value_of(s, SERIES_UID)}

        return self._cached("series", query)

    @answers_503
    def photo(self, image: str) -> Photo:
        """A listed photograph's instance (SOP UID and size), from its metadata; KeyError if not listed."""
        if image not in self._photos:
            study = value_of(self.series()[image], STUDY_UID)
            meta = metadata(self._client.retrieve_series_metadata(study, image)[0])
            self._photos[image] = Photo(study, image, str(meta.SOPInstanceUID), int(meta.Rows), int(meta.Columns))
        return self._photos[image]

    # -- SEGs --------------------------------------------------------------------------------------------

    def _metadata(self, study: str, series: str) -> Dataset | None:
        if series not in self._seg_meta:
            meta = self._client.retrieve_series_metadata(study, series)
            if not meta:
                return None
            self._seg_meta[series] = metadata(meta[0])
        return self._seg_meta[series]

    def _classify(self, study: str, series: str, meta: Dataset, arrived: float) -> SegSeries:
        images = self.series()
        refs = referenced_series(meta)
        image = next((r for r in refs if r in images), "")
        if image:
            photo = self.photo(image)
            check = check_seg(meta, photo.rows, photo.columns)
        else:
            named = f" ({', '.join(refs)})" if refs else ""
            check = SegCheck(None, (f"the image series it refers to{named} is not a photograph on the server",))
        try:
            number = int(meta.get("SeriesNumber") or 0)
        except (TypeError, ValueError):
            number = 0
        return SegSeries(
            study,
            series,
            image,
            str(meta.get("SeriesDescription", "")),
            is_proposal(meta),
            check,
            arrived,
            seg_stamp(meta),
            number,
            str(meta.get("ContentCreatorName", "") or ""),
        )

    @answers_503
    def seg_series(self) -> list[SegSeries]:
        """Every SEG series on the server, classified, oldest first."""

        def query() -> list[SegSeries]:
            found = self._client.search_for_series(search_filters={"Modality": "SEG"}, get_remaining=True)
            pairs = [(value_of(s, STUDY_UID), value_of(s, SERIES_UID)) for s in found if value_of(s, SERIES_UID)]
            arrived = self.arrivals.stamp([series for _, series in pairs], time.time())
            out = []
            for study, series in pairs:
                meta = self._metadata(study, series)
                if meta is not None:
                    out.append(self._classify(study, series, meta, arrived[series]))
            return sorted(out, key=lambda s: s.order)

        return self._cached("segs", query)

    def labels(self) -> dict[str, SegSeries]:
        """Photograph series UID -> its final label: the newest usable correction."""
        found: dict[str, SegSeries] = {}
        for seg in self.seg_series():
            if seg.image and not seg.proposal and seg.check.usable:
                _newest(found, seg)
        return found

    def proposals(self) -> dict[str, SegSeries]:
        """Photograph series UID -> the newest usable proposal the app stored for it."""
        found: dict[str, SegSeries] = {}
        for seg in self.seg_series():
            if seg.image and seg.proposal and seg.check.usable:
                _newest(found, seg)
        return found

    def problems(self) -> list[str]:
        """What is odd about the SEGs on the server, one line each (reported, never fatal)."""
        return [line for seg in self.seg_series() for line in seg.problems()]

    def segs(self) -> dict[str, tuple[str, str]]:
        """Photograph series UID -> (study UID, SEG series UID) of its final label."""
        return {image: (seg.study, seg.series) for image, seg in self.labels().items()}
