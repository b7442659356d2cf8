"""Which networks exist, and how a trained model is written to and read from disk.

A model file is a dict: ``model`` (the state dict, floating tensors stored as fp16 to halve the
size on disk), ``network`` (architecture name and keyword arguments, so the file alone rebuilds the
network) and ``meta`` (how it was trained and how well it validated). MONAI Label's infer tasks read
the ``model`` key directly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lesion_app.lib.networks import LesionDeepLabV3, LesionUNet

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": LesionUNet, "deeplabv3": LesionDeepLabV3}


def build_network(arch: str, **kwargs: Any) -> nn.Module:
    """A 2D RGB-in, one-logit-out network of the named architecture."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](spatial_dims=2, in_channels=3, out_channels=1, **kwargs)


def atomic_write(path: str | Path, write: Any) -> None:
    """Calls ``write(tmp_path)`` then renames onto ``path``, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; models and stats are meant to be readable
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(path: str | Path, network: nn.Module, arch: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> None:
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in network.state_dict().items()}
    payload = {"model": state, "network": {"arch": arch, "kwargs": kwargs}, "meta": meta}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network a model file describes, with its weights, in eval mode; and the file's meta."""
    checkpoint = read_checkpoint(path)
    spec = checkpoint["network"]
    network = build_network(spec["arch"], **spec["kwargs"])
    network.load_state_dict(checkpoint["model"])
    return network.eval(), checkpoint.get("meta", {})
