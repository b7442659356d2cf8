"""Shared fixtures: where the repository, the real data and the shipped models are; drawn studies."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from apps.process_control import stop_signals
from tests.support.images import draw_studies
from tests.support.paths import DATA_ENV, MODEL_DIR, REPO, SAMPLE_DATA, SHARED_DATA

# Under pytest-xdist (`make test` runs TEST_WORKERS processes) each worker takes one torch thread: two workers with
# two threads each would oversubscribe a 2-core machine, which slows torch several times over.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

__all__ = ["MODEL_DIR", "REPO", "SHARED_DATA"]


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP stop a test run as Ctrl-C does: fixtures are torn down, so their servers stop."""
    stack = ExitStack()
    stack.enter_context(stop_signals())
    config.add_cleanup(stack.close)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def isic() -> Path:
    folder = SHARED_DATA / "isic"
    if not (folder / "images").is_dir():
        pytest.skip(f"real data not found at {folder}: set {DATA_ENV} to the folder that holds isic/ (and ph2/)")
    return folder


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six drawn photographs with masks (5 train, 1 val after the split)."""
    return draw_studies(tmp_path_factory.mktemp("studies"), 6, seed=5)
