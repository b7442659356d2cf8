"""Which networks exist, and how a trained model is written to and read from disk.

A model file is a dict: ``model`` (the state dict, floating tensors stored as fp16 to halve the
size on disk), ``network`` (architecture name and keyword arguments, so the file alone rebuilds the
network) and ``meta`` (how it was trained and how well it validated). MONAI Label's infer tasks read
the ``model`` key directly.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lesion_app.lib.networks import LesionDeepLabV3, LesionUNet

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": LesionUNet, "deeplabv3": LesionDeepLabV3}


def build_network(arch: str, **kwargs: Any) -> nn.Module:
    """A 2D RGB-in, one-logit-out network of the named architecture."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](spatial_dims=2, in_channels=3, out_channels=1, **kwargs)


#: Fault injection for the crash tests (tests/integration/test_faults.py): seconds ``atomic_write`` sleeps
#: between writing the temp file and renaming it, so a test can kill the server at that exact point.
FAULT_SLEEP_ENV = "LESION_FAULT_SLEEP_BEFORE_RENAME"
#: Optional glob on the target's file name (e.g. ``.candidate_*``); without it every atomic write sleeps.
FAULT_MATCH_ENV = "LESION_FAULT_MATCH"


def _fault_pause(path: Path) -> None:
    seconds = float(os.environ.get(FAULT_SLEEP_ENV) or 0)
    if seconds > 0 and fnmatch.fnmatch(path.name, os.environ.get(FAULT_MATCH_ENV) or "*"):
        logger.warning("%s: holding %s for %gs, its temp file complete, unrenamed", FAULT_SLEEP_ENV, path, seconds)
        time.sleep(seconds)


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
        _fault_pause(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Makes a rename durable; not every file system lets a folder be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


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


class ModelFiles:
    """The newest readable file among a model's candidates, loaded once per version of the file.

    A truncated or foreign file must not take a model offline: its version is skipped (the next older
    candidate, in the end the shipped weights, is used) until the file changes. Shared by the infer tasks
    and the uncertainty estimator, which keep separate instances (their networks must not be shared).
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
        found = self.candidates(paths)
        return found[0][0] if found else None

    def load(self, paths: Sequence[str], device: str = "cpu") -> tuple[str, nn.Module]:
        """(file, network in eval mode) of the newest loadable candidate; FileNotFoundError if none loads."""
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
