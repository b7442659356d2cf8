"""How a trained model is written to and read from disk, and which of a model's files is served.

A model file is a dict: ``model`` (the state dict, floating tensors stored as fp16 to halve the size on
disk), ``network`` (architecture name and keyword arguments, so the file alone rebuilds the network, as
segmentation_models.pytorch's hub mixin saves its configuration) and ``meta`` (how it was trained and how
well it validated).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lesion_app.core.networks import build_network
from lesion_app.io.files import atomic_write

logger = logging.getLogger(__name__)


def network_spec(arch: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``network`` entry of a model file: ``{"arch": ..., "kwargs": {...}}``."""
    return {"arch": arch, "kwargs": dict(kwargs or {})}


def save_model(path: str | Path, network: nn.Module, spec: dict[str, Any], meta: dict[str, Any]) -> None:
    """Writes ``network``'s weights (fp16), its ``spec`` (:func:`network_spec`) and ``meta`` atomically."""
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in network.state_dict().items()}
    payload = {"model": state, "network": spec, "meta": meta}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The model file's dict (tensors on the CPU); raises what ``torch.load`` raises for a damaged file."""
    return torch.load(path, map_location="cpu", weights_only=True)


def network_from(checkpoint: dict[str, Any]) -> nn.Module:
    """The network a model file describes, with its weights (float32), in train mode."""
    spec = checkpoint["network"]
    network = build_network(spec["arch"], **spec["kwargs"])
    network.load_state_dict(checkpoint["model"])
    return network


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network a model file describes, with its weights, in eval mode; and the file's meta."""
    checkpoint = read_checkpoint(path)
    return network_from(checkpoint).eval(), checkpoint.get("meta", {})


@functools.lru_cache(maxsize=16)
def model_meta(path: str, mtime: float) -> dict[str, Any]:
    """The ``meta`` of a model file, read once per version of the file (``mtime`` is the cache key); {} if
    the file cannot be read."""
    try:
        return read_checkpoint(path).get("meta", {})
    except Exception:
        return {}


class ModelFiles:
    """The newest readable file among a model's candidates, loaded once per version of the file.

    A truncated or foreign file must not take a model offline: its version is skipped (the next older
    candidate, in the end the shipped weights, is used) until the file changes. Candidates are listed
    oldest first (the shipped weights, then the ones the server trained). The infer tasks and the
    uncertainty estimator keep separate instances (their networks must not be shared).
    """

    def __init__(self, log_prefix: str = "") -> None:
        self.log_prefix = log_prefix
        self._broken: dict[str, float] = {}  # file -> mtime of the version that failed to load
        self._loaded: dict[tuple[str, str], tuple[float, nn.Module]] = {}  # (device, file) -> (mtime, network)

    def candidates(self, paths: Sequence[str]) -> list[tuple[str, float]]:
        """Existing, not known-broken files with their mtimes, newest candidate (last in ``paths``) first."""
        out = []
        for path in reversed(paths):
            if os.path.exists(path):
                mtime = os.stat(path).st_mtime
                if self._broken.get(path) != mtime:
                    out.append((path, mtime))
        return out

    def newest(self, paths: Sequence[str]) -> str | None:
        """The file :meth:`load` would try first, or None."""
        found = self.candidates(paths)
        return found[0][0] if found else None

    def load(self, paths: Sequence[str], device: str = "cpu") -> tuple[str, nn.Module]:
        """(file, network in eval mode) of the newest loadable candidate.

        Raises:
            FileNotFoundError: no candidate exists or loads.
        """
        for path, mtime in self.candidates(paths):
            cached = self._loaded.get((device, path))
            if cached and cached[0] == mtime:
                return path, cached[1]
            try:
                network, _ = load_model(path)
            except Exception as e:
                self._broken[path] = mtime
                logger.error(
                    f"{self.log_prefix}cannot load model {path} ({type(e).__name__}: {e}); trying an older one"
                )
                continue
            network = network.to(torch.device(device)).eval()
            self._loaded[(device, path)] = (mtime, network)
            return path, network
        raise FileNotFoundError(f"no loadable model among {list(paths)}")
