"""The training loop and the command-line programs around it, on small drawn studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps import evaluate as evaluate_app
from apps import train as train_app
from apps.make_sample_data import make_sample_data
from lesion_app.core.checkpoint import load_model, network_spec, read_checkpoint
from lesion_app.core.networks import build_network
from lesion_app.core.training import loop
from lesion_app.core.training.gate import KEPT_ASIDE, decide
from lesion_app.core.training.loop import FitConfig, Hooks, TrainingRun, fit, lr_factor, progress_of


def items(root: Path) -> list[dict[str, str]]:
    return [{"image": str(p), "label": str(root / "masks" / f"{p.stem}.png")} for p in sorted(root.glob("images/*"))]


def test_fit_publishes_the_best_epoch_and_resumes(studies: Path, tmp_path: Path) -> None:
    data = items(studies)
    out, ck = tmp_path / "model.pt", tmp_path / "state.pt"
    cfg = FitConfig(max_epochs=2, batch_size=2, spatial_size=(64, 64))
    seen = []
    run = TrainingRun(build_network("unet"), network_spec("unet"), data[:4], data[4:], out, ck, {"run": "t"})
    history = fit(run, cfg, Hooks(on_epoch=seen.append))
    assert [h.epoch for h in history] == [1, 2] and seen == history
    assert out.exists() and ck.exists()
    best = max(history, key=lambda h: h.val["iou"])
    meta = read_checkpoint(out)["meta"]
    assert meta["val"]["iou"] == pytest.approx(best.val["iou"]) and meta["run"] == "t"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files are left behind"
    # resuming: a run asked for 3 epochs picks up after epoch 2 and trains only the third
    cfg3 = FitConfig(max_epochs=3, batch_size=2, spatial_size=(64, 64))
    more = fit(TrainingRun(build_network("unet"), network_spec("unet"), data[:4], data[4:], out, ck), cfg3)
    assert [h.epoch for h in more] == [1, 2, 3]


def test_an_epoch_of_a_given_size_and_the_new_layers_at_their_own_rate(studies: Path, tmp_path: Path) -> None:
    """``epoch_size`` draws that many photographs per epoch; ``new_layers`` train at the full rate, the rest at
    ``trunk_lr_factor`` of it; a time budget that has run out ends the epoch after its first step."""
    data = items(studies)
    cfg = FitConfig(max_epochs=1, batch_size=2, spatial_size=(64, 64), epoch_size=2, trunk_lr_factor=0.1)
    network = build_network("unet")
    new = [name for name, _ in network.named_parameters() if name.startswith("head.")]
    steps: list[tuple[int, int]] = []
    run = TrainingRun(network, network_spec("unet"), data[:4], data[4:], tmp_path / "m.pt", new_layers=new)
    fit(run, cfg, Hooks(on_batch=lambda done, total, n: steps.append((done, total))))
    assert steps == [(0, 1), (1, 1)]  # one batch of two out of four photographs
    state = torch.load(tmp_path / "m.pt", weights_only=False)  # written; the rates are in the optimiser's groups
    assert state["meta"]["fit"]["trunk_lr_factor"] == 0.1
    groups = loop.parameter_groups(network, new, cfg)
    assert [g["lr_factor"] for g in groups] == [0.1, 1.0] and len(groups[1]["params"]) == len(new)
    late = FitConfig(max_epochs=1, batch_size=2, spatial_size=(64, 64), max_minutes=1e-6)
    steps.clear()
    fit(
        TrainingRun(build_network("unet"), network_spec("unet"), data[:4], data[4:], tmp_path / "n.pt"),
        late,
        Hooks(on_batch=lambda done, total, n: steps.append((done, total))),
    )
    assert steps == [(0, 2), (1, 2)]  # the budget was spent before the first step ended: the epoch stopped


def test_the_gate_never_publishes_below_the_served_model(studies: Path, tmp_path: Path) -> None:
    """The loop writes its best epoch; the gate publishes it only when it is not below the served model."""
    data = items(studies)
    out = tmp_path / "candidate.pt"
    cfg = FitConfig(max_epochs=1, batch_size=2, spatial_size=(64, 64))
    history = fit(TrainingRun(build_network("deeplabv3"), network_spec("deeplabv3"), data[:4], data[4:], out), cfg)
    new_iou = history[0].val["iou"]
    assert len(history) == 1 and history[0].published and out.exists()
    assert decide(new_iou, 1.01) == KEPT_ASIDE


def test_learning_rate_schedule() -> None:
    assert lr_factor(0, 1, 0.0) == pytest.approx(0.5)  # warm-up
    assert lr_factor(1, 1, 0.0) == pytest.approx(1.0)
    assert lr_factor(5, 1, 1.0) == pytest.approx(0.05)
    assert progress_of(5, FitConfig(max_epochs=10), 0.0) == pytest.approx(0.5)
    assert progress_of(1, FitConfig(max_epochs=10, max_minutes=2.0), 1.5) == pytest.approx(0.75)


def test_train_and_evaluate_programs(studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, log = tmp_path / "cli.pt", tmp_path / "log.jsonl"
    args = [str(studies), "--arch", "deeplabv3", "--epochs", "1", "--batch-size", "2", "--out", str(out)]
    assert train_app.main([*args, "--log", str(log), "--no-attention"]) == 0
    assert "epoch 1/1" in capsys.readouterr().out
    assert json.loads(log.read_text().splitlines()[0])["epoch"] == 1
    network, _ = load_model(out)
    assert not any(type(m).__name__ == "SpatialAttention" for m in network.modules())
    results = tmp_path / "eval.json"
    assert evaluate_app.main([str(studies), str(out), "--split", "all", "--json", str(results)]) == 0
    assert "| cli | 6 |" in capsys.readouterr().out
    scores = json.loads(results.read_text())["rows"]["cli"]
    assert scores["n"] == 6 and 0.0 <= scores["iou"]["mean"] <= 1.0


def test_train_program_refuses_an_empty_folder(tmp_path: Path) -> None:
    assert train_app.main([str(tmp_path), "--out", str(tmp_path / "m.pt")]) == 2


def test_sample_data_is_deterministic_and_exact(tmp_path: Path) -> None:
    first = make_sample_data(tmp_path / "a", count=3, labelled=2, seed=11)
    second = make_sample_data(tmp_path / "b", count=3, labelled=2, seed=11)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    labels = sorted((tmp_path / "a" / "labels" / "final").iterdir())
    assert [p.stem for p in labels] == ["lesion_000", "lesion_001"]
    with Image.open(labels[0]) as lab, Image.open(first[0]) as img:
        mask = np.asarray(lab)
        assert mask.shape == (img.height, img.width) and set(np.unique(mask)) == {0, 1}
        assert 0.02 < mask.mean() < 0.6
        # the lesion is darker than the skin around it
        gray = np.asarray(img.convert("L"), dtype=float)
        assert gray[mask == 1].mean() < gray[mask == 0].mean() - 30


def test_committed_sample_data_matches_the_generator(sample_data: Path, tmp_path: Path) -> None:
    """sample-data/ is what `make sample-data` draws, so it can always be regenerated.

    Photographs are compared by pixels (a newer JPEG encoder may write other bytes), labels exactly.
    """
    fresh = make_sample_data(tmp_path, count=10, labelled=4)
    for path in fresh:
        with Image.open(sample_data / path.name) as committed, Image.open(path) as drawn:
            diff = np.abs(np.asarray(committed, dtype=float) - np.asarray(drawn, dtype=float))
            assert committed.size == drawn.size and diff.mean() < 1.0, path.name
    for label in (tmp_path / "labels" / "final").iterdir():
        assert (sample_data / "labels" / "final" / label.name).read_bytes() == label.read_bytes()


def test_figures_are_pictures(studies: Path, tmp_path: Path) -> None:
    from apps import figures

    model, log = tmp_path / "m.pt", tmp_path / "log.jsonl"
    train_app.main([str(studies), "--epochs", "2", "--batch-size", "2", "--out", str(model), "--log", str(log)])
    images = [str(p) for p in sorted((studies / "images").iterdir())[:2]]
    truths = [str(studies / "masks" / f"{Path(p).stem}.png") for p in images]
    overlay_png, curves_png = tmp_path / "overlays.png", tmp_path / "curves.png"
    args = ["overlays", *images, "--model", str(model), "--postprocess", "--truths", *truths]
    assert figures.main([*args, "--out", str(overlay_png)]) == 0
    assert figures.main(["curves", str(log), "--out", str(curves_png)]) == 0
    for png in (overlay_png, curves_png):
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 200
            assert np.asarray(img.convert("L")).std() > 10  # not a blank canvas


def test_overlay_marks_prediction_and_truth() -> None:
    from apps.figures import PRED_COLOUR, TRUTH_COLOUR, overlay

    image = np.full((20, 20, 3), 128, np.uint8)
    pred = np.zeros((20, 20), bool)
    pred[5:15, 5:15] = True
    truth = np.zeros((20, 20), bool)
    truth[2:18, 2:18] = True
    out = overlay(image, pred, truth)
    assert (out[5, 10] == PRED_COLOUR).all() and (out[2, 10] == TRUTH_COLOUR).all()
    assert out[10, 10, 0] > 128 and (out[0, 0] == 128).all()
