"""Fingerprints of folders, to assert that an operation changed nothing (or exactly what it should)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_digest(folder: Path, recursive: bool = True, hidden: bool = True) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` by relative path; MONAI Label's ``.lock`` never counts.

    ``recursive=False``: only the files directly inside. ``hidden=False`` leaves out dot files, e.g. the
    temporary files an interrupted atomic write leaves behind (never promoted, harmless).
    """
    files = sorted(folder.rglob("*") if recursive else folder.iterdir())
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and p.name != ".lock" and (hidden or not p.name.startswith("."))
    }


def write(folder: Path, name: str, data: bytes) -> str:
    """Writes ``data`` to ``folder/name`` and returns the path as a string (what the datastore methods take)."""
    path = folder / name
    path.write_bytes(data)
    return str(path)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Contents and modification times (ns) of every file under ``folder``: also catches a rewrite of the
    same bytes."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }
