"""Where the repository, the real data (``LESION_DATA``, else ../shared/data) and the shipped models are."""

from __future__ import annotations

import os
from pathlib import Path

from lesion_app.lib.settings import SHIPPED_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
#: Environment variable: the folder holding the real data (``isic/``, ``ph2/``), where it is not ../shared/data.
DATA_ENV = "LESION_DATA"
SHARED_DATA = Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data")
MODEL_DIR = SHIPPED_MODEL_DIR
SAMPLE_DATA = REPO / "sample-data"
