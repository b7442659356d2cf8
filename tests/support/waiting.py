"""Waiting on a running server: a condition with a deadline, and MONAI Label's one background scoring at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """Polls ``condition`` every ``poll`` seconds until it returns something truthy, and returns it.

    Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(poll)
    return value


def answers(url: str) -> bool:
    """Whether a server at ``url`` answers ``GET /info/`` with 200 now (False while it starts or is gone)."""
    try:
        return httpx.get(f"{url}/info/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_scoring(url: str, method: str, body: dict[str, Any], timeout: float = 180.0) -> httpx.Response:
    """Starts a scoring method (queued behind a running one: 202 expected; a server that refuses while another runs
    is asked again until it accepts); returns the response of the start."""
    deadline = time.monotonic() + timeout
    while (response := httpx.post(f"{url}/scoring/{method}", json=body, timeout=60)).status_code == 429:
        assert time.monotonic() < deadline, f"scoring still busy after {timeout}s"
        time.sleep(1)
    return response


def train_and_wait(url: str, model: str = "unet", max_epochs: int = 1, timeout: float = 300.0) -> str:
    """Starts a training of ``model`` over HTTP, waits for it and asserts it finished DONE; the status's details."""
    r = httpx.post(f"{url}/train/{model}", json={"max_epochs": max_epochs}, timeout=60)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{url}/train/", params={"check_if_running": "false"}, timeout=30).json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(1)
    details = "\n".join(status.get("details", []))
    assert status["status"] == "DONE", details[-3000:]
    return details
