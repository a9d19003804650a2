"""Report drafting and the whole offline pipeline on the shipped corpus."""

from __future__ import annotations

import json
import re

import pytest

from research_agent.crossref import cross_reference
from research_agent.fetcher import CorpusFetcher, FetchError, Page
from research_agent.llm import Completion, OfflineLLM
from research_agent.pipeline import PipelineResult, run_pipeline
from research_agent.prompts import parse_draft_prompt
from research_agent.report import Report, draft_payload, draft_report, number_sources
from research_agent.research import SourceSummary, summarize_source

SAMPLE_QUESTION = (
    "What is the global installed capacity of grid-scale battery storage, how much do battery packs cost, "
    "and how efficient are batteries in practice?"
)


@pytest.fixture(scope="module")
def result() -> PipelineResult:
    return run_pipeline(SAMPLE_QUESTION, fetcher=CorpusFetcher(), llm=OfflineLLM(), k=8)


def test_pipeline_report_has_sections_citations_and_disagreements(result: PipelineResult) -> None:
    md = result.report.markdown
    assert md.startswith("# Research briefing: " + SAMPLE_QUESTION)
    positions = [md.index(h) for h in ("## Summary", "## Key findings", "## Points of disagreement", "## Sources")]
    assert positions == sorted(positions)
    assert result.report.unknown_citations == []
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", md)}
    assert cited and cited <= {c.n for c in result.report.citations}
    assert len(result.report.citations) == len(result.summaries) == 8
    disagreements = md.split("## Points of disagreement")[1].split("## Sources")[0]
    for figure in ("170 GW", "140 GW", "$125/kWh", "$160/kWh", "85%", "80%"):
        assert figure in disagreements
    for c in result.report.citations:
        assert f"{c.n}. [{c.title}]({c.url})" in md


def test_pipeline_summaries_are_extractive_and_costed(result: PipelineResult) -> None:
    fetcher = CorpusFetcher()
    for s in result.summaries:
        text = fetcher.fetch(s.url).text
        assert s.summary and s.cost_usd > 0 and s.input_tokens > s.output_tokens > 0
        first_sentence = s.summary.split(". ")[0]
        assert first_sentence in text
    assert result.total_cost_usd > 0
    assert result.report.cost_usd > 0


def test_pipeline_is_deterministic_and_json_serialisable(result: PipelineResult) -> None:
    again = run_pipeline(SAMPLE_QUESTION, fetcher=CorpusFetcher(), llm=OfflineLLM(), k=8)
    assert again.to_dict() == result.to_dict()
    assert PipelineResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_pipeline_can_cross_reference_summaries_and_skips_failed_fetches() -> None:
    class Flaky(CorpusFetcher):
        def fetch(self, url: str) -> Page:
            if "market-analyst" in url:
                raise FetchError(url, "boom", retryable=True)
            return super().fetch(url)

    out = run_pipeline(SAMPLE_QUESTION, fetcher=Flaky(), llm=OfflineLLM(), k=8, crossref_on="summaries")
    assert out.failed_urls == ["https://market-analyst.example/outlook/storage-outlook-2030"]
    assert len(out.summaries) == 7
    assert out.crossref.source_count == 7


class _ScriptedLLM:
    """Returns a fixed body; records the prompt it was given."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.prompts: list[str] = []

    def complete(self, *, system: str, prompt: str, max_tokens: int, purpose: str) -> Completion:
        self.prompts.append(prompt)
        return Completion(text=self.text, input_tokens=100, output_tokens=20, model="scripted", cost_usd=0.01)


def _summaries() -> list[SourceSummary]:
    fetcher = CorpusFetcher()
    urls = [
        "https://energy-review.example/2025/02/grid-batteries-record-year",
        "https://market-analyst.example/outlook/storage-outlook-2030",
    ]
    llm = OfflineLLM()
    return [
        summarize_source(
            llm, question="global capacity", url=u, title=fetcher.fetch(u).title, text=fetcher.fetch(u).text
        )
        for u in urls
    ]


def test_draft_report_flags_unknown_citations_and_passes_structured_input() -> None:
    summaries = _summaries()
    crossref = cross_reference({s.url: CorpusFetcher().fetch(s.url).text for s in summaries})
    llm = _ScriptedLLM("## Summary\n\nCapacity grew [1][2], says a ghost source [7].\n\n## Key findings\n\n- x [2]")
    report = draft_report(llm, "How big is the global fleet?", summaries, crossref)
    assert report.unknown_citations == [7]
    assert report.model == "scripted" and report.cost_usd == 0.01
    payload = parse_draft_prompt(llm.prompts[0])
    assert payload["question"] == "How big is the global fleet?"
    assert [s["n"] for s in payload["sources"]] == [1, 2]
    conflict = payload["findings"]["conflicting"][0]
    assert {p["value"] for p in conflict["positions"]} == {"170 GW", "140 GW"}
    assert Report.from_dict(report.to_dict()) == report


def test_offline_draft_without_conflicts_says_so() -> None:
    summaries = _summaries()[:1]
    crossref = cross_reference({s.url: s.summary for s in summaries})
    report = draft_report(OfflineLLM(), "What happened in 2024?", summaries, crossref)
    assert "did not disagree" in report.markdown
    assert "## Key findings" in report.markdown and "[1]" in report.markdown


def test_number_sources_appends_sources_only_seen_by_the_cross_reference() -> None:
    summaries = _summaries()[:1]
    crossref = cross_reference(
        {
            summaries[0].url: "Prices were $125 per kWh in 2024.",
            "https://x.example/": "Prices were $160 per kWh in 2024.",
        }
    )
    citations = number_sources(summaries, crossref)
    assert [(c.n, c.url) for c in citations] == [(1, summaries[0].url), (2, "https://x.example/")]
    payload = draft_payload("q", summaries, crossref, citations)
    assert payload["counts"] == crossref.counts()
