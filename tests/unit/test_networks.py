"""Every architecture through the shared network contract (tests/contracts/networks.py)."""

from __future__ import annotations

import pytest

from lesion_app.core.networks import build_network
from tests.contracts.networks import NetworkContract


class TestUNet(NetworkContract):
    arch = "unet"


class TestDeepLabV3(NetworkContract):
    arch = "deeplabv3"


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("segformer")
