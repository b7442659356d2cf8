"""The metric charts (like the paper's Figures 7 and 8) are pictures of the numbers they are given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps import figures
from apps.research import simulation_results as results


def summary(path: Path, data: str, ious: dict[str, float]) -> str:
    rows = {
        name: {
            "n": 10,
            **{m: {"mean": v, "ci_low": v - 0.02, "ci_high": v + 0.02} for m in ("iou", "accuracy")},
        }
        for name, v in ious.items()
    }
    path.write_text(json.dumps({"data": data, "split": "val", "n": 10, "rows": rows}))
    return str(path)


def test_metrics_chart_draws_one_bar_per_row_and_data_set(tmp_path: Path) -> None:
    a = summary(tmp_path / "a.json", "isic", {"unet": 0.81, "unet_noatt": 0.80, "deeplabv3": 0.83})
    b = summary(tmp_path / "b.json", "ph2", {"unet": 0.85, "unet_noatt": 0.84, "deeplabv3": 0.86})
    out = tmp_path / "metrics.png"
    assert figures.main(["metrics", a, b, "--rows", "unet", "unet_noatt", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 600
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)

    # matplotlib's first two colours (blue, orange) are the two rows' bars; the third row is left out
    def share(colour: tuple[int, int, int]) -> float:
        return float((np.abs(pixels.astype(int) - colour).sum(1) < 30).mean())

    assert share((31, 119, 180)) > 0.01 and share((255, 127, 14)) > 0.01
    assert share((44, 160, 44)) < 0.001


def simulation_csv(path: Path, strategy: str, ious: list[float], full: float = 0.88, start: float = 0.81) -> str:
    rows = [
        results.Round(strategy, 0, r, 8 * (r + 1), 8 * (r + 1) / 96, iou, iou + 0.05, 40.0)
        for r, iou in enumerate(ious)
    ]
    results.write_csv(path, rows, full, start)
    return str(path)


def test_simulation_runs_made_apart_draw_one_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = simulation_csv(tmp_path / "a.csv", "random", [0.86, 0.87, 0.88])
    b = simulation_csv(tmp_path / "b.csv", "power", [0.86, 0.88, 0.89])
    merged = results.merge([results.read_csv(a), results.read_csv(b)])
    assert [(r.strategy, r.labels, r.val_iou) for r in merged.rows][2:4] == [("random", 24, 0.88), ("power", 8, 0.86)]
    assert (merged.full_iou, merged.pool_size, merged.start_iou) == (0.88, 96, 0.81)
    out = tmp_path / "simulation.png"
    assert figures.main(["simulation", a, b, "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and np.asarray(img.convert("L")).std() > 10
    printed = capsys.readouterr().out.splitlines()  # and the numbers: power against random, seed by seed
    assert "| `power`, 1 seed | 0.860 (+0.000; 0/1) | 0.880 (+0.010; 1/1) | 0.890 (+0.010; 1/1) |" in printed
    assert "power: 95% of all labels (0.836) at 8 labels (within 25%); against random: ahead at every budget" in printed


def test_simulations_that_were_not_run_alike_are_refused(tmp_path: Path) -> None:
    a = simulation_csv(tmp_path / "a.csv", "random", [0.86, 0.87])
    other_start = simulation_csv(tmp_path / "b.csv", "power", [0.86, 0.88], start=0.70)
    garbage = tmp_path / "c.csv"
    garbage.write_text("strategy,seed\nrandom,0\n")
    for bad in (other_start, str(garbage), str(tmp_path / "missing.csv")):
        assert figures.main(["simulation", a, bad, "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
