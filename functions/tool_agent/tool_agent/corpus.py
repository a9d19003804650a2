"""The agent's knowledge: a few shipped text files, searched by term overlap (no network, no index)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace(",", ""))


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@lru_cache(maxsize=1)
def documents() -> tuple[Document, ...]:
    return tuple(Document(p.name, p.read_text(encoding="utf-8")) for p in sorted(CORPUS_DIR.glob("*.txt")))


def document(name: str) -> Document:
    for doc in documents():
        if doc.name == name:
            return doc
    raise KeyError(name)


def rank(query: str, k: int = 3) -> list[str]:
    """The names of the ``k`` documents that best match ``query`` (idf-weighted term overlap), best first."""
    docs = documents()
    terms = set(words(query))
    df = Counter(t for d in docs for t in set(words(d.text)) if t in terms)
    scored = []
    for d in docs:
        tf = Counter(words(d.text))
        score = sum((1 + math.log(tf[t])) * math.log(1 + len(docs) / df[t]) for t in terms if tf[t])
        if score > 0:
            scored.append((-score, d.name))
    return [name for _, name in sorted(scored)[:k]]


def sentences_with(doc: Document, *terms: str) -> list[str]:
    """The sentences of ``doc`` that contain every term (case-insensitive)."""
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", doc.text.replace("\n", " ")):
        low = sentence.lower()
        if all(t.lower() in low for t in terms):
            out.append(sentence.strip())
    return out


def find_quantity(text: str, metric: str, year: int) -> float | None:
    """``<number> <metric> in <year>`` in ``text`` (``1,284,000 trips in 2025``), or None."""
    stem = re.escape(metric.rstrip("s"))
    m = re.search(rf"(\d[\d,]*(?:\.\d+)?)\s+{stem}s?\b[^.\d]*?\bin {year}\b", text, re.IGNORECASE)
    if m is None:
        return None
    return float(m.group(1).replace(",", ""))
