"""lesion-evaluate on real ISIC photographs: rows, intervals, files, and agreement with the Predictor."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from apps import evaluate as evaluate_app
from lesion_app.core.data import split
from lesion_app.core.metrics import score
from lesion_app.core.predictor import Predictor
from lesion_app.io.images import read_mask
from lesion_app.io.layout import find_pairs
from lesion_app.lib.settings import shipped_models

SHIPPED = [str(p) for p in shipped_models("ensemble")]
N = 4


@pytest.mark.data
def test_evaluate_writes_table_csv_json_with_intervals(
    isic: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out_csv, out_json, out_md = tmp_path / "s.csv", tmp_path / "s.json", tmp_path / "s.md"
    args = [str(isic), *SHIPPED, "--limit", str(N), "--ensemble", "--options", "plain", "tta+post"]
    args += [
        "--compare",
        "unet",
        "deeplabv3",
        "--csv",
        str(out_csv),
        "--json",
        str(out_json),
        "--markdown",
        str(out_md),
    ]
    assert evaluate_app.main(args) == 0
    printed = capsys.readouterr().out
    assert out_md.read_text() == printed.rstrip("\n") + "\n"
    summary = json.loads(out_json.read_text())
    names = ["unet", "unet +tta+post", "deeplabv3", "deeplabv3 +tta+post", "ensemble(unet+deeplabv3)"]
    names.append("ensemble(unet+deeplabv3) +tta+post")
    assert list(summary["rows"]) == names and summary["n"] == N and summary["split"] == "val"
    for row in summary["rows"].values():
        for metric in evaluate_app.COLUMNS:
            m = row[metric]
            assert 0.0 <= m["ci_low"] <= m["mean"] <= m["ci_high"] <= 1.0
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N * len(names)
    ensemble_rows = [r for r in rows if r["model"] == "ensemble(unet+deeplabv3) +tta+post"]
    assert summary["rows"]["unet"]["iou"]["mean"] == pytest.approx(
        np.mean([float(r["iou"]) for r in rows if r["model"] == "unet"]), abs=1e-6
    )
    diff = summary["comparisons"][0]
    assert diff["a"] == "unet" and diff["mean"] == pytest.approx(
        summary["rows"]["unet"]["iou"]["mean"] - summary["rows"]["deeplabv3"]["iou"]["mean"], abs=1e-9
    )

    # the ensemble row scores what the Predictor (lesion-predict, and the server's ensemble task) would return
    _, val = split(find_pairs(isic))
    predictor = Predictor.from_files(SHIPPED, tta=True, postprocess=True)
    for pair, row in zip(val[:N], ensemble_rows):
        assert row["id"] == pair["id"]
        expected = score(predictor.mask(pair["image"]), read_mask(pair["label"])).iou
        assert float(row["iou"]) == pytest.approx(expected, abs=1e-3)


def test_evaluate_reports_bad_arguments(studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert evaluate_app.main([str(tmp_path / "missing"), SHIPPED[0]]) == 2
    assert evaluate_app.main([str(studies), SHIPPED[0], "--compare", "unet", "nope"]) == 2
    assert evaluate_app.main([str(studies), SHIPPED[0], "--ensemble"]) == 2  # one model is no ensemble
    assert evaluate_app.main([str(studies), str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and "unknown rows" in err and "--ensemble" in err
