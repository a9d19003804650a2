"""Question -> ranked corpus sources, with Okapi BM25 over each document's title, tags and description."""

from __future__ import annotations

import math
from collections import Counter

from research_agent.base import Record
from research_agent.catalog import CorpusEntry, CorpusIndex, load_index
from research_agent.text_utils import terms

# Field weights: a term in the title or tags counts as much as this many description occurrences.
FIELD_WEIGHTS: dict[str, int] = {"title": 2, "tags": 2, "description": 1}


class RankedSource(Record):
    url: str
    title: str
    score: float
    rank: int
    matched_terms: list[str]


def document_terms(entry: CorpusEntry) -> list[str]:
    """The weighted bag of terms BM25 sees for one entry (fields repeated by weight)."""
    out: list[str] = []
    fields = {"title": entry.title, "tags": " ".join(entry.tags), "description": entry.description}
    for name, text in fields.items():
        out.extend(terms(text) * FIELD_WEIGHTS[name])
    return out


class Bm25Planner:
    """Ranks the index's documents against a question. Deterministic: ties break on URL."""

    def __init__(self, index: CorpusIndex | None = None, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.index = index if index is not None else load_index()
        self.k1 = k1
        self.b = b
        self._docs = [Counter(document_terms(e)) for e in self.index.entries]
        self._lengths = [sum(c.values()) for c in self._docs]
        self._avg_len = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        df: Counter[str] = Counter()
        for doc in self._docs:
            df.update(doc.keys())
        n = len(self._docs)
        self._idf = {t: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def score(self, question: str) -> list[tuple[float, CorpusEntry, list[str]]]:
        query = sorted(set(terms(question, keep_numbers=True)))
        scored: list[tuple[float, CorpusEntry, list[str]]] = []
        for entry, doc, length in zip(self.index.entries, self._docs, self._lengths, strict=True):
            total = 0.0
            matched: list[str] = []
            norm = self.k1 * (1 - self.b + self.b * length / self._avg_len) if self._avg_len else self.k1
            for term in query:
                tf = doc.get(term, 0)
                if tf:
                    matched.append(term)
                    total += self._idf[term] * tf * (self.k1 + 1) / (tf + norm)
            scored.append((total, entry, matched))
        return scored

    def plan(self, question: str, k: int = 6, *, min_relative: float = 0.1) -> list[RankedSource]:
        """Top-``k`` sources, best first. Sources scoring below ``min_relative`` times the best score
        (or zero) are dropped, so a narrow question does not drag in pages that share one word."""
        if k <= 0:
            return []
        scored = [s for s in self.score(question) if s[0] > 0.0]
        best = max((s[0] for s in scored), default=0.0)
        scored = [s for s in scored if s[0] >= best * min_relative]
        scored.sort(key=lambda s: (-round(s[0], 9), s[1].url))
        return [
            RankedSource(url=e.url, title=e.title, score=round(sc, 6), rank=i + 1, matched_terms=m)
            for i, (sc, e, m) in enumerate(scored[:k])
        ]


def plan_sources(question: str, k: int = 6, *, index: CorpusIndex | None = None) -> list[RankedSource]:
    """Convenience wrapper: rank the (default) corpus for ``question`` and keep the top ``k``."""
    return Bm25Planner(index).plan(question, k)
