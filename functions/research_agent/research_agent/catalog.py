"""The shipped corpus: ``corpus/index.json`` (URL -> file, title, tags, ...) plus the HTML files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

CORPUS_DIR: Path = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class CorpusEntry:
    """One document of the corpus index."""

    url: str
    file: str
    title: str
    tags: tuple[str, ...]
    description: str = ""
    outlet: str = ""
    published: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "file": self.file,
            "title": self.title,
            "tags": list(self.tags),
            "description": self.description,
            "outlet": self.outlet,
            "published": self.published,
        }


@dataclass(frozen=True)
class CorpusIndex:
    """The parsed index, in file order (which is stable, so iteration is deterministic)."""

    theme: str
    entries: tuple[CorpusEntry, ...]
    root: Path

    def get(self, url: str) -> CorpusEntry | None:
        for entry in self.entries:
            if entry.url == url:
                return entry
        return None

    def path_for(self, entry: CorpusEntry) -> Path:
        return self.root / entry.file

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.entries]


def _parse(raw: dict[str, Any], root: Path) -> CorpusIndex:
    docs = raw.get("documents")
    if not isinstance(docs, dict):
        raise ValueError("corpus index must have a 'documents' object mapping URL -> entry")
    entries = []
    for url, meta in docs.items():
        if not isinstance(meta, dict) or "file" not in meta or "title" not in meta:
            raise ValueError(f"corpus index entry for {url!r} needs 'file' and 'title'")
        entries.append(
            CorpusEntry(
                url=str(url),
                file=str(meta["file"]),
                title=str(meta["title"]),
                tags=tuple(str(t) for t in meta.get("tags", [])),
                description=str(meta.get("description", "")),
                outlet=str(meta.get("outlet", "")),
                published=str(meta.get("published", "")),
            )
        )
    return CorpusIndex(theme=str(raw.get("theme", "")), entries=tuple(entries), root=root)


@lru_cache(maxsize=8)
def _load_cached(root: Path) -> CorpusIndex:
    with (root / "index.json").open(encoding="utf-8") as fh:
        raw = json.load(fh)
    return _parse(raw, root)


def load_index(root: Path | str | None = None) -> CorpusIndex:
    """Load (and memoise) the corpus index at ``root`` (default: the shipped corpus)."""
    return _load_cached(Path(root).resolve() if root is not None else CORPUS_DIR)
