"""Datastore setup for 2D dermoscopy photographs."""

from __future__ import annotations

from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore

#: MONAI Label's defaults leave out .jpeg and the upper-case spellings cameras write.
IMAGE_PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.JPG", "*.JPEG", "*.PNG", "*.tif", "*.tiff", "*.bmp")


def local_datastore(studies: str) -> LocalDatastore:
    return LocalDatastore(
        studies,
        extensions=list(IMAGE_PATTERNS),
        auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
        read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
    )
