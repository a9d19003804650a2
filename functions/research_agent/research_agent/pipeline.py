"""The whole research pipeline in one process, without durability: a reference for the durable
workflow (which runs each stage as a checkpointed step) and a smoke test of the domain code."""

from __future__ import annotations

from typing import Literal

from research_agent.base import Record
from research_agent.crossref import CrossRefResult, cross_reference
from research_agent.fetcher import Fetcher, FetchError, Page
from research_agent.llm import LLM
from research_agent.planner import Bm25Planner, RankedSource
from research_agent.report import Report, draft_report
from research_agent.research import SourceSummary, crossref_inputs, summarize_page


class PipelineResult(Record):
    question: str
    plan: list[RankedSource]
    failed_urls: list[str]
    summaries: list[SourceSummary]
    crossref: CrossRefResult
    report: Report

    @property
    def total_cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.summaries) + self.report.cost_usd, 8)


def run_pipeline(
    question: str,
    *,
    fetcher: Fetcher,
    llm: LLM,
    k: int = 8,
    max_sentences: int = 5,
    planner: Bm25Planner | None = None,
    crossref_on: Literal["pages", "summaries"] = "pages",
) -> PipelineResult:
    """plan -> fetch -> summarize -> cross-reference -> draft (approval is the caller's business).

    Claims are cross-referenced over the full page texts by default: summaries are short, so a
    figure one summary kept is often missing from the summary of a source that also states it.
    """
    plan = (planner or Bm25Planner()).plan(question, k)
    pages: list[Page] = []
    summaries: list[SourceSummary] = []
    failed: list[str] = []
    for source in plan:
        try:
            page = fetcher.fetch(source.url)
        except FetchError:
            failed.append(source.url)
            continue
        pages.append(page)
        summaries.append(summarize_page(llm, page, question, max_sentences=max_sentences))
    documents = {p.url: p.text for p in pages} if crossref_on == "pages" else crossref_inputs(summaries)
    crossref = cross_reference(documents)
    report = draft_report(llm, question, summaries, crossref)
    return PipelineResult(
        question=question, plan=plan, failed_urls=failed, summaries=summaries, crossref=crossref, report=report
    )
