"""The research agent as a durable stepchain workflow.

plan -> fetch (ctx.each: one checkpoint per page, continues across invocations) -> summarize
(map, one LLM call per page, at most 4 at a time) -> crossref -> approval (human, durable wait)
-> draft. Every LLM call records its tokens and cost on the step.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from research_agent.crossref import CrossRefResult, cross_reference
from research_agent.fetcher import CorpusFetcher, Fetcher, FetchError, HttpFetcher, Page
from research_agent.llm import LLM, Completion, OfflineLLM, make_llm
from research_agent.planner import Bm25Planner
from research_agent.report import draft_report
from research_agent.research import SourceSummary, summarize_page
from stepchain import RetryableError, RetryPolicy, StepContext, TerminalError, Workflow


class ResearchRequest(BaseModel):
    question: str = Field(min_length=8, max_length=500)
    max_sources: int = Field(default=8, ge=1, le=20)


def corpus_fetcher_from_env(latency: str) -> CorpusFetcher:
    """``RESEARCH_FETCH_LATENCY_MS``: ms for every page, or JSON ``{"<url>": ms, "*": default ms}`` (e2e tests)."""
    latency = latency.strip() or "0"
    if not latency.startswith("{"):
        return CorpusFetcher(latency_ms=int(latency))
    by_url = {str(url): int(ms) for url, ms in json.loads(latency).items()}
    default = by_url.pop("*", 0)
    return CorpusFetcher(latency_ms=by_url, default_latency_ms=default)


@dataclass
class Services:
    """What the steps talk to. Tests and the demo replace these; Lambda builds them from env."""

    fetcher: Fetcher | None = None
    llm: LLM | None = None

    def get_fetcher(self) -> Fetcher:
        if self.fetcher is None:
            if os.environ.get("RESEARCH_FETCHER", "corpus") == "http":
                self.fetcher = HttpFetcher()
            else:
                self.fetcher = corpus_fetcher_from_env(os.environ.get("RESEARCH_FETCH_LATENCY_MS", "0"))
        return self.fetcher

    def get_llm(self) -> LLM:
        if self.llm is None:
            llm = make_llm()
            if isinstance(llm, OfflineLLM) and os.environ.get("RESEARCH_LLM_PRICED_AS"):
                llm = OfflineLLM(priced_as=os.environ["RESEARCH_LLM_PRICED_AS"])
            latency_ms = int(os.environ.get("RESEARCH_LLM_LATENCY_MS", "0"))
            self.llm = SlowLLM(llm, latency_ms) if latency_ms > 0 else llm
        return self.llm


@dataclass
class SlowLLM:
    """Adds a hosted model's latency to another LLM (the offline one answers in milliseconds)."""

    inner: LLM
    latency_ms: int

    def complete(self, *, system: str, prompt: str, max_tokens: int, purpose: str) -> Completion:
        time.sleep(self.latency_ms / 1000)
        return self.inner.complete(system=system, prompt=prompt, max_tokens=max_tokens, purpose=purpose)


services = Services()

#: Extra IAM of the steps that call the LLM (`stepchain template` adds it to their functions): with
#: LlmProvider=bedrock, InvokeModel on the configured model only. The LlmProvider and BedrockModelId
#: parameters and the UseBedrock condition are in template.overrides.yaml.
BEDROCK_POLICY = {
    "Fn::If": [
        "UseBedrock",
        {
            "Statement": [
                {
                    "Sid": "InvokeConfiguredModel",
                    "Effect": "Allow",
                    "Action": "bedrock:InvokeModel",
                    "Resource": {
                        "Fn::Sub": "arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/${BedrockModelId}"
                    },
                }
            ]
        },
        {"Ref": "AWS::NoValue"},
    ]
}

#: lifecycle events on the run's progress stream (GET /runs/{id}/stream): the live view follows them
wf = Workflow("research-agent", stream_lifecycle=True)


