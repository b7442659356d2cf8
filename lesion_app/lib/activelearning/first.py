"""The ``first`` strategy: the first unlabelled photograph by id (MONAI Label's, through the picks rule)."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lesion_app.lib.activelearning.picks import unlabelled


class First(Strategy):
    """The unlabelled photograph whose id sorts first among those this request may get."""

    def __init__(self) -> None:
        super().__init__("Get First Sample")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = sorted(unlabelled(request, datastore))
        return {"id": images[0]} if images else None
