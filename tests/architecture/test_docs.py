"""The docs stand alone: they cite nothing outside the repository, and every "api.md
§N" that the docs, the code or the tests cite is a section of docs/api.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION_CITED = re.compile(r"api\.md\)? §(\d+)")
SECTION_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def texts() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    code = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py"))]
    return docs + code


def test_no_doc_cites_a_file_outside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        assert "shared/" not in text, path
        for target in LINK.findall(text):
            if "://" in target:
                continue  # a web address, not a file
            assert (path.parent / target).resolve().exists(), (path, target)


def test_every_cited_section_of_api_md_exists() -> None:
    sections = set(SECTION_HEADING.findall((ROOT / "docs" / "api.md").read_text()))
    assert sections == {str(n) for n in range(1, 9)}
    for path in texts():
        for cited in SECTION_CITED.findall(path.read_text()):
            assert cited in sections, (path, cited)
