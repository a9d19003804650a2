"""The offline model's "writing": extractive summaries and a report body composed from structured input.

No canned prose: the summary is personalised TextRank over the document, and the report's overview
is TextRank over all source summaries, focused on the research question, with citations attached to
each extracted sentence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from research_agent.summarize import summarize
from research_agent.text_utils import terms

MAX_CORROBORATED = 6
MAX_SINGLE_SOURCE = 4


# With a question to focus on, a lower damping gives the question-biased teleport more weight
# (as in biased LexRank); figures get a small bonus because the report is built on them.
FOCUSED_DAMPING = 0.7
NUMERIC_WEIGHT = 0.5


def compose_summary(document: str, *, question: str, max_sentences: int) -> str:
    sentences = summarize(
        document,
        max(1, max_sentences),
        focus=question or None,
        numeric_weight=NUMERIC_WEIGHT,
        damping=FOCUSED_DAMPING if question else 0.85,
    )
    if sentences:
        return " ".join(sentences)
    return " ".join(document.split()[:60])  # no prose sentences at all: the opening words


def _cites(numbers: Sequence[Any]) -> str:
    return "".join(f"[{int(n)}]" for n in sorted({int(n) for n in numbers}))


def _items(findings: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    raw = findings.get(key, [])
    return [x for x in raw if isinstance(x, Mapping)] if isinstance(raw, list) else []


def _relevance(statement: str, question_terms: set[str]) -> int:
    return len(question_terms.intersection(terms(statement)))


def _overview(question: str, sources: list[Mapping[str, Any]], max_sentences: int = 2) -> list[str]:
    """The most central, question-relevant sentences across all summaries, each with its citation."""
    owner: dict[str, int] = {}
    for src in sources:
        for sentence in summarize(str(src.get("summary", "")), 50):
            owner.setdefault(sentence, int(src.get("n", 0)))
    corpus = "\n".join(owner)
    picked = summarize(corpus, max_sentences, focus=question or None, redundancy=0.5)
    return [f"{s.rstrip('.')} {_cites([owner[s]])}." if s in owner else s for s in picked]


def compose_draft(payload: Mapping[str, Any]) -> str:
    """Markdown with a ``## Summary`` paragraph and a ``## Key findings`` list."""
    question = str(payload.get("question", "")).strip()
    raw_sources = payload.get("sources", [])
    sources = [s for s in raw_sources if isinstance(s, Mapping)] if isinstance(raw_sources, list) else []
    raw_findings = payload.get("findings", {})
    findings: Mapping[str, Any] = raw_findings if isinstance(raw_findings, Mapping) else {}
    corroborated = _items(findings, "corroborated")
    conflicting = _items(findings, "conflicting")
    single = _items(findings, "single_source")
    qterms = set(terms(question))

    counts = payload.get("counts", {})
    counts = counts if isinstance(counts, Mapping) else {}
    n_corr = int(counts.get("corroborated", len(corroborated)))
    n_conf = int(counts.get("conflicting", len(conflicting)))
    n_single = int(counts.get("single_source", len(single)))
    opening = f"This briefing draws on {len(sources)} source{'s' if len(sources) != 1 else ''}"
    if question:
        opening += f" to answer the question \u201c{question}\u201d"
    summary = [opening + "."]
    summary.extend(_overview(question, sources))
    summary.append(
        f"Across the sources, {n_corr} figure{'s are' if n_corr != 1 else ' is'} corroborated by at least "
        f"two independent outlets, {n_conf} {'are' if n_conf != 1 else 'is'} disputed, and {n_single} "
        f"rest{'s' if n_single == 1 else ''} on a single source."
    )

    bullets: list[str] = []
    for item in corroborated[:MAX_CORROBORATED]:
        bullets.append(f"- {str(item.get('statement', '')).strip()} {_cites(item.get('citations', []))}")
    ranked_single = sorted(enumerate(single), key=lambda p: (-_relevance(str(p[1].get("statement", "")), qterms), p[0]))
    for _, item in ranked_single[:MAX_SINGLE_SOURCE]:
        statement = str(item.get("statement", "")).strip()
        bullets.append(f"- {statement} (single source) {_cites(item.get('citations', []))}")
    if conflicting:
        subjects = ", ".join(str(c.get("subject", "")) for c in conflicting[:3])
        bullets.append(
            f"- Sources disagree on {len(conflicting)} figure{'s' if len(conflicting) != 1 else ''} "
            f"({subjects}); see the points of disagreement below."
        )
    if not bullets:
        for src in sources[:MAX_CORROBORATED]:
            first = summarize(str(src.get("summary", "")), 1, focus=question or None)
            if first:
                bullets.append(f"- {first[0]} {_cites([src.get('n', 0)])}")
    return "## Summary\n\n" + " ".join(summary) + "\n\n## Key findings\n\n" + "\n".join(bullets) + "\n"
