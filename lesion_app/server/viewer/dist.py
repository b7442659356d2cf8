"""OHIF's prebuilt viewer (the npm package ``@ohif/app``'s ``dist/``), served under a sub-path such as ``/ohif``.

The build hard-codes the site root ``/`` as its public path. The files that say so are rewritten for the prefix
in memory, once each, the first time they are asked for (the files on disk are never changed):

- ``index.html``: ``window.PUBLIC_URL="/"`` and every ``src="/``, ``href="/``, ``content="/``;
- every webpack runtime (the app bundle and the worker bundles): ``__webpack_require__.p = "/";``, the base of
  lazily loaded chunks, workers and wasm (a build-time constant, not read from ``PUBLIC_URL``), and the
  microscopy loader's ``'/dicom-microscopy-viewer/``;
- stylesheets: ``url(/``; ``manifest.json``: ``"src": "/``.

Any other path without a file name extension is one of OHIF's routes (``/ohif/segmentation?...``) and gets
``index.html``; a missing file with an extension is 404, so a wrong chunk path fails clearly.
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

#: Where ``make viewers`` installs it (``npm ci --prefix viewer``), from this repository's ``viewer/package.json``.
REPO = Path(__file__).resolve().parents[3]
DEFAULT_DIST = REPO / "viewer" / "node_modules" / "@ohif" / "app" / "dist"
#: Overrides :data:`DEFAULT_DIST` (another install of ``@ohif/app``'s ``dist/``).
DIST_ENV = "LESION_OHIF_DIST"
SETUP_HINT = "run `make viewers` in the repository (npm ci --prefix viewer) or set LESION_OHIF_DIST"

#: Content types Python's table lacks or gets wrong; wasm must be application/wasm for streaming compilation.
CONTENT_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".html": "text/html; charset=utf-8",
    ".woff2": "font/woff2",
    ".svg": "image/svg+xml",
}


def dist_folder() -> Path:
    """The ``dist/`` folder to serve: ``$LESION_OHIF_DIST`` or the repository's ``viewer/`` install."""
    configured = os.environ.get(DIST_ENV, "").strip()
    return Path(configured) if configured else DEFAULT_DIST


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def rewrites(prefix: str) -> list[tuple[str, re.Pattern[str], str]]:
    """(file name pattern, hard-coded root, replacement) for every place the build assumes it is served at ``/``."""
    p = prefix.rstrip("/") + "/"
    return [
        (r"index\.html", re.compile(r'window\.PUBLIC_URL="/"'), f'window.PUBLIC_URL="{p}"'),
        (r"index\.html", re.compile(r'((?:src|href|content)=")/(?!/)'), rf"\g<1>{p}"),
        (r".*\.js", re.compile(r'__webpack_require__\.p = "/";'), f'__webpack_require__.p = "{p}";'),
        (r".*\.js", re.compile(r"'/dicom-microscopy-viewer/"), f"'{p}dicom-microscopy-viewer/"),
        (r".*\.css", re.compile(r"url\(/(?!/)"), f"url({p}"),
        (r"manifest\.json", re.compile(r'"src": "/'), f'"src": "{p}'),
    ]


@dataclass(frozen=True)
class Asset:
    """What to send for one path: the bytes (a rewritten file), or a file on disk to stream."""

    media_type: str
    body: bytes | None = None
    path: Path | None = None


class ViewerFiles:
    """The dist's files as served under ``prefix``; each rewritten file is built once and kept in memory.

    Raises FileNotFoundError (from :meth:`asset`) when the dist is not installed, naming how to install it.
    """

    def __init__(self, dist: Path, prefix: str = "/ohif") -> None:
        self.dist = dist.resolve()
        self.prefix = "/" + prefix.strip("/")
        self._rewrites = rewrites(self.prefix)
        self._cache: dict[str, bytes | None] = {}  # relative path -> rewritten bytes, or None: serve as it is
        self._lock = threading.Lock()

    def installed(self) -> bool:
        return (self.dist / "index.html").is_file()

    def _rewritten(self, rel: str, path: Path) -> bytes | None:
        with self._lock:
            if rel in self._cache:
                return self._cache[rel]
        rules = [(pattern, repl) for name, pattern, repl in self._rewrites if re.fullmatch(name, path.name)]
        result = None
        if rules:
            text = original = path.read_bytes().decode("utf-8", errors="surrogateescape")
            for pattern, repl in rules:
                text = pattern.sub(repl, text)
            if text != original:
                result = text.encode("utf-8", errors="surrogateescape")
        with self._lock:
            self._cache[rel] = result
        return result

    def asset(self, rel: str) -> Asset | None:
        """The file for ``<prefix>/<rel>``, index.html for an OHIF route, None for a missing file (404)."""
        if not self.installed():
            raise FileNotFoundError(f"OHIF is not installed at {self.dist}: {SETUP_HINT}")
        rel = rel.lstrip("/")
        target = (self.dist / rel).resolve() if rel else self.dist / "index.html"
        if not target.is_relative_to(self.dist):
            return None
        if not target.is_file():
            if "." in rel.rsplit("/", 1)[-1]:
                return None  # a missing file, never index.html for a .js or .wasm request
            target, rel = self.dist / "index.html", "index.html"  # an OHIF route: the single-page app
        rel = target.relative_to(self.dist).as_posix()
        body = self._rewritten(rel, target)
        media = content_type(target.name)
        return Asset(media, body=body) if body is not None else Asset(media, path=target)
