"""TextRank summarization."""

from __future__ import annotations

from research_agent.fetcher import CorpusFetcher
from research_agent.sentences import split_sentences
from research_agent.summarize import pagerank, rank_sentences, summarize

TEXT = """Grid batteries

Grid batteries store electricity from wind and solar farms for later use.
Battery storage on the grid grew quickly because battery prices fell.
Falling battery prices made grid storage cheaper than gas peaking plants.
The weather in the city was pleasant on Tuesday afternoon.
Grid operators now dispatch battery storage every evening when solar output falls.
Cats sleep for most of the day in warm places."""


def test_pagerank_uniform_on_symmetric_graph_and_central_node_wins() -> None:
    ring = [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert all(abs(x - 1 / 3) < 1e-9 for x in pagerank(ring))
    star = [[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    ranks = pagerank(star)
    assert abs(sum(ranks) - 1.0) < 1e-9
    assert ranks[0] == max(ranks)
    assert pagerank([]) == []
    # A dangling node (no edges) still gets teleport mass.
    assert all(x > 0 for x in pagerank([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_summary_picks_central_sentences_in_document_order() -> None:
    summary = summarize(TEXT, 3)
    assert len(summary) == 3
    sentences = split_sentences(TEXT)
    assert [sentences.index(s) for s in summary] == sorted(sentences.index(s) for s in summary)
    assert not any("Cats" in s or "weather" in s for s in summary)
    assert "Grid batteries" not in summary  # headings are not sentences


def test_summary_is_deterministic_and_bounded() -> None:
    assert summarize(TEXT, 3) == summarize(TEXT, 3)
    assert summarize(TEXT, 0) == []
    assert len(summarize(TEXT, 50)) <= 6
    assert summarize("") == []
    assert summarize("Too short.") == []


def test_focus_biases_selection_towards_the_question() -> None:
    plain = summarize(TEXT, 1)
    focused = summarize(TEXT, 1, focus="weather in the city on Tuesday", focus_weight=5.0, damping=0.5)
    assert plain != focused
    assert "weather" in focused[0]


def test_numeric_weight_prefers_sentences_with_figures() -> None:
    text = (
        "Storage projects are spreading across many regions of the world. "
        "Storage projects in the region reached 12 GW of capacity last year. "
        "Storage projects are spreading across many markets and regions today."
    )
    assert "12 GW" in summarize(text, 1, numeric_weight=3.0, damping=0.5)[0]
    assert "12 GW" not in summarize(text, 1)[0]


def test_redundancy_filter_skips_near_duplicates() -> None:
    text = (
        "Battery prices fell sharply in the last year across markets. "
        "Battery prices fell sharply in the last year across all markets. "
        "Grid operators now rely on storage during the evening peak hours."
    )
    summary = summarize(text, 2)
    assert len(summary) == 2
    assert any("Grid operators" in s for s in summary)


def test_rank_sentences_scores_form_a_distribution_on_real_pages() -> None:
    fetcher = CorpusFetcher()
    for url in fetcher.index.urls[:4]:
        scored = rank_sentences(fetcher.fetch(url).text)
        assert len(scored) >= 8
        assert abs(sum(s.score for s in scored) - 1.0) < 1e-6
        assert [s.index for s in scored] == list(range(len(scored)))
