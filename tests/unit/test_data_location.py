"""Tests that need the real data say how to point them at it (issue 25, 14): ``LESION_DATA``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import DATA_ENV, REPO


def test_a_test_without_the_real_data_says_which_variable_points_to_it(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/integration/test_shipped_models.py",
        "-rs",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    env = {**os.environ, DATA_ENV: str(tmp_path / "elsewhere")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "skipped" in done.stdout, done.stdout[-2000:]
    assert f"real data not found at {tmp_path / 'elsewhere' / 'isic'}: set {DATA_ENV}" in done.stdout
