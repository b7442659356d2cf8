"""Concurrent infer requests against a real server while it trains: none fails, memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.research.load import LoadResult, main, run_load, server_env
from apps.research.local_server import server_process

pytestmark = pytest.mark.server

#: The server's whole process tree (server + train subprocess) measured about 1.0 GiB under this load.
PEAK_RSS_BOUND_MIB = 3 * 1024


def test_load_during_training_has_no_failures_and_bounded_memory(tmp_path: Path) -> None:
    env = server_env(infer_concurrency=1, infer_timeout=60)
    with server_process(tmp_path, {"models": "unet", "threads": "1", "train_epochs": "2"}, env=env) as server:
        result = run_load(server.url, clients=8, requests=40, pid=server.proc.pid, during_training="unet")
    assert result.errors == 0 and result.ok == 40, result.first_errors
    assert result.training["status_at_start"] == "RUNNING"
    assert result.training["running_fraction"] > 0, "the training ended before the load started"
    assert result.peak_rss_mib is not None and 0 < result.peak_rss_mib < PEAK_RSS_BOUND_MIB
    assert result.throughput > 0 and result.median_ms is not None and result.p95_ms >= result.median_ms


def test_cli_exits_1_when_a_request_failed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The exit status follows the errors; the table lists the first ones (no server needed)."""
    import apps.research.load

    def fake(url: str, **kwargs: object) -> LoadResult:
        errors = 1 if "bad" in url else 0
        return LoadResult(
            2,
            2,
            2 - errors,
            errors,
            1.0,
            2.0,
            10.0,
            12.0,
            12.0,
            None,
            ["unet"],
            1,
            first_errors=["unet lesion_000: HTTP 500 boom"] * errors,
        )

    monkeypatch.setattr(apps.research.load, "run_load", fake)
    assert main(["--url", "http://127.0.0.1:1/bad"]) == 1
    assert "HTTP 500 boom" in capsys.readouterr().out
    assert main(["--url", "http://127.0.0.1:1/good", "--json", "-"]) == 0
    assert '"errors": 0' in capsys.readouterr().out
