"""Drafting the final Markdown report: LLM-written summary and key findings, then deterministic
points of disagreement (exact figures from the cross-reference) and the numbered source list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from research_agent.base import Record
from research_agent.crossref import ClaimCluster, CrossRefResult
from research_agent.llm import LLM
from research_agent.prompts import DRAFT_SYSTEM, build_draft_prompt
from research_agent.research import SourceSummary
from research_agent.text_utils import terms

MAX_SINGLE_SOURCE_IN_PROMPT = 10
_CITATION_RE = re.compile(r"\[(\d{1,3})\]")


class Citation(Record):
    n: int
    url: str
    title: str


class Report(Record):
    question: str
    markdown: str
    citations: list[Citation]
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unknown_citations: list[int]  # [n] markers in the LLM's text that match no source


def number_sources(summaries: Sequence[SourceSummary], crossref: CrossRefResult | None = None) -> list[Citation]:
    """Citation numbers: summaries in order, then any other source the cross-reference saw."""
    citations = [Citation(n=i + 1, url=s.url, title=s.title) for i, s in enumerate(summaries)]
    seen = {c.url for c in citations}
    for cluster in crossref.clusters if crossref else []:
        for url in cluster.sources:
            if url not in seen:
                seen.add(url)
                citations.append(Citation(n=len(citations) + 1, url=url, title=url))
    return citations


def _numbers(urls: Sequence[str], index: dict[str, int]) -> list[int]:
    return sorted({index[u] for u in urls if u in index})


def draft_payload(
    question: str, summaries: Sequence[SourceSummary], crossref: CrossRefResult, citations: Sequence[Citation]
) -> dict[str, Any]:
    """The structured research input handed to the LLM (JSON-safe)."""
    index = {c.url: c.n for c in citations}
    qterms = set(terms(question))

    def relevance(cluster: ClaimCluster) -> int:
        return len(qterms.intersection(terms(cluster.claims[0].text)))

    singles = sorted(enumerate(crossref.single_source), key=lambda p: (-relevance(p[1]), p[0]))
    return {
        "question": question,
        "counts": crossref.counts(),
        "sources": [{"n": index[s.url], "title": s.title, "url": s.url, "summary": s.summary} for s in summaries],
        "findings": {
            "corroborated": [
                {
                    "statement": c.claims[0].text,
                    "value": c.positions[0].value.display(),
                    "citations": _numbers(c.sources, index),
                }
                for c in crossref.corroborated
            ],
            "conflicting": [
                {
                    "subject": c.subject,
                    "positions": [
                        {
                            "value": p.value.display(),
                            "citations": _numbers(p.sources, index),
                            "statement": next(x.text for x in c.claims if x.id == p.claim_ids[0]),
                        }
                        for p in c.positions
                    ],
                }
                for c in crossref.conflicting
            ],
            "single_source": [
                {
                    "statement": c.claims[0].text,
                    "value": c.positions[0].value.display(),
                    "citations": _numbers(c.sources, index),
                }
                for _, c in singles[:MAX_SINGLE_SOURCE_IN_PROMPT]
            ],
        },
    }


def render_disagreements(crossref: CrossRefResult, citations: Sequence[Citation]) -> str:
    index = {c.url: c.n for c in citations}
    lines = ["## Points of disagreement", ""]
    if not crossref.conflicting:
        lines.append("The sources did not disagree on any figure that could be cross-checked.")
    for cluster in crossref.conflicting:
        views = "; ".join(
            f"{p.value.display()} according to {''.join(f'[{n}]' for n in _numbers(p.sources, index))}"
            for p in cluster.positions
        )
        lines.append(f"- **{cluster.subject}**: {views}.")
        for claim in cluster.claims:
            lines.append(f"  - [{index.get(claim.source, '?')}] \u201c{claim.text}\u201d")
    return "\n".join(lines) + "\n"


def render_sources(citations: Sequence[Citation]) -> str:
    return "## Sources\n\n" + "\n".join(f"{c.n}. [{c.title}]({c.url})" for c in citations) + "\n"


def draft_report(
    llm: LLM,
    question: str,
    summaries: Sequence[SourceSummary],
    crossref: CrossRefResult,
    *,
    max_tokens: int = 1500,
) -> Report:
    """One LLM call (purpose ``"draft"``) for the prose; the rest is rendered from the data."""
    citations = number_sources(summaries, crossref)
    prompt = build_draft_prompt(draft_payload(question, summaries, crossref, citations))
    completion = llm.complete(system=DRAFT_SYSTEM, prompt=prompt, max_tokens=max_tokens, purpose="draft")
    body = completion.text.strip()
    valid = {c.n for c in citations}
    unknown = sorted({int(n) for n in _CITATION_RE.findall(body)} - valid)
    counts = crossref.counts()
    header = (
        f"# Research briefing: {question}\n\n"
        f"_{len(citations)} sources; {counts['corroborated']} corroborated, {counts['conflicting']} disputed "
        f"and {counts['single_source']} single-source figures; drafted by {completion.model}._\n"
    )
    markdown = "\n".join([header, body + "\n", render_disagreements(crossref, citations), render_sources(citations)])
    return Report(
        question=question,
        markdown=markdown,
        citations=citations,
        model=completion.model,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=completion.cost_usd,
        unknown_citations=unknown,
    )
