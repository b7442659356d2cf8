"""Every next-sample strategy of the app through the shared strategy contract (tests/contracts/strategies.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random as MonaiRandom

from lesion_app.core.checkpoint import network_spec, save_model
from lesion_app.core.networks import build_network
from lesion_app.core.uncertainty import UncertaintyEstimator
from lesion_app.lib.activelearning.power import PowerUncertainty
from lesion_app.lib.activelearning.random import Random
from lesion_app.lib.activelearning.uncertainty import Uncertainty
from lesion_app.lib.scoring.uncertainty import UncertaintyScoring
from lesion_app.server.datastore import LesionDatastore
from tests.contracts.strategies import StrategyContract, drawn_datastore, sample


def scoring(tmp_path: Path) -> UncertaintyScoring:
    path = tmp_path / "unet.pt"
    net = build_network("unet", channels=(8, 16, 32), dropout=0.3)
    save_model(path, net, network_spec("unet", {"channels": [8, 16, 32], "dropout": 0.3}), {})
    return UncertaintyScoring(UncertaintyEstimator([[str(path)]], (64, 64), "tta"))


class TestRandom(StrategyContract):
    name = "random"

    def make(self, datastore: LesionDatastore, tmp_path: Path) -> Strategy:
        return Random(seed=0)


class TestFirst(StrategyContract):
    name = "first"

    def make(self, datastore: LesionDatastore, tmp_path: Path) -> Strategy:
        return First()


class TestUncertainty(StrategyContract):
    name = "uncertainty"

    def make(self, datastore: LesionDatastore, tmp_path: Path) -> Strategy:
        return Uncertainty(scoring(tmp_path))


class TestPower(StrategyContract):
    name = "power"

    def make(self, datastore: LesionDatastore, tmp_path: Path) -> Strategy:
        return PowerUncertainty(scoring(tmp_path), beta=1.0, seed=0)


def test_monai_labels_own_random_fails_where_ours_does_not(tmp_path: Path) -> None:
    """The defect the contract guards against: every image handed out within one second weighs 0 in MONAI Label's
    ``Random`` and its draw raises; ours keeps a floor."""
    store = drawn_datastore(tmp_path)
    theirs = MonaiRandom()
    with pytest.raises(ValueError, match="weights"):
        for _ in range(20):
            sample(theirs, "random", store)
    ours = Random(seed=0)
    assert all(sample(ours, "random", store) for _ in range(20))
