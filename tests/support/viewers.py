"""The viewer round trips need Debian's Orthanc and Chromium: skipped where missing, failed under
``LESION_REQUIRE_VIEWERS=1`` (what ``.ci/run`` sets after installing them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

REQUIRE_VIEWERS = os.environ.get("LESION_REQUIRE_VIEWERS") == "1"


def need(reason: str) -> None:
    """Skips the test for a missing system package, or fails it when the viewers are required."""
    if REQUIRE_VIEWERS:
        pytest.fail(f"{reason} (LESION_REQUIRE_VIEWERS=1)")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium (Playwright) for a module's browser tests, with OHIF installed: the test skips (or fails,
    see :func:`need`) where either is missing."""
    from apps import ohif_browser as ob
    from lesion_app.server.viewer.dist import ViewerFiles, dist_folder

    try:
        ob.chromium_binary()
    except ob.ChromiumMissing as e:
        need(str(e))
    if not ViewerFiles(dist_folder()).installed():
        need(f"OHIF is not installed at {dist_folder()}; run `make viewers`")
    with ob.browser() as b:
        yield b
