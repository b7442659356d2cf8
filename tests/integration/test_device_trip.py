"""The prepared trip to the accelerator machine (``apps/research/device_trip.sh``), run here in miniature on the CPU:
every training it starts writes a model file chosen on the selection split, and a failed run fails the trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lesion_app.core.checkpoint import read_checkpoint
from tests.support.images import draw_studies
from tests.support.paths import REPO

SCRIPT = REPO / "apps" / "research" / "device_trip.sh"
AUTOMATIC = {"unet": ("unet", True), "unet_noatt": ("unet", False), "deeplabv3": ("deeplabv3", True)}
AUTOMATIC["deeplabv3_noatt"] = ("deeplabv3", False)
CLICKS = {"deepedit_s6": 6.0, "deepedit_s10": 10.0}


def trip(data: Path, out: Path, only: str = "") -> subprocess.CompletedProcess:
    """The script on the CPU: one epoch at 64 px, one torch thread a run, no wheels to install; ``only`` the runs
    named (empty: all)."""
    env = {**os.environ, "DATA": str(data), "OUT": str(out), "DEVICE": "cpu", "MINUTES": "1", "EPOCHS": "1"}
    env["THREADS"] = "1"  # six runs side by side on this 2-core machine: 44 s for the trip, against 55 s with two
    env["ONLY"] = only
    env.update({"SIZE": "64", "WORKERS": "0", "WHEELS": str(out / "no wheels"), "PYTHON": sys.executable})
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("trip")
    data = draw_studies(root / "isic", 12, seed=3)
    return trip(data, root / "out"), root / "out"


def test_every_training_writes_a_model_chosen_on_the_selection_split(
    finished: tuple[subprocess.CompletedProcess, Path],
) -> None:
    result, out = finished
    assert result.returncode == 0, result.stdout + result.stderr
    for name, (arch, attention) in AUTOMATIC.items():
        checkpoint = read_checkpoint(out / f"{name}.pt")
        assert checkpoint["network"] == {"arch": arch, "kwargs": {"attention": attention}}
        assert checkpoint["meta"]["selected_on"] == "selection" and "clicks" not in checkpoint["meta"]
    for name, sigma in CLICKS.items():
        checkpoint = read_checkpoint(out / f"{name}.pt")
        assert checkpoint["network"]["arch"] == "unet" and checkpoint["network"]["kwargs"]["in_channels"] == 6
        assert checkpoint["meta"]["clicks"]["sigma"] == sigma and checkpoint["meta"]["clicks"]["prev_mask"]
        assert checkpoint["meta"]["selected_on"] == "selection"


def test_the_summary_names_each_run_with_its_best_epoch(finished: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, out = finished
    summary = (out / "summary.txt").read_text()
    for name in [*AUTOMATIC, *CLICKS]:
        line = next(x for x in summary.splitlines() if x.startswith(f"{out / name}.jsonl:"))
        assert "1 epochs, best selection-split IoU" in line and line.endswith("at epoch 1")


def test_a_training_that_fails_fails_the_trip_and_is_named(tmp_path: Path) -> None:
    """Two of the runs (ONLY), one of each kind, on a folder that does not exist: both fail, the trip fails, each
    failure names its log, and the runs not asked for are neither started nor named."""
    result = trip(tmp_path / "no data here", tmp_path / "out", only="unet deepedit_s6")
    assert result.returncode == 1
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for name in ("unet", "deepedit_s6"):
        assert f"no model file from {name}: see {tmp_path / 'out' / name}.log" in summary
    assert sorted(p.name for p in (tmp_path / "out").glob("*.log")) == ["deepedit_s6.log", "unet.log"]
