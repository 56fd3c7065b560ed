"""docs/models.md is the model spec the code cites: every citation names the page by path
and, where it names a section, a section the page has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "models.md"


def sources() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted((ROOT / "sepconc").rglob("*.py"))}


def test_no_citation_of_a_page_users_do_not_have():
    assert PAGE.is_file()
    stale = [str(p.relative_to(ROOT)) for p, text in sources().items() if "MODELS.md" in text]
    assert stale == []


def test_cited_sections_exist():
    headings = re.findall(r"^#+ (.+)$", PAGE.read_text(), flags=re.M)
    cited = {m for text in sources().values()
             for m in re.findall(r'docs/models\.md[,:]? *"([^"]+)"', text)}  # fmt: skip
    assert cited, "no section citation found: the pattern is stale"
    missing = [c for c in cited if not any(h.startswith(c) for h in headings)]
    assert missing == [], (missing, headings)
