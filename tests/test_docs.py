"""The README is a front page and every page it leads to is one link away; no link between
the pages, or to a heading of one, is broken."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tests.test_layers import ROOT

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FRONT_PAGE_LINES = 300


def slug(heading: str) -> str:
    """A heading's anchor as the forges make it: lowercase, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(path: Path) -> Iterator[str]:
    """The lines outside code fences."""
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield line


def sections(path: Path) -> dict[str, str]:
    """Its headings' anchors, each with its section's prose: the heading and what follows, up
    to the next heading of the same or a higher level. A repeated heading's anchor gets -1,
    -2, ... as on the forges."""
    lines = list(prose(path))
    headings: list[tuple[str, int, int]] = []  # anchor, level, line
    repeats: dict[str, int] = {}
    for number, line in enumerate(lines):
        match = re.match(r"(#{1,6})\s+(.*?)\s*$", line)
        if match:
            base = slug(match.group(2))
            seen = repeats.get(base, 0)
            repeats[base] = seen + 1
            headings.append((base if not seen else f"{base}-{seen}", len(match.group(1)), number))
    found = {}
    for index, (anchor, level, start) in enumerate(headings):
        end = next((line for _, other, line in headings[index + 1:] if other <= level),
                   len(lines))
        found[anchor] = "\n".join(lines[start:end])
    return found


def anchors(path: Path) -> set[str]:
    """Its headings' anchors."""
    return set(sections(path))


def links(path: Path) -> Iterator[str]:
    for line in prose(path):
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"[a-z]+:", target):
                yield target


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no such heading")
    return broken


def test_the_readme_is_a_front_page() -> None:
    assert len(README.read_text().splitlines()) <= FRONT_PAGE_LINES


def test_every_docs_page_is_one_link_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    assert PAGES and [page.name for page in PAGES if page.resolve() not in linked] == []


def test_no_link_between_the_pages_is_broken() -> None:
    pages = [README, *PAGES, *sorted((ROOT / "ops").rglob("*.md"))]
    assert {page.name: broken_links(page) for page in pages if broken_links(page)} == {}


def test_a_section_runs_to_the_next_heading_of_its_level(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## One\n\nfirst\n\n### Detail\n\nmore\n\n## Two\n\nsecond\n"
                    "\n## One\n\nagain\n")
    found = sections(page)
    assert list(found) == ["title", "one", "detail", "two", "one-1"]
    assert found["one"] == "## One\n\nfirst\n\n### Detail\n\nmore\n"
    assert found["detail"] == "### Detail\n\nmore\n"
    assert found["one-1"] == "## One\n\nagain"
    assert found["title"].endswith("again")


def test_the_link_checker_sees_a_broken_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section (v1)\n\n[ok](#a-section-v1) [bad](#nowhere)\n"
                    "[gone](missing.md)\n```\n[not a link](#in-code)\n```\n")
    assert broken_links(page) == ["#nowhere: no such heading", "missing.md: no such file"]
