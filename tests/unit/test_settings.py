from __future__ import annotations

import pytest

from lesion_app.core.clicks import CLICK_RADIUS
from lesion_app.lib.settings import ALL_MODELS, LesionSettings


def test_defaults_and_paths(tmp_path) -> None:
    s = LesionSettings.from_conf({}, tmp_path)
    assert s.models == ALL_MODELS and s.spatial == (256, 256)
    assert s.pretrained_path("unet") == str(tmp_path / "model" / "pretrained_unet.pt")
    assert s.published_path("unet") == str(tmp_path / "model" / "unet.pt")


@pytest.mark.parametrize(("cores", "conf", "threads"), [(2, {}, 1), (1, {}, 1), (16, {}, 15), (2, {"threads": "2"}, 2)])
def test_torch_threads_leave_a_core_unless_given(tmp_path, monkeypatch, cores, conf, threads) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert LesionSettings.from_conf(conf, tmp_path).torch_threads == threads


def test_conf_values_are_parsed(tmp_path) -> None:
    conf = {
        "models": "deeplabv3",
        "train_epochs": "3",
        "train_lr": "1e-4",
        "model_dir": "/x",
        "click_prior": "2.5",
        "click_prior_sigma": "20",
        "click_brs_iterations": "4",
        "other": "kept for monai",
    }
    s = LesionSettings.from_conf(conf, tmp_path)
    assert s.models == ("deeplabv3",) and s.train_epochs == 3 and s.train_lr == 1e-4 and s.model_dir == "/x"
    assert s.click_options == {
        "click_radius": CLICK_RADIUS,
        "click_prior": 2.5,
        "click_prior_sigma": 20.0,
        "click_brs_iterations": 4,
    }
    assert LesionSettings.from_conf({"models": "all"}, tmp_path).models == ALL_MODELS


@pytest.mark.parametrize(
    "conf",
    [
        {"models": "segformer"},
        {"train_epochs": "ten"},
        {"roi_size": "250"},
        {"val_fraction": "1.5"},
        {"click_radius": "-1"},
        {"click_prior": "25"},
        {"click_prior_sigma": "0"},
        {"click_brs_iterations": "2.5"},
        {"click_brs_iterations": "51"},
    ],
)
def test_bad_values_are_refused_with_the_option_named(tmp_path, conf) -> None:
    with pytest.raises(ValueError, match=f"--conf.*{next(iter(conf))}"):
        LesionSettings.from_conf(conf, tmp_path)


def test_configuration_table_lists_every_setting() -> None:
    """docs/server.md's table is what users read: every field, and nothing that is not one."""
    import re
    from dataclasses import fields
    from pathlib import Path

    from lesion_app.lib.settings import FIELDS_DOC, LesionSettings

    page = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
    section = page[page.index("### Configuration") :]
    rows = re.findall(r"^\| `(\w+)` \|", section, re.M)
    names = [f.name for f in fields(LesionSettings)]
    assert sorted(rows) == sorted(names) == sorted(FIELDS_DOC)
