"""The shipped corpus is well-formed and on theme."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from research_agent.catalog import CORPUS_DIR, load_index
from research_agent.html_text import extract_document


def test_index_lists_14_to_20_existing_pages_of_3_to_8_kb() -> None:
    index = load_index()
    assert 14 <= len(index.entries) <= 20
    assert index.theme
    files = {p.name for p in CORPUS_DIR.glob("*.html")}
    assert files == {e.file for e in index.entries}
    for entry in index.entries:
        size = index.path_for(entry).stat().st_size
        assert 3 * 1024 <= size <= 8 * 1024, (entry.file, size)


def test_entries_use_example_domains_and_match_their_html() -> None:
    index = load_index()
    for entry in index.entries:
        parts = urlsplit(entry.url)
        assert parts.scheme == "https" and parts.hostname and parts.hostname.endswith(".example")
        html = index.path_for(entry).read_text(encoding="utf-8")
        doc = extract_document(html)
        assert doc.title.startswith(entry.title)
        assert doc.description == entry.description
        assert entry.tags and all(isinstance(t, str) for t in entry.tags)
        assert "<article>" in html
        assert "<nav" in html or 'class="menu"' in html  # semantic or div-based navigation
        assert "<footer" in html or 'id="site-footer"' in html
        assert len(doc.text) > 1200
        assert "All rights reserved" not in doc.text and "Newsletter" not in doc.text


def test_index_json_is_plain_json_with_documents_mapping() -> None:
    raw = json.loads((CORPUS_DIR / "index.json").read_text(encoding="utf-8"))
    assert set(raw["documents"]) == set(load_index().urls)
    entry = next(iter(raw["documents"].values()))
    assert {"file", "title", "tags", "description"} <= set(entry)


def test_load_index_is_memoised_and_lookup_works() -> None:
    a, b = load_index(), load_index(CORPUS_DIR)
    assert a is b
    first = a.entries[0]
    assert a.get(first.url) == first
    assert a.get("https://nowhere.example/") is None
    assert first.to_dict()["url"] == first.url
