"""The metric charts (like the paper's Figures 7 and 8) are pictures of the numbers they are given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from apps import figures


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
