"""Quantities, claims and cross-referencing (synthetic inputs and the shipped corpus)."""

from __future__ import annotations

import pytest

from research_agent.claims import extract_claims
from research_agent.crossref import ClaimCluster, CrossRefResult, cross_reference
from research_agent.fetcher import CorpusFetcher
from research_agent.quantities import Quantity, find_quantities, find_years


def _q(sentence: str) -> list[tuple[float, float, str]]:
    return [(q.low, q.high, q.unit) for q in find_quantities(sentence)]


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("fell to $125 per kWh in 2024", [(125, 125, "USD/kWh")]),
        ("dropped to $125/kWh, from $1,000/kWh", [(125, 125, "USD/kWh"), (1000, 1000, "USD/kWh")]),
        ("roughly 13,000 MW of batteries", [(13, 13, "GW")]),
        ("about 12.3 GW and 400 MWh", [(12.3, 12.3, "GW"), (0.4, 0.4, "GWh")]),
        ("85 percent, 88% and 10 to 20 per cent", [(85, 85, "%"), (88, 88, "%"), (10, 20, "%")]),
        ("designed for one or two hours, not four hours", [(1, 2, "h"), (4, 4, "h")]),
        ("a four-hour system and a 100-hour battery", [(4, 4, "h"), (100, 100, "h")]),
        ("rated for 6,000 full cycles", [(6000, 6000, "cycles")]),
        ("reached about $54 billion", [(54e9, 54e9, "USD")]),
        ("a survey of 90 suppliers", [(90, 90, "supplier")]),
        ("in March 2024 and 2025", []),
    ],
)
def test_find_quantities(sentence: str, expected: list[tuple[float, float, str]]) -> None:
    got = _q(sentence)
    assert len(got) == len(expected)
    for (lo, hi, unit), (elo, ehi, eunit) in zip(got, expected, strict=True):
        assert unit == eunit
        assert lo == pytest.approx(elo) and hi == pytest.approx(ehi)


def test_years_and_quantity_matching() -> None:
    assert find_years("between 2018 and 2023, not 2020s or $2030") == [2018, 2023]
    a = Quantity(value=100, low=100, high=100, unit="GW", text="100 GW")
    assert a.matches(Quantity(value=104, low=104, high=104, unit="GW", text=""), 0.05)
    assert not a.matches(Quantity(value=110, low=110, high=110, unit="GW", text=""), 0.05)
    assert not a.matches(Quantity(value=100, low=100, high=100, unit="GWh", text=""), 0.05)
    assert a.matches(Quantity(value=100, low=90, high=110, unit="GW", text=""), 0.0)
    assert Quantity(value=125, low=125, high=125, unit="USD/kWh", text="").display() == "$125/kWh"
    assert Quantity(value=15, low=10, high=20, unit="%", text="").display() == "10-20%"


def test_extract_claims_keeps_only_prose_sentences_with_quantities() -> None:
    text = "Prices in 2024\n\nPack prices fell to $125 per kWh in 2024. Nothing numeric is said here at all."
    claims = extract_claims("src", text)
    assert [c.text for c in claims] == ["Pack prices fell to $125 per kWh in 2024."]
    assert claims[0].years == [2024]
    assert claims[0].source == "src"


DOCS = {
    "a": "The average pack price for stationary storage fell to $125 per kWh in 2024. "
    "Texas had about 10 GW of batteries online at the end of 2024.",
    "b": "The average pack price for stationary storage dropped to $126/kWh in 2024, a survey found. "
    "Round-trip efficiency of new battery plants is about 85 percent.",
    "c": "Consumer groups say the average pack price for stationary storage was $160 per kWh in 2024. "
    "Round-trip efficiency of battery plants is closer to 80 percent in the field.",
}


def _find(result: CrossRefResult, word: str) -> ClaimCluster:
    return next(c for c in result.clusters if any(word in cl.text for cl in c.claims))


def test_cross_reference_classifies_agreement_conflict_and_single_source() -> None:
    result = cross_reference(DOCS)
    price = _find(result, "pack price")
    assert price.status == "conflicting"
    assert price.unit == "USD/kWh"
    assert [(p.value.display(), p.sources) for p in price.positions] == [
        ("$125/kWh", ["a", "b"]),
        ("$160/kWh", ["c"]),
    ]
    efficiency = _find(result, "efficiency")
    assert efficiency.status == "conflicting"
    assert _find(result, "Texas").status == "single_source"
    assert result.counts() == {"corroborated": 0, "conflicting": 2, "single_source": 1}
    assert result.source_count == 3 and result.claim_count == 6
    assert [c.id for c in result.clusters] == ["k1", "k2", "k3"]


