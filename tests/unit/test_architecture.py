"""The layering rules the layout promises, checked on the source (docs/layout.md).

- ``lesion_app/io`` (files and formats) imports nothing else of ours, and nothing of MONAI Label or the web stack;
- ``lesion_app/core`` (plain torch and MONAI) imports only ``core`` and ``io``, nothing of MONAI Label or the web;
- nothing in ``lesion_app`` imports the programs in ``apps``;
- the request checks (``lesion_app/server/checks.py``) are the only code that makes HTTP errors.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGE = REPO / "lesion_app"
WEB = ("monailabel", "fastapi", "starlette", "uvicorn", "httpx", "requests")


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Every module a file imports, by absolute name (``from . import x`` is resolved against the file)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
    return names


def sources(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.rglob("*.py"))


def forbidden_imports(path: Path, forbidden: tuple[str, ...], root: Path = REPO) -> list[str]:
    """The modules ``path`` imports that are, or lie inside, one of ``forbidden``."""
    return sorted(
        m for m in imported_modules(path, root) if m in forbidden or m.startswith(tuple(f + "." for f in forbidden))
    )


def offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {str(p.relative_to(REPO)): forbidden_imports(p, forbidden) for p in sources(folder)}
    return {path: bad for path, bad in found.items() if bad}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("io", ("lesion_app.core", "lesion_app.lib", "lesion_app.server", "lesion_app.main", *WEB)),
        ("core", ("lesion_app.lib", "lesion_app.server", "lesion_app.main", *WEB)),
        ("", ("apps", "tests")),
    ],
    ids=["io", "core", "lesion_app"],
)
def test_layers_import_only_downwards(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(folder, forbidden) == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rule above is not vacuous: upward imports, absolute or relative, are found; allowed ones are not."""
    probe = tmp_path / "lesion_app" / "core" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "from lesion_app.lib.settings import LesionSettings\nimport monailabel.config\nfrom ..server import checks\n"
        "from lesion_app.io.images import to_rgb\nimport torch\n"
    )
    forbidden = ("lesion_app.lib", "lesion_app.server", "monailabel")
    assert forbidden_imports(probe, forbidden, tmp_path) == [
        "lesion_app.lib.settings",
        "lesion_app.server",
        "monailabel.config",
    ]


def test_only_the_request_checks_make_http_errors() -> None:
    makers = []
    for path in sources(""):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "HTTPException"
            ):
                makers.append(str(path.relative_to(REPO)))
    assert set(makers) == {"lesion_app/server/checks.py"}
