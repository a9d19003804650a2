"""Per-source summaries through the LLM interface (the pipeline's "summarize each page" step)."""

from __future__ import annotations

from collections.abc import Iterable

from research_agent.base import Record
from research_agent.fetcher import Page
from research_agent.llm import LLM
from research_agent.prompts import SUMMARIZE_SYSTEM, build_summarize_prompt

MAX_DOCUMENT_CHARS = 24_000  # ~6k tokens: keeps one summarize call well inside any context window


class SourceSummary(Record):
    url: str
    title: str
    summary: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


def summarize_source(
    llm: LLM,
    *,
    question: str,
    url: str,
    title: str,
    text: str,
    max_sentences: int = 5,
    max_tokens: int = 400,
) -> SourceSummary:
    """Summarize one source's text with ``llm`` (purpose ``"summarize"``), focused on ``question``."""
    prompt = build_summarize_prompt(
        question=question, title=title, url=url, text=text[:MAX_DOCUMENT_CHARS], max_sentences=max_sentences
    )
    completion = llm.complete(system=SUMMARIZE_SYSTEM, prompt=prompt, max_tokens=max_tokens, purpose="summarize")
    return SourceSummary(
        url=url,
        title=title,
        summary=completion.text.strip(),
        model=completion.model,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=completion.cost_usd,
    )


def summarize_page(llm: LLM, page: Page, question: str, *, max_sentences: int = 5) -> SourceSummary:
    return summarize_source(
        llm, question=question, url=page.url, title=page.title, text=page.text, max_sentences=max_sentences
    )


def crossref_inputs(summaries: Iterable[SourceSummary]) -> dict[str, str]:
    """``{url: summary}`` in order, the input :func:`research_agent.crossref.cross_reference` expects."""
    return {s.url: s.summary for s in summaries}