@wf.step(timeout_s=30, memory_mb=256, retry=RetryPolicy(max_attempts=3, backoff_s=1.0))
def plan(ctx: StepContext, request: Any) -> dict[str, Any]:
    """Turn the question into a ranked list of sources."""
    try:
        req = ResearchRequest.model_validate(request)
    except ValidationError as exc:
        raise TerminalError(f"bad research request: {exc.errors()[0]['msg']}") from exc
    sources = Bm25Planner().plan(req.question, req.max_sources)
    if not sources:
        raise TerminalError(f"no source matches the question {req.question!r}")
    ctx.logger.info("planned", extra={"sources": len(sources)})
    return {"question": req.question, "sources": [{"url": s.url, "title": s.title} for s in sources]}


@wf.step(timeout_s=60, retry=RetryPolicy(max_attempts=4, backoff_s=2.0))
def fetch(ctx: StepContext, planned: dict[str, Any]) -> list[dict[str, Any]]:
    """Fetch every source, one checkpoint per page: a timeout mid-way resumes at the next page."""
    fetcher = services.get_fetcher()
    question = planned["question"]

    def fetch_one(source: dict[str, Any]) -> dict[str, Any]:
        try:
            page = fetcher.fetch(source["url"])
        except FetchError as exc:
            if exc.retryable:
                raise RetryableError(str(exc)) from exc
            return {"url": source["url"], "error": str(exc)}
        ctx.emit("page", {"url": source["url"], "chars": len(page.text)})  # on the stream as it is fetched
        return {**page.to_dict(), "question": question}

    pages = ctx.each(planned["sources"], fetch_one, name="pages")
    return [p for p in pages if "error" not in p]


@wf.map(
    max_concurrency=4,
    timeout_s=120,
    memory_mb=1024,
    policies=[BEDROCK_POLICY],
    retry=RetryPolicy(max_attempts=3, backoff_s=2.0),
)
def summarize(ctx: StepContext, page: dict[str, Any]) -> dict[str, Any]:
    """One LLM call per page; ``ctx.once`` makes sure a crash after the call does not pay for it twice."""
    llm = services.get_llm()
    summary: dict[str, Any] = ctx.once(
        "llm-summary", lambda: summarize_page(llm, Page.from_dict(page), page["question"]).to_dict()
    )
    ctx.record_cost(
        usd=summary["cost_usd"], input_tokens=summary["input_tokens"], output_tokens=summary["output_tokens"]
    )
    return summary


@wf.step(timeout_s=120, policies=[BEDROCK_POLICY])
def crossref(ctx: StepContext, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Cross-check the figures every source states (over full page texts: summaries drop figures)."""
    pages = ctx.output_of("fetch")
    result = cross_reference({p["url"]: p["text"] for p in pages})
    counts = result.counts()
    ctx.logger.info("cross-referenced", extra=counts)
    return {
        "question": pages[0]["question"] if pages else "",
        "summaries": summaries,
        "crossref": result.to_dict(),
        "counts": counts,
    }


wf.wait_for_event("approval", timeout_s=2 * 86400)


@wf.step(timeout_s=300, memory_mb=1024, policies=[BEDROCK_POLICY], retry=RetryPolicy(max_attempts=3, backoff_s=2.0))
def draft(ctx: StepContext, approval: Any) -> dict[str, Any]:
    """Write the report once a reviewer approved the cross-referenced findings."""
    approval = approval if isinstance(approval, dict) else {}
    if approval.get("approved") is False:
        raise TerminalError(f"the reviewer rejected the findings: {approval.get('comment', 'no comment')}")
    data = ctx.output_of("crossref")
    llm = services.get_llm()
    report = ctx.once(
        "llm-draft",
        lambda: draft_report(
            llm,
            data["question"],
            [SourceSummary.from_dict(s) for s in data["summaries"]],
            CrossRefResult.from_dict(data["crossref"]),
        ).to_dict(),
    )
    ctx.record_cost(usd=report["cost_usd"], input_tokens=report["input_tokens"], output_tokens=report["output_tokens"])
    return {
        "question": report["question"],
        "markdown": report["markdown"],
        "citations": report["citations"],
        "reviewer": approval.get("reviewer"),
        "counts": data["counts"],
    }
