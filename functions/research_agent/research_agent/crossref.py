"""Cross-referencing factual claims across sources.

1. Claims are prose sentences that carry at least one quantity (see :mod:`research_agent.claims`).
2. Two claims from different sources are comparable when they share a unit with values less than
   ``max_ratio`` apart and do not mention disjoint sets of years. Their similarity mixes the weighted
   overlap of the sentences' subject words (``SENTENCE_WEIGHT``) with the cosine of the words next to
   their quantities, and is halved when both name entities (Texas, ERCOT, China...) but share none.
3. Clusters grow by complete linkage (every pair must reach ``threshold``), most similar pairs first,
   with at most one claim per source. Ties break on claim order, so the result is deterministic.
4. Each cluster is compared on its primary unit: claims whose values match within ``tolerance``
   (relative) form a *position*. One source: ``single_source``; one position held by >= 2 sources:
   ``corroborated``; several positions: ``conflicting``.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Literal

from research_agent.base import Record
from research_agent.claims import Claim, entities, extract_claims, subject_terms, surface_forms, window_terms
from research_agent.quantities import Quantity
from research_agent.text_utils import cosine, idf_table, tfidf_vector

Status = Literal["corroborated", "single_source", "conflicting"]


class Position(Record):
    """One value on which a group of sources agree."""

    value: Quantity
    sources: list[str]
    claim_ids: list[str]


class ClaimCluster(Record):
    id: str
    status: Status
    subject: str
    unit: str
    similarity: float  # lowest pairwise similarity inside the cluster (1.0 for a single claim)
    sources: list[str]
    claims: list[Claim]
    positions: list[Position]


class CrossRefResult(Record):
    clusters: list[ClaimCluster]
    source_count: int
    claim_count: int
    tolerance: float
    threshold: float

    def by_status(self, status: Status) -> list[ClaimCluster]:
        return [c for c in self.clusters if c.status == status]

    @property
    def corroborated(self) -> list[ClaimCluster]:
        return self.by_status("corroborated")

    @property
    def conflicting(self) -> list[ClaimCluster]:
        return self.by_status("conflicting")

    @property
    def single_source(self) -> list[ClaimCluster]:
        return self.by_status("single_source")

    def counts(self) -> dict[str, int]:
        return {s: len(self.by_status(s)) for s in ("corroborated", "conflicting", "single_source")}


ENTITY_MISMATCH_PENALTY = 0.5
SENTENCE_WEIGHT = 0.3


def _overlap(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Weighted overlap coefficient: shared weight over the lighter vector's total weight."""
    if not a or not b:
        return 0.0
    shared = sum(min(v, b[k]) for k, v in a.items() if k in b)
    return shared / min(sum(a.values()), sum(b.values()))


class _Linker:
    def __init__(self, claims: list[Claim], threshold: float, max_ratio: float = 5.0) -> None:
        self.claims = claims
        self.threshold = threshold
        self.max_ratio = max_ratio
        self.tokens = [subject_terms(c.text) for c in claims]
        self.idf = idf_table(self.tokens)
        self.vectors = [tfidf_vector(t, self.idf, binary=True) for t in self.tokens]
        self.units = [{q.unit for q in c.quantities} for c in claims]
        known = frozenset(e for c in claims for e in entities(c.text))
        self.entities = [entities(c.text, known) for c in claims]
        self.windows = [
            [(q.unit, tfidf_vector(window_terms(c.text, q.text), self.idf, binary=True)) for q in c.quantities]
            for c in claims
        ]
        self._cache: dict[tuple[int, int], float] = {}

    def sim(self, i: int, j: int) -> float:
        key = (min(i, j), max(i, j))
        if key not in self._cache:
            a, b = self.claims[i], self.claims[j]
            ok = a.source != b.source and self._comparable(a, b)
            if ok and a.years and b.years and not set(a.years) & set(b.years):
                ok = False
            self._cache[key] = self._score(i, j) if ok else 0.0
        return self._cache[key]

    def _comparable(self, a: Claim, b: Claim) -> bool:
        """Some quantity of ``a`` has the unit of one of ``b`` and is within ``max_ratio`` of it: a
        50x gap (2 hours vs 100 hours) means two different things are being measured."""
        for qa in a.quantities:
            for qb in b.quantities:
                if qa.unit != qb.unit:
                    continue
                lo, hi = sorted((abs(qa.value), abs(qb.value)))
                if hi == 0.0 or (lo > 0.0 and hi / lo <= self.max_ratio):
                    return True
        return False

    def _score(self, i: int, j: int) -> float:
        """Blend of whole-sentence overlap and the best cosine of the words around two same-unit
        quantities (what a number measures is usually written right next to it)."""
        local = max(
            (cosine(va, vb) for ua, va in self.windows[i] for ub, vb in self.windows[j] if ua == ub),
            default=0.0,
        )
        score = SENTENCE_WEIGHT * _overlap(self.vectors[i], self.vectors[j]) + (1 - SENTENCE_WEIGHT) * local
        if self.entities[i] and self.entities[j] and not self.entities[i] & self.entities[j]:
            score *= ENTITY_MISMATCH_PENALTY  # "Texas ... 2 hours" vs "California ... 4 hours"
        return score

    def cluster(self) -> list[list[int]]:
        n = len(self.claims)
        pairs = [(self.sim(i, j), i, j) for i, j in combinations(range(n), 2)]
        pairs = [p for p in pairs if p[0] >= self.threshold]
        pairs.sort(key=lambda p: (-round(p[0], 12), p[1], p[2]))
        member_of = list(range(n))
        groups: dict[int, list[int]] = {i: [i] for i in range(n)}
        for _, i, j in pairs:
            gi, gj = member_of[i], member_of[j]
            if gi == gj:
                continue
            a, b = groups[gi], groups[gj]
            if {self.claims[x].source for x in a} & {self.claims[y].source for y in b}:
                continue
            if any(self.sim(x, y) < self.threshold for x in a for y in b):
                continue
            keep, drop = (gi, gj) if gi < gj else (gj, gi)
            groups[keep] = sorted(groups[keep] + groups.pop(drop))
            for x in groups[keep]:
                member_of[x] = keep
        return [groups[k] for k in sorted(groups)]

    def subject(self, members: list[int], max_words: int = 5) -> str:
        shared = set(self.tokens[members[0]])
        for m in members[1:]:
            shared &= set(self.tokens[m])
        pool = shared or set(self.tokens[members[0]])
        ranked = sorted(pool, key=lambda t: (-self.idf.get(t, 0.0), t))[:max_words]
        forms = surface_forms(self.claims[m].text for m in members)
        first = self.tokens[members[0]]
        ranked.sort(key=first.index)
        return " ".join(forms.get(t, t) for t in ranked)