def test_tolerance_turns_a_small_difference_into_agreement() -> None:
    docs = {k: v.split(". ")[0] + "." for k, v in DOCS.items() if k != "c"}
    assert cross_reference(docs).counts()["corroborated"] == 1
    strict = cross_reference(docs, tolerance=0.0)
    assert strict.counts()["conflicting"] == 1


def test_claims_about_different_years_or_magnitudes_are_not_linked() -> None:
    docs = {
        "a": "Global battery capacity reached 170 GW in 2024.",
        "b": "Global battery capacity reached 40 GW in 2021.",
        "c": "Global battery capacity could reach 1,200 GW by 2030, some say.",
    }
    assert cross_reference(docs).counts() == {"corroborated": 0, "conflicting": 0, "single_source": 3}
    no_years = {
        "a": "Flow batteries are designed to discharge for 2 hours.",
        "b": "Flow batteries are designed to discharge for 100 hours.",
    }
    assert cross_reference(no_years).counts()["conflicting"] == 0
    assert cross_reference(no_years, max_ratio=100).counts()["conflicting"] == 1


def test_one_claim_per_source_per_cluster() -> None:
    docs = {
        "a": "Pack prices fell to $125 per kWh in 2024. Pack prices fell to $130 per kWh in 2024 elsewhere.",
        "b": "Pack prices fell to $125 per kWh in 2024.",
    }
    for cluster in cross_reference(docs).clusters:
        assert len(cluster.sources) == len(cluster.claims)


@pytest.fixture(scope="module")
def corpus_result() -> CrossRefResult:
    fetcher = CorpusFetcher()
    return cross_reference({url: fetcher.fetch(url).text for url in fetcher.index.urls})


def _positions(cluster: ClaimCluster) -> set[tuple[str, frozenset[str]]]:
    return {(p.value.display(), frozenset(u.split("/")[2].split(".")[0] for u in p.sources)) for p in cluster.positions}


def test_shipped_corpus_conflicting_numbers_are_detected(corpus_result: CrossRefResult) -> None:
    conflicts = [_positions(c) for c in corpus_result.conflicting]
    assert {
        ("170 GW", frozenset({"energy-review", "asia-power-brief"})),
        ("140 GW", frozenset({"market-analyst"})),
    } in conflicts
    assert {
        ("$125/kWh", frozenset({"energy-review", "cleantech-ledger"})),
        ("$160/kWh", frozenset({"ratepayer-advocate"})),
    } in conflicts
    assert {("10 GW", frozenset({"powermarkets-daily"})), ("8 GW", frozenset({"utility-insider"}))} in conflicts
    assert {
        ("85%", frozenset({"gridwatch-journal", "storage-science", "engineering-notes"})),
        ("80%", frozenset({"ratepayer-advocate"})),
    } in conflicts
    assert len(conflicts) == 4  # and no spurious ones


def test_shipped_corpus_corroborations(corpus_result: CrossRefResult) -> None:
    agreed = {next(iter(_positions(c))) for c in corpus_result.corroborated}
    for expected in [
        ("69 GW", frozenset({"energy-review", "asia-power-brief"})),
        ("12.3 GW", frozenset({"gridwatch-journal", "policy-lens"})),
        ("13 GW", frozenset({"powermarkets-daily", "utility-insider"})),  # 13,000 MW == 13 GW
        ("6,000 cycles", frozenset({"storage-science", "engineering-notes"})),
        ("97%", frozenset({"safety-bulletin", "engineering-notes"})),
        ("30%", frozenset({"policy-lens", "ratepayer-advocate"})),
    ]:
        assert expected in agreed
    assert len(corpus_result.single_source) > 20


def test_cross_reference_is_deterministic_and_serialisable(corpus_result: CrossRefResult) -> None:
    fetcher = CorpusFetcher()
    again = cross_reference({url: fetcher.fetch(url).text for url in fetcher.index.urls})
    assert again.to_dict() == corpus_result.to_dict()
    assert CrossRefResult.from_dict(corpus_result.to_dict()) == corpus_result
