"""The viewer round trips need Debian's Orthanc and Chromium: skipped where missing, failed under
``LESION_REQUIRE_VIEWERS=1`` (what ``.ci/run`` sets after installing them)."""

from __future__ import annotations

import os

import pytest

REQUIRE_VIEWERS = os.environ.get("LESION_REQUIRE_VIEWERS") == "1"


def need(reason: str) -> None:
    """Skips the test for a missing system package, or fails it when the viewers are required."""
    if REQUIRE_VIEWERS:
        pytest.fail(f"{reason} (LESION_REQUIRE_VIEWERS=1)")
    pytest.skip(reason)
