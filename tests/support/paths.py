"""Where the repository, the real data and the shipped models are."""

from __future__ import annotations

from pathlib import Path

from lesion_app.lib.settings import SHIPPED_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL_DIR = SHIPPED_MODEL_DIR
SAMPLE_DATA = REPO / "sample-data"
