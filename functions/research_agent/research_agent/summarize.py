"""Extractive summarization with TextRank.

Sentences are nodes of a graph whose edges are the cosine similarity of their TF-IDF vectors; the
stationary distribution of a random walk on that graph (PageRank, by power iteration) ranks them.
The walk's teleport vector can be biased towards sentences that mention the research question's
terms (``focus``) or carry figures (``numeric_weight``): a personalised TextRank. The top sentences
that are not near-duplicates of one already chosen are returned in document order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from research_agent.sentences import is_prose, split_sentences
from research_agent.text_utils import cosine, idf_table, terms, tfidf_vector

_HAS_FIGURE_RE = re.compile(r"\d")


@dataclass(frozen=True)
class ScoredSentence:
    index: int  # position among the document's prose sentences
    text: str
    score: float


def pagerank(
    weights: list[list[float]],
    *,
    damping: float = 0.85,
    teleport: list[float] | None = None,
    tol: float = 1e-10,
    max_iter: int = 200,
) -> list[float]:
    """PageRank of a weighted graph given as a dense adjacency matrix (power iteration).

    Rows with no outgoing weight (dangling nodes) redistribute their rank along ``teleport``.
    """
    n = len(weights)
    if n == 0:
        return []
    p = teleport if teleport is not None else [1.0] * n
    total_p = sum(p)
    p = [x / total_p for x in p] if total_p > 0 else [1.0 / n] * n
    out_sums = [sum(row) for row in weights]
    rank = [1.0 / n] * n
    for _ in range(max_iter):
        dangling = sum(rank[i] for i in range(n) if out_sums[i] == 0.0)
        new = [(1.0 - damping) * p[j] + damping * dangling * p[j] for j in range(n)]
        for i in range(n):
            if out_sums[i] == 0.0 or rank[i] == 0.0:
                continue
            share = damping * rank[i] / out_sums[i]
            row = weights[i]
            for j in range(n):
                if row[j]:
                    new[j] += share * row[j]
        delta = sum(abs(a - b) for a, b in zip(new, rank, strict=True))
        rank = new
        if delta < tol:
            break
    return rank


def rank_sentences(
    text: str,
    *,
    focus: str | None = None,
    focus_weight: float = 0.5,
    numeric_weight: float = 0.0,
    damping: float = 0.85,
    min_words: int = 6,
) -> list[ScoredSentence]:
    """Score every prose sentence of ``text`` (document order)."""
    sentences = [s for s in split_sentences(text) if is_prose(s, min_words=min_words)]
    if not sentences:
        return []
    tokens = [terms(s) for s in sentences]
    idf = idf_table(tokens)
    vectors = [tfidf_vector(t, idf) for t in tokens]
    n = len(sentences)
    weights = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            sim = cosine(vectors[i], vectors[j])
            weights[i][j] = weights[j][i] = sim
    focus_terms = set(terms(focus)) if focus else set()
    teleport = []
    for sent, toks in zip(sentences, tokens, strict=True):
        bias = 1.0
        if focus_terms and toks:
            bias += focus_weight * len(focus_terms.intersection(toks))
        if numeric_weight and _HAS_FIGURE_RE.search(sent):
            bias += numeric_weight
        teleport.append(bias)
    scores = pagerank(weights, damping=damping, teleport=teleport)
    return [ScoredSentence(i, s, sc) for i, (s, sc) in enumerate(zip(sentences, scores, strict=True))]


def summarize(
    text: str,
    max_sentences: int = 5,
    *,
    focus: str | None = None,
    focus_weight: float = 0.5,
    numeric_weight: float = 0.0,
    damping: float = 0.85,
    redundancy: float = 0.6,
) -> list[str]:
    """The ``max_sentences`` best sentences of ``text``, in document order. Deterministic.

    A candidate whose TF-IDF cosine with an already chosen sentence exceeds ``redundancy`` is skipped.
    """
    if max_sentences <= 0:
        return []
    scored = rank_sentences(
        text, focus=focus, focus_weight=focus_weight, numeric_weight=numeric_weight, damping=damping
    )
    if not scored:
        return []
    idf = idf_table(terms(s.text) for s in scored)
    vectors = {s.index: tfidf_vector(terms(s.text), idf) for s in scored}
    chosen: list[ScoredSentence] = []
    for cand in sorted(scored, key=lambda s: (-round(s.score, 12), s.index)):
        if len(chosen) >= max_sentences:
            break
        if any(cosine(vectors[cand.index], vectors[c.index]) > redundancy for c in chosen):
            continue
        chosen.append(cand)
    return [s.text for s in sorted(chosen, key=lambda s: s.index)]
