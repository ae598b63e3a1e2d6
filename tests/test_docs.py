"""The documentation's links resolve: every relative link names an existing file, and every
``#anchor`` a heading of the file it points into (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md"),
                    *(ROOT / "contrib").rglob("README.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces become hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def links(document: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", document.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z]+:", target)]


def test_the_documents_exist_and_the_readme_is_a_front_door() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCUMENTS}
    assert {"README.md", "bench/README.md", "docs/configuration.md", "docs/ejbca.md", "docs/apache.md",
            "docs/security.md", "docs/operations.md"} <= names
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in links(document):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and anchor not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_anchor_rules_match_github() -> None:
    text = "# Approvals and `approval_secret`\n## The built-in CA's operator commands\n```\n# not a heading\n```\n"
    assert anchors(text) == {"approvals-and-approval_secret", "the-built-in-cas-operator-commands"}
