"""Shared fixtures: where the repository, the real data and the shipped models are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODEL_DIR = REPO / "lesion_app" / "model"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def isic() -> Path:
    folder = SHARED_DATA / "isic"
    if not (folder / "images").is_dir():
        pytest.skip(f"real data not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return REPO / "sample-data"
