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


def draw_studies(root: Path, count: int, seed: int) -> Path:
    """``count`` drawn photographs with exact masks in the images/ + masks/ layout under ``root``."""
    from apps.make_sample_data import draw_study

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        img, mask = draw_study(rng, (96, 128))
        Image.fromarray(img).save(root / "images" / f"s{i}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i}.png")
    return root


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six drawn photographs with masks (5 train, 1 val after the split)."""
    return draw_studies(tmp_path_factory.mktemp("studies"), 6, seed=5)
