"""Domain code of the example research agent: plan -> fetch -> summarize -> cross-reference -> report.

Every stage is a plain, deterministic function (given the same inputs and the offline LLM), and every
result has ``to_dict()``/``from_dict()`` so the durable workflow can checkpoint it as JSON.
(The summarizer function lives at ``research_agent.summarize.summarize``; it is not re-exported
here because its name would shadow the submodule.)
"""

from research_agent.catalog import CorpusEntry, CorpusIndex, load_index
from research_agent.claims import Claim, extract_claims
from research_agent.crossref import ClaimCluster, CrossRefResult, Position, cross_reference
from research_agent.fetcher import CorpusFetcher, Fetcher, FetchError, HttpFetcher, Page
from research_agent.html_text import HtmlDocument, extract_document, html_to_text
from research_agent.llm import LLM, BedrockLLM, Completion, LLMError, OfflineLLM, make_llm
from research_agent.planner import Bm25Planner, RankedSource, plan_sources
from research_agent.report import Citation, Report, draft_report
from research_agent.research import SourceSummary, crossref_inputs, summarize_page, summarize_source

__all__ = [
    "LLM",
    "BedrockLLM",
    "Bm25Planner",
    "Citation",
    "Claim",
    "ClaimCluster",
    "Completion",
    "CorpusEntry",
    "CorpusFetcher",
    "CorpusIndex",
    "CrossRefResult",
    "FetchError",
    "Fetcher",
    "HtmlDocument",
    "HttpFetcher",
    "LLMError",
    "OfflineLLM",
    "Page",
    "Position",
    "RankedSource",
    "Report",
    "SourceSummary",
    "cross_reference",
    "crossref_inputs",
    "draft_report",
    "extract_claims",
    "extract_document",
    "html_to_text",
    "load_index",
    "make_llm",
    "plan_sources",
    "summarize_page",
    "summarize_source",
]
