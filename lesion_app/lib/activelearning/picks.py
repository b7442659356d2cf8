"""Picks per annotator: a photograph handed to one annotator is not handed to another meanwhile.

``POST /activelearning/<strategy>`` with ``"annotator": "<name>"`` (with auth on: the token's user, whatever the
body says) reserves the photograph it answers for that annotator for :data:`RESERVATION_SECONDS`:

- other annotators' next samples do not get it until it is saved (has a final label), skipped, or the time passes;
- the same annotator asking again gets the same photograph while it is unsaved;
- ``"skip": "<image id>"`` releases that annotator's reservation of the image and keeps it from being handed to
  the same annotator again within the reservation time; the answer is the next pick;
- ``"after": "<image id>"`` asks for the pick after that image, whose label the annotator is saving at the same time
  (the lesion mode's Save and next asks while it saves): the annotator's reservation of it is released and it is not
  this answer, but it is not kept from anyone (a save that fails leaves it unlabelled and offered as before).

Without an annotator a request behaves as before: it reserves nothing and may get any unlabelled photograph.
The reservations live in the server's memory: a restart
releases them all. Strategies see the rule through :func:`unlabelled`, the one list of photographs they draw from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from monailabel.interfaces.datastore import Datastore

#: How long a pick stays reserved for its annotator, and a skipped photograph kept from them.
RESERVATION_SECONDS = 30 * 60
#: The request key under which the app hands the strategies the photographs this annotator may not get now.
EXCLUDED_KEY = "lesion_app_excluded"


def unlabelled(request: dict[str, Any], datastore: Datastore) -> list[str]:
    """The unlabelled photographs a strategy may hand out for this request: not reserved for another annotator,
    not skipped by this one (:class:`Picks`)."""
    excluded = request.get(EXCLUDED_KEY) or ()
    return [i for i in datastore.get_unlabeled_images() if i not in excluded]


class Picks:
    """The reservations and skips of every annotator; thread-safe. ``clock`` gives seconds (monotonic)."""

    def __init__(self, seconds: float = RESERVATION_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._held: dict[str, tuple[str, float]] = {}  # image -> (annotator, until)
        self._skipped: dict[tuple[str, str], float] = {}  # (annotator, image) -> until
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        self._held = {i: (a, until) for i, (a, until) in self._held.items() if until > now}
        self._skipped = {k: until for k, until in self._skipped.items() if until > now}

    def held(self, annotator: str, unlabelled: Collection[str]) -> str | None:
        """The photograph reserved for ``annotator`` that is still unlabelled (one saved is released), or None."""
        with self._lock:
            self._expire(self.clock())
            for image, (owner, _) in list(self._held.items()):
                if owner == annotator and image not in unlabelled:
                    del self._held[image]  # saved: released
            return next((i for i, (owner, _) in self._held.items() if owner == annotator), None)

    def excluded(self, annotator: str) -> set[str]:
        """The photographs ``annotator`` may not get now: reserved for others, or skipped by them."""
        with self._lock:
            self._expire(self.clock())
            others = {i for i, (owner, _) in self._held.items() if owner != annotator}
            return others | {i for (owner, i) in self._skipped if owner == annotator}

    def reserve(self, annotator: str, image: str) -> float:
        """Reserves ``image`` for ``annotator`` (their one reservation); returns the seconds it lasts."""
        with self._lock:
            self._held = {i: v for i, v in self._held.items() if v[0] != annotator}
            self._held[image] = (annotator, self.clock() + self.seconds)
        return self.seconds

    def release(self, annotator: str, image: str) -> None:
        """Releases ``annotator``'s reservation of ``image`` (one being saved), keeping it from no one."""
        with self._lock:
            if self._held.get(image, ("",))[0] == annotator:
                del self._held[image]

    def skip(self, annotator: str, image: str) -> None:
        """Releases ``annotator``'s reservation of ``image`` and keeps it from them for the reservation time."""
        self.release(annotator, image)
        with self._lock:
            self._skipped[(annotator, image)] = self.clock() + self.seconds
