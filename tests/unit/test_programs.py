"""Every command-line program through the shared program contract (tests/contracts/programs.py): help, usage
errors, and a real run in a folder whose name has spaces and accents."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps import (
    benchmark,
    dicom_import,
    evaluate,
    evaluate_clicks,
    figures,
    import_annotations,
    make_sample_data,
    ohif,
    orthanc,
    predict,
    quality,
    serve,
    train,
)
from apps.research import load, resized_copy, simulate
from lesion_app.core.checkpoint import network_spec, save_model
from lesion_app.core.networks import build_network
from tests.contracts.programs import FileProgramContract, ProgramContract
from tests.support.images import draw_studies
from tests.support.paths import MODEL_DIR, SAMPLE_DATA


def tiny_model(path: Path) -> Path:
    save_model(path, build_network("unet", channels=(8, 16, 32)), network_spec("unet", {"channels": [8, 16, 32]}), {})
    return path


class TestMakeSampleData(FileProgramContract):
    prog, main = "lesion-make-sample-data", make_sample_data.main

    def run_in(self, folder: Path) -> None:
        assert self.run([str(folder / "sample data"), "--count", "2", "--labelled", "1"]) == 0
        assert len(list((folder / "sample data" / "labels" / "final").glob("*.png"))) == 1


class TestTrain(FileProgramContract):
    prog, main = "lesion-train", train.main

    def run_in(self, folder: Path) -> None:
        data = draw_studies(folder / "my data", 4, seed=1, shape=(64, 64))
        out = folder / "new model.pt"
        argv = [str(data), "--out", str(out), "--epochs", "1", "--batch-size", "2", "--spatial-size", "64"]
        assert self.run([*argv, "--log", str(folder / "log file.jsonl")]) == 0
        assert out.is_file() and (folder / "log file.jsonl").read_text().count("\n") == 1


class TestEvaluate(FileProgramContract):
    prog, main = "lesion-evaluate", evaluate.main

    def run_in(self, folder: Path) -> None:
        data = draw_studies(folder / "my data", 3, seed=2, shape=(64, 64))
        model = tiny_model(folder / "a model.pt")
        summary = folder / "summary file.json"
        assert self.run([str(data), str(model), "--split", "all", "--json", str(summary)]) == 0
        assert json.loads(summary.read_text())["n"] == 3


def test_evaluate_names_a_click_model_and_the_program_for_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = draw_studies(tmp_path / "data", 2, seed=2, shape=(64, 64))
    models = [str(MODEL_DIR / f"pretrained_{name}.pt") for name in ("unet", "deepedit")]
    assert evaluate.main([str(data), *models, "--split", "all"]) == 2
    assert "pretrained_deepedit.pt: a click model; evaluate it with lesion-evaluate-clicks" in capsys.readouterr().err


class TestEvaluateClicks(FileProgramContract):
    prog, main = "lesion-evaluate-clicks", evaluate_clicks.main

    def run_in(self, folder: Path) -> None:
        """Two photographs (the validation one of five, and one more data set's only one), the shipped click
        model with and without its refinement (f-BRS) beside both baselines; the table, the per-image IoU after
        0..20 clicks and the curves."""
        first = draw_studies(folder / "my data", 5, seed=3, shape=(96, 128))
        second = draw_studies(folder / "other data", 1, seed=4, shape=(96, 128))
        model, auto = MODEL_DIR / "pretrained_deepedit.pt", MODEL_DIR / "pretrained_unet.pt"
        argv = [str(first), str(second), "--model", str(model), "--auto", str(auto), "--random-walker"]
        argv += ["--click-brs-iterations", "1", "0", "--click-prior-sigma", "35"]  # 1 iteration: f-BRS on, quickly
        argv += ["--clicks", "6"]  # the field's 20 clicks cost a minute here: the robot's first six show the same
        assert self.run([*argv, "--out", str(folder / "click results")]) == 0
        with open(folder / "click results.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0][:4] == ["data", "method", "id", "iou_0"] and rows[0][-1] == "iou_6" and len(rows) == 1 + 2 * 4
        assert {r[0] for r in rows[1:]} == {"my data", "other data"}
        before = "seed disks of 4 px, prior 3 logits over 35 px"
        assert [r[1] for r in rows[1:3]] == [f"deepedit (f-BRS 1 it., {before})", f"deepedit ({before})"]  # in order
        ious = np.array([[float(v) for v in r[3:]] for r in rows[1:]])
        assert ((ious >= 0) & (ious <= 1)).all() and ious[:, 0].max() > 0.5  # drawn lesions: found without clicks
        table = (folder / "click results.md").read_text()
        assert "NoC@90" in table and "random walker" in table
        assert Image.open(folder / "click results.png").size[0] > 300
        # the rows of an earlier run are taken instead of running every method again: the same table
        assert self.run([*argv, "--earlier", str(folder / "click results.csv"), "--out", str(folder / "again")]) == 0
        assert (folder / "again.md").read_text() == table
        # a run of fewer clicks takes the earlier run's first ones; too few for the table is refused
        assert (
            self.run([*argv[:-1], "5", "--earlier", str(folder / "click results.csv"), "--out", str(folder / "5")]) == 0
        )
        with open(folder / "5.csv", newline="") as f:
            fewer = list(csv.reader(f))
        assert fewer[0][-1] == "iou_5" and fewer[1:] == [r[:-1] for r in rows[1:]]
        with pytest.raises(SystemExit) as refused:
            self.run([*argv[:-1], "4"])
        assert refused.value.code == 2


class TestPredict(FileProgramContract):
    prog, main = "lesion-predict", predict.main

    def run_in(self, folder: Path) -> None:
        photos = folder / "my photos"
        photos.mkdir()
        shutil.copy(SAMPLE_DATA / "lesion_000.jpg", photos / "Pätient 1.jpg")
        model = tiny_model(folder / "a model.pt")
        assert self.run([str(photos), str(folder / "the masks"), "--model", str(model)]) == 0
        with Image.open(folder / "the masks" / "Pätient 1.png") as mask:
            assert set(np.unique(np.asarray(mask))) <= {0, 1}


class TestImport(FileProgramContract):
    prog, main = "lesion-import", import_annotations.main

    def run_in(self, folder: Path) -> None:
        data = draw_studies(folder / "from the clinic", 2, seed=3, shape=(64, 64))
        assert self.run(["folder", str(data), str(folder / "the studies"), "--quiet"]) == 0
        assert len(list((folder / "the studies" / "labels" / "final").glob("*.png"))) == 2


class TestFigures(FileProgramContract):
    prog, main = "lesion-figures", figures.main

    def run_in(self, folder: Path) -> None:
        photo = folder / "a photo.jpg"
        shutil.copy(SAMPLE_DATA / "lesion_000.jpg", photo)
        model = tiny_model(folder / "a model.pt")
        out = folder / "the overlays.png"
        assert self.run(["overlays", str(photo), "--model", str(model), "--out", str(out)]) == 0
        assert out.is_file()


class TestDicomImport(FileProgramContract):
    prog, main = "lesion-dicom-import", dicom_import.main

    def run_in(self, folder: Path) -> None:
        photos = folder / "my photos"
        photos.mkdir()
        shutil.copy(SAMPLE_DATA / "lesion_000.jpg", photos / "Pätient 1.jpg")
        mapping = folder / "the uids.csv"
        assert self.run([str(photos), "--out", str(folder / "dicom files"), "--mapping", str(mapping)]) == 0
        assert len(list((folder / "dicom files").rglob("*.dcm"))) == 1 and "Pätient 1.jpg" in mapping.read_text()


class TestSimulate(ProgramContract):
    prog, main = "lesion-simulate", simulate.main


class TestBenchmark(ProgramContract):
    prog, main = "lesion-benchmark", benchmark.main


class TestOrthanc(ProgramContract):
    prog, main = "lesion-orthanc", orthanc.main


class TestOhifScreenshot(ProgramContract):
    prog, main = "lesion-ohif-screenshot", ohif.main


class TestLoad(ProgramContract):
    prog, main = "lesion-load", load.main


class TestQuality(ProgramContract):
    prog, main = "lesion-quality", quality.main


class TestServe(ProgramContract):
    prog, main = "lesion-serve", serve.main


class TestResizedCopy(FileProgramContract):
    prog, main = "python -m apps.research.resized_copy", resized_copy.main

    def run_in(self, folder: Path) -> None:
        data = draw_studies(folder / "my data", 3, seed=5, shape=(96, 128))
        assert self.run([str(data), str(folder / "resized copy"), "--spatial-size", "64"]) == 0
        for name in ("s0", "s1", "s2"):
            image = Image.open(folder / "resized copy" / "images" / f"{name}.jpg")
            mask = np.asarray(Image.open(folder / "resized copy" / "masks" / f"{name}.png"))
            assert image.size == (64, 64) and image.mode == "RGB" and set(np.unique(mask)) == {0, 255}
