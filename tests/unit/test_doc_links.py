"""Every link between the README and the pages in docs/ leads to a file that exists, and to a heading it has.

The README is short and sends readers into docs/ for the rest; a page renamed or a heading reworded must not leave
a link dangling. Anchors follow GitHub's rule for heading ids (lower case, punctuation dropped, spaces to hyphens,
``-1``, ``-2`` for repeats).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def prose(text: str) -> str:
    """The page without its fenced code blocks and inline code (a link inside them is text)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def heading_ids(text: str) -> set[str]:
    """The anchors GitHub gives the page's headings: ``## Speed on this 2-core CPU`` -> ``speed-on-this-2-core-cpu``."""
    ids: set[str] = set()
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in ids:
            n += 1
            candidate = f"{slug}-{n}"
        ids.add(candidate)
    return ids


def local_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_heading_ids_follow_githubs_rule() -> None:
    text = "# Results\n## The paper's Tables I and II on our data\n## Correcting with clicks (SmartEdit)\n## Results\n"
    assert heading_ids(text) == {
        "results",
        "the-papers-tables-i-and-ii-on-our-data",
        "correcting-with-clicks-smartedit",
        "results-1",
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_local_link_resolves(page: Path) -> None:
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(REPO)}")
        elif anchor and destination.suffix == ".md" and anchor not in heading_ids(destination.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_page_it_hands_the_details_to() -> None:
    """The README names a page for each part of the documentation; each of them is linked from it."""
    linked = {t.partition("#")[0] for t in local_links(REPO / "README.md")}
    wanted = ["install", "server", "ohif", "slicer", "training", "results", "operating", "layout", "programs"]
    assert {f"docs/{name}.md" for name in wanted} <= linked
