"""Every relative Markdown link in the README, BENCHMARKS.md and docs/ points to a file of the
repository (and, with an anchor, to a heading of it), so a newcomer following one never lands
nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(path: Path) -> set[str]:
    """The GitHub-style anchors of a Markdown file's headings."""
    text = FENCE.sub("", path.read_text())
    found = set()
    for heading in re.findall(r"^#+ +(.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, code blocks left out."""
    return LINK.findall(FENCE.sub("", path.read_text()))


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_of_the_repository(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # an absolute URL (https:, mailto:)
        name, _, anchor = target.partition("#")
        file = (doc.parent / name).resolve() if name else doc
        missing = not file.is_relative_to(ROOT) or not file.exists()
        if missing or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{doc.name}: links that lead nowhere: {broken}"


def test_the_docs_name_no_file_outside_the_repository() -> None:
    for doc in DOCS:
        assert "../shared/" not in doc.read_text(), doc.name


def test_the_readme_stays_short_and_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert readme.startswith("```sh\nbin/run ")
    assert "\nbin/test " in readme.split("```", 2)[1]
