from __future__ import annotations

from pathlib import Path

import pytest

from lesion_app.core.data import split
from lesion_app.io.layout import find_pairs


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_project_layout(tmp_path: Path) -> None:
    for i in ("a", "b", "c"):
        touch(tmp_path / "images" / f"{i}.jpg")
    touch(tmp_path / "masks" / "a.png")
    touch(tmp_path / "masks" / "b.png")
    pairs = find_pairs(tmp_path)
    assert [p["id"] for p in pairs] == ["a", "b"]
    assert pairs[0]["label"].endswith("masks/a.png")


def test_isic_naming_and_monai_label_datastore(tmp_path: Path) -> None:
    touch(tmp_path / "ISIC_1.jpg")
    touch(tmp_path / "ISIC_1_segmentation.png")
    touch(tmp_path / "ISIC_2.jpg")
    assert [(p["id"], Path(p["label"]).name) for p in find_pairs(tmp_path)] == [("ISIC_1", "ISIC_1_segmentation.png")]
    store = tmp_path / "store"
    touch(store / "x.png")
    touch(store / "labels" / "final" / "x.png")
    touch(store / "y.jpg")
    pairs = find_pairs(store)
    assert [p["id"] for p in pairs] == ["x"] and "labels/final" in pairs[0]["label"]
    with pytest.raises(FileNotFoundError):
        find_pairs(tmp_path / "missing")


def test_split_is_deterministic_and_disjoint() -> None:
    pairs = [{"id": f"{i:04d}", "image": "", "label": ""} for i in range(100)]
    train, val = split(pairs, 0.2, seed=0)
    assert len(train) == 80 and len(val) == 20
    assert not {p["id"] for p in train} & {p["id"] for p in val}
    assert split(list(reversed(pairs)), 0.2, seed=0)[1] == val  # order of discovery does not matter
    assert split(pairs, 0.2, seed=1)[1] != val
    with pytest.raises(ValueError):
        split(pairs, 1.0)
