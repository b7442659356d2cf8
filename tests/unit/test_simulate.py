"""lesion-simulate: a short run over drawn studies writes the curve's CSV and picture."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps import simulate
from lesion_app.lib.models import build_network


def test_a_short_simulation_writes_csv_and_png(studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = [str(studies), "--out", str(out), "--pool", "5", "--val", "1", "--seed-labels", "2", "--step", "1"]
    args += ["--rounds", "1", "--epochs", "1", "--epoch-size", "4", "--full-epochs", "1", "--roi-size", "64"]
    assert simulate.main([*args, "--batch-size", "2", "--samples", "3"]) == 0
    with open(out / "simulation.csv") as f:
        rows = list(csv.DictReader(f))
    runs = [r for r in rows if r["strategy"] != "full"]
    assert [(r["strategy"], r["labels"]) for r in runs] == [
        ("random", "2"),
        ("random", "3"),
        ("uncertainty", "2"),
        ("uncertainty", "3"),
    ]
    assert all(0.0 <= float(r["val_iou"]) <= 1.0 for r in rows)
    assert runs[0]["val_iou"] == runs[2]["val_iou"]  # same seed set and initialisation for every strategy
    with Image.open(out / "simulation.png") as img:
        assert img.format == "PNG" and np.asarray(img.convert("L")).std() > 10


def test_uncertainty_picks_the_images_the_model_disagrees_on(studies: Path, tmp_path: Path) -> None:
    items = simulate.cache_items(
        [
            {"id": p.stem, "image": str(p), "label": str(studies / "masks" / f"{p.stem}.png")}
            for p in sorted((studies / "images").iterdir())
        ],
        64,
        tmp_path,
    )
    torch.manual_seed(0)
    network = build_network("unet")
    scores = simulate.uncertainty_ranking(network, items, samples=4, roi=64)
    picked = simulate.pick("uncertainty", network, items, 2, random.Random(0), 4, 64)
    expected = sorted(range(len(items)), key=lambda i: -scores[i])[:2]
    assert [p["id"] for p in picked] == [items[i]["id"] for i in expected]
    assert len({p["id"] for p in simulate.pick("random", network, items, 3, random.Random(0), 4, 64)}) == 3
    with pytest.raises(ValueError):
        simulate.pick("smallest", network, items, 1, random.Random(0), 4, 64)


def test_too_small_a_pool_is_refused(studies: Path, tmp_path: Path) -> None:
    assert simulate.main([str(studies), "--out", str(tmp_path), "--pool", "3", "--seed-labels", "3"]) == 2
