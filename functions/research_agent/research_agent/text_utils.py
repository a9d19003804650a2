"""Shared text primitives: tokenizing, stop words, a light stemmer and TF-IDF helpers.

Everything here is deterministic and dependency-free so that the planner, the summarizer and
the cross-referencer agree on what a "term" is.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

_WORD_RE = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")

_STOPWORD_TEXT = """
    a about above after again against all almost also although am among an and any are around as at
    be because been before being below between both but by can could did do does doing down during
    each either else even ever every few for from further had has have having he her here hers him his
    how however i if in into is it its itself just least less like made make many may me might more
    most much must my near nearly neither no nor not now of off often on once one only onto or other
    our ours out over own per perhaps quite rather roughly same several she should since so some
    still such than that the their theirs them then there these they this those though through thus
    to too toward under until up upon us very via was we were what whatever when where whether which
    while who whom whose why will with within without would yet you your yours
    approximately
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())


def stem(word: str) -> str:
    """A deliberately small suffix stripper (plural/verb endings), applied identically everywhere."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3 or w[0].isdigit():
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith("ing") and len(w) > 5:
        return w[:-3]
    if w.endswith("ed") and len(w) > 4 and not w.endswith("eed"):
        return w[:-2]
    if w.endswith("ency") or w.endswith("ancy"):
        return w[:-2] + "t"  # efficiency -> efficient
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("e") and len(w) > 4:
        w = w[:-1]  # price/prices/priced -> pric, average/averaged -> averag
    return w


def words(text: str) -> list[str]:
    """Lower-cased word tokens (numbers kept, decimals such as 3.5 kept whole)."""
    return _WORD_RE.findall(text.lower())


def terms(text: str, *, keep_numbers: bool = False) -> list[str]:
    """Stemmed content terms with stop words (and, by default, pure numbers) removed."""
    out: list[str] = []
    for w in words(text):
        if w in STOPWORDS:
            continue
        if not keep_numbers and w.replace(".", "").replace("'", "").isdigit():
            continue
        if len(w) == 1 and not w.isdigit():
            continue
        out.append(stem(w))
    return out


def idf_table(documents: Iterable[Iterable[str]]) -> dict[str, float]:
    """Smoothed inverse document frequency: ``ln((N + 1) / (df + 1)) + 1``."""
    df: Counter[str] = Counter()
    n = 0
    for doc in documents:
        n += 1
        df.update(set(doc))
    return {t: math.log((n + 1) / (c + 1)) + 1.0 for t, c in df.items()}


def tfidf_vector(tokens: Sequence[str], idf: Mapping[str, float], *, binary: bool = False) -> dict[str, float]:
    """Sparse TF-IDF vector (log-scaled term frequency unless ``binary``)."""
    counts = Counter(tokens)
    default = max(idf.values(), default=1.0)
    return {t: (1.0 if binary else 1.0 + math.log(c)) * idf.get(t, default) for t, c in sorted(counts.items())}


def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine similarity of two sparse vectors (0.0 when either is empty)."""
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(v * large.get(k, 0.0) for k, v in small.items())
    if dot == 0.0:
        return 0.0
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb)
