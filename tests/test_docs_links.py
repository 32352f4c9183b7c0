"""Every relative link of the README (and of docs/, where it has pages) names a file or folder of the project."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import helpers as h

PAGES = [h.PROJECT_ROOT / "README.md", *sorted((h.PROJECT_ROOT / "docs").glob("**/*.md"))]
# [text](target) and [text](target "title"), not images' badges' external addresses or in-page anchors
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:", "#")


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)  # code blocks hold no links
    return [target for target in LINK.findall(text) if not target.startswith(EXTERNAL)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(h.PROJECT_ROOT)))
def test_every_relative_link_resolves(page):
    missing = [target for target in relative_links(page)
               if not (page.parent / target.split("#")[0]).exists()]
    assert not missing, f"{page.name} links to what the project lacks: {missing}"


def test_the_readme_links_the_notebooks_and_the_results():
    links = relative_links(PAGES[0])
    assert {f"notebooks/{p.name}" for p in (h.PROJECT_ROOT / "notebooks").glob("0*.ipynb")} <= set(links)
