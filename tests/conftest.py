"""Shared fixtures: where the repository, the real data and the shipped models are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six drawn photographs with masks in the project's images/ + masks/ layout."""
    from apps.make_sample_data import draw_study

    root = tmp_path_factory.mktemp("studies")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(5)
    for i in range(6):
        img, mask = draw_study(rng, (96, 128))
        Image.fromarray(img).save(root / "images" / f"s{i}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i}.png")
    return root