def _primary_unit(claims: list[Claim]) -> str:
    shared = set.intersection(*({q.unit for q in c.quantities} for c in claims))
    order = [q.unit for q in claims[0].quantities]
    candidates = [u for u in order if u in shared] or order
    return candidates[0]


def _positions(claims: list[Claim], unit: str, tolerance: float) -> list[Position]:
    values = [[q for q in c.quantities if q.unit == unit] for c in claims]
    parent = list(range(len(claims)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in combinations(range(len(claims)), 2):
        if any(a.matches(b, tolerance) for a in values[i] for b in values[j]):
            parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(claims)):
        groups.setdefault(find(i), []).append(i)
    positions = []
    for members in groups.values():
        # The group's value: the quantity that matches the most other members (first on ties).
        cands = [q for m in members for q in values[m]]
        best = max(cands, key=lambda q: sum(any(q.matches(o, tolerance) for o in values[m]) for m in members))
        positions.append(
            Position(value=best, sources=[claims[m].source for m in members], claim_ids=[claims[m].id for m in members])
        )
    positions.sort(key=lambda p: (-len(p.sources), p.claim_ids[0]))
    return positions


def cross_reference(
    documents: Mapping[str, str],
    *,
    tolerance: float = 0.05,
    threshold: float = 0.25,
    max_ratio: float = 5.0,
) -> CrossRefResult:
    """Cross-reference the claims in ``documents`` (source id, e.g. URL -> summary or full text)."""
    claims: list[Claim] = []
    for n, (source, text) in enumerate(documents.items()):
        claims.extend(extract_claims(source, text, prefix=f"s{n}.c"))
    linker = _Linker(claims, threshold, max_ratio)
    clusters: list[ClaimCluster] = []
    for members in linker.cluster():
        group = [claims[m] for m in members]
        unit = _primary_unit(group)
        positions = _positions(group, unit, tolerance)
        sources = list(dict.fromkeys(c.source for c in group))
        status: Status = (
            "single_source" if len(sources) < 2 else "corroborated" if len(positions) == 1 else "conflicting"
        )
        sims = [linker.sim(a, b) for a, b in combinations(members, 2)]
        clusters.append(
            ClaimCluster(
                id="",
                status=status,
                subject=linker.subject(members),
                unit=unit,
                similarity=round(min(sims, default=1.0), 6),
                sources=sources,
                claims=group,
                positions=positions,
            )
        )
    rank = {"conflicting": 0, "corroborated": 1, "single_source": 2}
    order = {c.id: i for i, c in enumerate(claims)}
    clusters.sort(key=lambda c: (rank[c.status], -len(c.sources), order[c.claims[0].id]))
    clusters = [c.model_copy(update={"id": f"k{i + 1}"}) for i, c in enumerate(clusters)]
    return CrossRefResult(
        clusters=clusters,
        source_count=len(documents),
        claim_count=len(claims),
        tolerance=tolerance,
        threshold=threshold,
    )
