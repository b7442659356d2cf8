"""lesion-simulate: a short run over drawn studies writes the curve's CSV and picture."""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps.research import simulate
from lesion_app.core.checkpoint import network_spec, save_model
from lesion_app.core.networks import build_network


def test_a_short_simulation_writes_csv_and_png(
    studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    args = [str(studies), "--out", str(out), "--pool", "5", "--val", "1", "--seed-labels", "2", "--step", "1"]
    args += ["--rounds", "1", "--epochs", "1", "--epoch-size", "4", "--full-epochs", "1", "--spatial-size", "64"]
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
    printed = capsys.readouterr().out.splitlines()  # the table and the verdicts, from the same rows
    assert "| labels (of 5) | 2 (40%) | 3 (60%) |" in printed
    (line,) = [p for p in printed if p.startswith("| `uncertainty`, 1 seed | ")]
    assert f"| {float(runs[3]['val_iou']):.3f} ({float(runs[3]['val_iou']) - float(runs[1]['val_iou']):+.3f}; " in line
    assert any(p.startswith("uncertainty: ") and "against random: " in p for p in printed)


def cached_pool(studies: Path, tmp_path: Path) -> tuple[list[dict[str, str]], torch.nn.Module]:
    """The drawn studies cached at 64x64 as the simulation does, and a seeded untrained U-Net."""
    items = simulate.cache_items(
        [
            {"id": p.stem, "image": str(p), "label": str(studies / "masks" / f"{p.stem}.png")}
            for p in sorted((studies / "images").iterdir())
        ],
        64,
        tmp_path,
    )
    torch.manual_seed(0)
    network = build_network("unet").eval()
    last = network.head.deconv  # the output layer
    with torch.no_grad():  # centre the untrained network's logits on 0, where its samples' masks differ
        image = torch.as_tensor(np.asarray(Image.open(items[0]["image"]).convert("RGB")), dtype=torch.float32)
        last.bias -= network(image.permute(2, 0, 1)[None] / 255.0).median()
    return items, network


@pytest.mark.parametrize("method", ["dropout", "tta"])
def test_uncertainty_picks_the_images_the_model_disagrees_on(studies: Path, tmp_path: Path, method: str) -> None:
    items, network = cached_pool(studies, tmp_path)
    torch.manual_seed(1)  # the same dropout draws for the ranking and the pick
    scores = simulate.uncertainty_ranking(network, items, samples=4, size=64, method=method)
    assert len(set(scores)) > 1  # the untrained network's samples disagree more on some photographs
    torch.manual_seed(1)
    picked = simulate.pick("uncertainty", network, items, 2, random.Random(0), 4, 64, method=method)
    expected = sorted(range(len(items)), key=lambda i: -scores[i])[:2]
    assert [p["id"] for p in picked] == [items[i]["id"] for i in expected]
    assert len({p["id"] for p in simulate.pick("random", network, items, 3, random.Random(0), 4, 64)}) == 3
    with pytest.raises(ValueError):
        simulate.pick("smallest", network, items, 1, random.Random(0), 4, 64)


def test_too_small_a_pool_is_refused(studies: Path, tmp_path: Path) -> None:
    assert simulate.main([str(studies), "--out", str(tmp_path), "--pool", "3", "--seed-labels", "3"]) == 2


@pytest.mark.parametrize("strategy", ["power", "diverse", "density", "typical", "typical-uncertain"])
def test_batch_strategies_pick_distinct_unlabelled_images(studies: Path, tmp_path: Path, strategy: str) -> None:
    items, network = cached_pool(studies, tmp_path)
    torch.manual_seed(1)
    scores, embeddings = simulate.uncertainty_and_embeddings(network, items, samples=4, size=64)
    torch.manual_seed(1)
    assert scores == simulate.uncertainty_ranking(network, items, samples=4, size=64)
    assert embeddings.shape == (len(items), 256) and np.isfinite(embeddings).all()  # the bottleneck's channels
    assert len(np.unique(embeddings, axis=0)) == len(items)  # one embedding per photograph, all different
    alone = simulate.uncertainty_and_embeddings(network, items, samples=4, size=64, with_scores=False)
    assert alone[0] == [] and np.allclose(alone[1], embeddings, atol=1e-5)  # typical needs no sampling
    labelled, unlabelled = items[:1], items[1:]
    for seed in range(3):
        picked = simulate.pick(strategy, network, unlabelled, 3, random.Random(seed), 4, 64, 1.0, "dropout", labelled)
        ids = [p["id"] for p in picked]
        assert len(ids) == 3 == len(set(ids)) and items[0]["id"] not in ids
    torch.manual_seed(2)
    again = simulate.pick(strategy, network, unlabelled, 3, random.Random(0), 4, 64, labelled=labelled)
    torch.manual_seed(2)
    first = simulate.pick(strategy, network, unlabelled, 3, random.Random(0), 4, 64, labelled=labelled)
    assert [p["id"] for p in again] == [p["id"] for p in first]  # the run's seed decides, as for random
    everything = simulate.pick(strategy, network, unlabelled, 10, random.Random(0), 4, 64, labelled=labelled)
    assert sorted(p["id"] for p in everything) == sorted(i["id"] for i in unlabelled)


def test_the_new_strategies_run_in_the_loop(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop with power, diverse and typical; training is skipped (the short simulation above covers it)."""
    items = simulate.cache_items(
        [
            {"id": p.stem, "image": str(p), "label": str(studies / "masks" / f"{p.stem}.png")}
            for p in sorted((studies / "images").iterdir())
        ],
        64,
        tmp_path,
    )
    trained: list[list[str]] = []

    def no_training(network: torch.nn.Module, arch: str, labelled: list[dict], *args: object) -> tuple:
        trained.append([i["id"] for i in labelled])
        return network.eval(), {"iou": 0.5, "dice": 0.6}

    monkeypatch.setattr(simulate, "train_round", no_training)
    cfg = simulate.FitConfig(max_epochs=1, batch_size=2, spatial_size=(64, 64))
    pool, val = items[:5], items[5:]
    strategies = ("power", "diverse", "typical")
    sim = simulate.Simulation(strategies, [0], 1, 2, 2, cfg, "unet", samples=3, beta=2.0)
    rows = simulate.simulate(pool, val, sim, tmp_path)
    assert [(r.strategy, r.labels) for r in rows] == [(s, n) for s in strategies for n in (1, 3, 5)]
    for labelled in trained:
        assert len(labelled) == len(set(labelled)) and set(labelled) <= {i["id"] for i in pool}
    assert trained[0] == trained[3] == trained[6]  # the same seed set for every strategy
    assert sorted(trained[2]) == sorted(trained[5]) == sorted(trained[8]) == sorted(i["id"] for i in pool)


def test_simulation_options_are_checked_before_any_work(studies: Path, tmp_path: Path) -> None:
    args = [str(studies), "--out", str(tmp_path / "sim"), "--pool", "5", "--seed-labels", "2", "--step", "2"]
    assert simulate.main([*args, "--strategies", "diverse", "--beta", "-1"]) == 2
    assert not (tmp_path / "sim").exists()
    with pytest.raises(SystemExit):
        simulate.main([*args, "--strategies", "smallest"])


def test_from_a_served_model_rounds_keep_a_model_only_when_validation_did_not_drop(
    studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--init: every strategy starts from the model file, and each round passes the server's gate."""
    torch.manual_seed(3)
    init = tmp_path / "served.pt"
    save_model(init, build_network("deeplabv3"), network_spec("deeplabv3", {}), {})
    out = tmp_path / "sim"
    args = [str(studies), "--out", str(out), "--pool", "5", "--val", "2", "--val-fraction", "0.3", "--init", str(init)]
    args += ["--seed-labels", "2", "--step", "1", "--rounds", "2", "--epochs", "1", "--epoch-size", "4"]
    assert (
        simulate.main([*args, "--full-epochs", "1", "--spatial-size", "64", "--batch-size", "2", "--samples", "3"]) == 0
    )
    assert "uncertainty score vs the model's error on the pool (Spearman): dropout " in capsys.readouterr().out
    with open(out / "simulation.csv") as f:
        rows = list(csv.DictReader(f))
    (start,) = [float(r["val_iou"]) for r in rows if r["strategy"] == "start"]
    assert float(next(r for r in rows if r["strategy"] == "full")["val_iou"]) >= start
    for strategy in ("random", "uncertainty"):
        curve = [float(r["val_iou"]) for r in rows if r["strategy"] == strategy]
        assert len(curve) == 3 and curve[0] >= start
        assert all(b >= a for a, b in itertools.pairwise(curve))  # a worse round never replaces the model


def test_a_missing_init_model_is_an_error(studies: Path, tmp_path: Path) -> None:
    args = [str(studies), "--out", str(tmp_path / "sim"), "--pool", "5", "--seed-labels", "2", "--step", "1"]
    assert simulate.main([*args, "--init", str(tmp_path / "nothing.pt")]) == 2
    assert not (tmp_path / "sim").exists()


def test_how_well_each_uncertainty_method_tracks_the_error(studies: Path, tmp_path: Path) -> None:
    items, network = cached_pool(studies, tmp_path)
    torch.manual_seed(0)
    rho = simulate.score_tracks_error(network, items, samples=4, size=64)
    assert set(rho) == {"dropout", "tta"}
    assert all(-1.0 <= r <= 1.0 for r in rho.values())


def test_score_check_prints_the_tracking_and_trains_nothing(
    studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = tmp_path / "served.pt"
    save_model(init, build_network("unet"), network_spec("unet", {}), {})
    args = [str(studies), "--out", str(tmp_path / "sim"), "--pool", "5", "--seed-labels", "2", "--step", "1"]
    assert simulate.main([*args, "--spatial-size", "64", "--samples", "3", "--score-check", "--init", str(init)]) == 0
    printed = capsys.readouterr().out
    assert "(Spearman): dropout " in printed and ", tta " in printed and "all 5 labels" not in printed
    assert not (tmp_path / "sim" / "simulation.csv").exists()
    assert simulate.main([*args, "--score-check"]) == 2
