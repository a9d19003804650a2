"""BM25 planning over the corpus index."""

from __future__ import annotations

import itertools

from research_agent.catalog import load_index
from research_agent.planner import Bm25Planner, document_terms, plan_sources

SAMPLE_QUESTION = (
    "What is the global installed capacity of grid-scale battery storage, how much do battery packs cost, "
    "and how efficient are batteries in practice?"
)


def _hosts(question: str, k: int = 6) -> list[str]:
    return [r.url.split("/")[2] for r in plan_sources(question, k)]


def test_planner_returns_relevant_urls_for_focused_questions() -> None:
    assert _hosts("Are sodium-ion batteries cheaper than LFP?")[0] == "materials-frontier.example"
    assert _hosts("battery fire safety incidents")[0] == "safety-bulletin.example"
    assert _hosts("How fast is Texas ERCOT adding batteries compared with California?")[:2] == [
        "powermarkets-daily.example",
        "utility-insider.example",
    ]
    assert _hosts("recycling retired grid batteries and lithium recovery")[0] == "recycling-report.example"


def test_planner_covers_the_sample_question() -> None:
    hosts = _hosts(SAMPLE_QUESTION, 8)
    assert len(hosts) == 8
    for expected in (
        "energy-review.example",
        "market-analyst.example",
        "cleantech-ledger.example",
        "storage-science.example",
        "ratepayer-advocate.example",
    ):
        assert expected in hosts


def test_ranking_is_deterministic_and_well_formed() -> None:
    first = plan_sources(SAMPLE_QUESTION, 5)
    assert [r.to_dict() for r in first] == [r.to_dict() for r in plan_sources(SAMPLE_QUESTION, 5)]
    assert [r.rank for r in first] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in itertools.pairwise(first))
    assert all(r.matched_terms for r in first)
    assert first[0].from_dict(first[0].to_dict()) == first[0]


def test_irrelevant_or_empty_questions_plan_little_or_nothing() -> None:
    planner = Bm25Planner()
    assert planner.plan("") == []
    assert planner.plan("zebra quantum croissant") == []
    assert planner.plan("battery", k=0) == []
    # A narrow question drops sources that only share one common word.
    assert len(planner.plan("battery fire safety incidents", k=10)) <= 3
    assert len(planner.plan("battery fire safety incidents", k=10, min_relative=0.0)) > 3


def test_document_terms_weight_title_and_tags() -> None:
    entry = load_index().entries[0]
    bag = document_terms(entry)
    assert bag.count("grid") >= 2  # in the title, so counted twice
