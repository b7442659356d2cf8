"""The side-by-side benchmark: runs end to end at small sizes, and its ratios are what it says they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from apps import benchmark
from apps.benchmark import ALL_MODELS, BASELINES, METRICS, OURS
from lesion_app.core.networks import build_network


def test_benchmark_all_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    argv = ["--repeats", "2", "--warmup", "1", "--train-steps", "1", "--size", "64", "--train-batch", "2"]
    assert benchmark.main([*argv, "--variants", "channels_last,script", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    for name in ALL_MODELS:
        assert name in rows
        assert rows[name].count("x) |") == 2 * len(METRICS)  # two ratio columns per metric
    assert "target: unet forward <= 0.6x MONAI AttentionUnet" in text

    report = json.loads(out.read_text())
    models = report["models"]
    assert set(models) == set(ALL_MODELS)
    for entry in models.values():
        assert entry["params"] > 0
        for metric in METRICS:
            stats = entry["metrics"][metric]
            assert stats["median"] > 0 and stats["p90"] >= stats["median"] >= stats["p10"] > 0
            assert stats["n"] == (1 if metric == "train_img_per_s" else 2)
            for base in BASELINES:
                ref = models[base]["metrics"][metric]
                assert stats[f"ratio_vs_{base}"] == pytest.approx(stats["median"] / ref["median"])
                pairs = [a / b for a, b in zip(stats["samples"], ref["samples"])]
                assert stats[f"paired_ratio_vs_{base}"] == pytest.approx(float(np.median(pairs)))

    variants = report["variants"]
    assert set(variants) == {f"{m}+{v}" for m in OURS for v in ("channels_last", "script")}
    for name, info in variants.items():
        assert not info["lossy"] and "error" not in info, name
        assert info["forward_ms"]["median"] > 0
        assert info["mask_iou_vs_eager"] > 0.99 and info["max_abs_logit_diff"] < 1e-3
        eager = models[info["model"]]["metrics"]["forward_ms"]["median"]
        assert info["forward_ms"]["ratio_vs_eager"] == pytest.approx(info["forward_ms"]["median"] / eager)


def test_benchmark_subset_without_a_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    argv = ["--repeats", "1", "--warmup", "0", "--train-steps", "1", "--size", "32", "--train-batch", "2"]
    assert benchmark.main([*argv, "--models", "unet,monai_unet", "--variants", "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"unet", "monai_unet"} and report["variants"] == {}
    stats = report["models"]["unet"]["metrics"]["forward_ms"]
    assert stats["ratio_vs_monai_attentionunet"] is None
    assert stats["ratio_vs_monai_unet"] == pytest.approx(
        stats["median"] / report["models"]["monai_unet"]["metrics"]["forward_ms"]["median"]
    )
    assert "| - |" in capsys.readouterr().out


def test_interleaving_rotates_the_order() -> None:
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = benchmark.interleaved(calls, repeats=3, warmup=1)
    assert order[:3] == list("abc")  # warm-up
    assert [order[3 + 3 * r] for r in range(3)] == list("abc")  # each candidate leads one round
    assert all(len(v) == 3 and min(v) >= 0 for v in times.values())


def test_int8_variant_is_flagged_lossy() -> None:
    assert benchmark.VARIANTS["int8"] and not any(v for k, v in benchmark.VARIANTS.items() if k != "int8")
    assert "int8" not in benchmark.DEFAULT_VARIANTS.split(",")
    net = build_network("unet", channels=(8, 16)).eval()
    x = torch.rand(1, 3, 32, 32)
    quantised = benchmark.build_variant("int8", net, [x])
    assert quantised(x).shape == net(x).shape


@pytest.mark.parametrize("argv", [["--models", "resnet"], ["--variants", "tensorrt"], ["--size", "100"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        benchmark.parse_args(argv)
