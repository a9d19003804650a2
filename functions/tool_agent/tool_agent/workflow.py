"""The tool agent as a durable stepchain workflow (two workflows: the agent and its delegate).

tool-agent::

    understand -> delegate (child run of tool-lookup: the first fact) -> think <-> act
                                                                         think -> approve (human) -> send -> think
                                                                         think -> END (the answer)

``think`` is an ``async def`` step: it asks the offline model (an async client) for the next move and
routes there with ``goto``: ``act`` runs a tool (``search`` reads documents with ``ctx.each``, one
checkpoint per document; ``calculator`` in a ``ctx.once``) and loops back to ``think``; ``send_email``
is risky, so ``think`` routes to the ``approve`` wait and ``send`` mails only if a human approved
(``ctx.once`` whose ``reconcile`` asks the outbox). The approval wait is inside the loop, so the
approval names the iteration the run waits in (``POST /runs/{id}/events/approval?iteration=N``, N from
the run detail's ``waiting_for``): a retried approval never approves a later iteration's e-mail.
Every pass through the loop is a new iteration
with its own checkpoints (``think~00003``): a crash never re-runs a completed one. A rate-limited
model call raises ``RetryableError(retry_after_s=...)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from stepchain import END, RetryableError, RetryPolicy, Route, StepContext, TerminalError, Workflow, goto
from stepchain.store.records import node_key
from tool_agent.corpus import document, find_quantity, rank
from tool_agent.llm import OfflineToolLLM, RateLimited, UnsupportedQuestion, fact_key, parse_task
from tool_agent.tools import STATS, read_document, run_calculator, send_email, sent_email

MAX_ITERATIONS = 20
#: the Lambda functions ``stepchain template`` deploys: one for the agent's steps, one for the delegate's
AGENT_FUNCTION: dict[str, Any] = {"function": "ToolAgentFunction", "timeout_s": 60}
LOOKUP_FUNCTION: dict[str, Any] = {"function": "ToolLookupFunction", "timeout_s": 20}


class AgentRequest(BaseModel):
    question: str = Field(min_length=8, max_length=500)


@dataclass
class Services:
    """What the steps talk to; tests replace ``llm``. Lambda builds it from the environment."""

    llm: OfflineToolLLM | None = None

    def get_llm(self) -> OfflineToolLLM:
        if self.llm is None:
            limit = os.environ.get("TOOL_AGENT_RATE_LIMIT_ITERATION", "1").strip()
            self.llm = OfflineToolLLM(
                latency_ms=int(os.environ.get("TOOL_AGENT_LLM_LATENCY_MS", "50")),
                rate_limit_iteration=int(limit) if limit else None,
                retry_after_s=float(os.environ.get("TOOL_AGENT_RETRY_AFTER_S", "2")),
            )
        return self.llm


services = Services()


def iteration_of(ctx: StepContext) -> int:
    """The loop iteration this step runs in (its key: ``think~00003`` -> 3; iteration 0 has no suffix)."""
    m = re.search(r"~(\d+)", ctx.key)
    return int(m[1]) if m else 0


# ============================================================== the delegate: one fact, as a child run
lookup = Workflow("tool-lookup")


@lookup.step(retry=RetryPolicy(max_attempts=3, backoff_s=1), **LOOKUP_FUNCTION)
def locate(ctx: StepContext, need: dict[str, Any]) -> dict[str, Any]:
    """Rank the documents for one ``{"metric", "year"}``."""
    STATS["lookup/locate"] += 1
    return {**need, "candidates": rank(f"{need['metric']} {need['year']}")}


@lookup.step(retry=RetryPolicy(max_attempts=3, backoff_s=1), **LOOKUP_FUNCTION)
def extract(ctx: StepContext, found: dict[str, Any]) -> dict[str, Any]:
    """The fact from the first candidate that states it: ``{"facts": {"trips@2024": {...} | None}}``."""
    STATS["lookup/extract"] += 1
    key = fact_key(found["metric"], found["year"])
    for name in found["candidates"]:
        value = find_quantity(document(name).text, found["metric"], found["year"])
        if value is not None:
            return {"facts": {key: {"value": value, "source": name}}}
    return {"facts": {key: None}}


# ============================================================== the agent
wf = Workflow("tool-agent", max_iterations=MAX_ITERATIONS)


@wf.step(retry=RetryPolicy(max_attempts=2, backoff_s=1), **AGENT_FUNCTION)
def understand(ctx: StepContext, request: dict[str, Any]) -> dict[str, Any]:
    """Read the question; the first fact it needs is delegated to the ``tool-lookup`` child run."""
    try:
        question = AgentRequest.model_validate(request).question
        task = parse_task(question)
    except (PydanticValidationError, UnsupportedQuestion) as exc:
        raise TerminalError(f"bad request: {exc}") from exc
    metric, year = task["needs"][0]
    return {"metric": metric, "year": year, "task": task}


wf.call(lookup, name="delegate")


@wf.step(routes=("act", "approve", END), retry=RetryPolicy(max_attempts=4, backoff_s=1), **AGENT_FUNCTION)
async def think(ctx: StepContext, value: dict[str, Any]) -> Route:
    """Ask the model for the next move and route there."""
    if "task" in value:
        state = value
    else:  # the first pass: the delegate's fact and the task understood
        task = ctx.output_of("understand")["task"]
        state = {"task": task, "facts": value["facts"], "result": None, "emailed": None, "call": None, "steps": []}
    it = iteration_of(ctx)
    try:
        completion = await services.get_llm().complete(state, request_id=ctx.idempotency_key, iteration=it)
    except RateLimited as exc:  # the next attempt of this iteration comes after the model's Retry-After
        STATS["llm/rate_limited"] += 1
        raise RetryableError(str(exc), retry_after_s=exc.retry_after_s) from exc
    STATS[f"llm@{it}"] += 1
    ctx.record_cost(usd=completion.usd, input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
    decision = completion.decision
    if decision["action"] == "answer":
        return goto(
            END,
            {
                "answer": decision["answer"],
                "result": state["result"],
                "facts": state["facts"],
                "emailed": state["emailed"],
                "steps": state["steps"],
                "iterations": it + 1,
            },
        )
    call = {"tool": decision["tool"], "args": decision["args"], "thought": decision["thought"]}
    return goto("act" if decision["action"] == "tool" else "approve", {**state, "call": call})


@wf.step(routes=("think",), retry=RetryPolicy(max_attempts=3, backoff_s=1), **AGENT_FUNCTION)
def act(ctx: StepContext, state: dict[str, Any]) -> Route:
    """Run the tool the model chose and hand the observation back to ``think``."""
    it, call = iteration_of(ctx), state["call"]
    args, facts, result = call["args"], dict(state["facts"]), state["result"]
    if call["tool"] == "search":
        metric, year = args["metric"], args["year"]
        candidates = rank(args["query"])
        reads = ctx.each(candidates, lambda name: read_document(name, metric, year, it), name="read")
        hit = next((r for r in reads if r["value"] is not None), None)
        facts[fact_key(metric, year)] = None if hit is None else {"value": hit["value"], "source": hit["doc"]}
        observation: Any = hit or {"found": False, "read": candidates}
    elif call["tool"] == "calculator":
        result = ctx.once("calculate", lambda: run_calculator(args["expression"], it))
        observation = result
    else:
        raise TerminalError(f"unknown tool {call['tool']!r}")
    step = {"iteration": it, "tool": call["tool"], "args": args, "observation": observation}
    return goto("think", {**state, "facts": facts, "result": result, "call": None, "steps": [*state["steps"], step]})


wf.wait_for_event("approval", timeout_s=86_400, name="approve")


@wf.step(routes=("think",), retry=RetryPolicy(max_attempts=3, backoff_s=1), **AGENT_FUNCTION)
def send(ctx: StepContext, decision: Any) -> Route:
    """The human answered (``{"approved": true|false, "by": ...}``): send the e-mail, or not."""
    it = iteration_of(ctx)
    state = ctx.output_of(node_key("think", None, it))  # what this iteration's think asked to approve
    args = state["call"]["args"]
    by = decision.get("by") if isinstance(decision, dict) else None
    if isinstance(decision, dict) and decision.get("approved") is True:
        key = ctx.idempotency_key_for("email")
        receipt = ctx.once(
            "email",
            lambda: send_email(args["to"], args["subject"], args["body"], key=key, iteration=it),
            reconcile=lambda: sent_email(key),  # a crash after sending: the outbox knows
        )
        emailed = {"status": "sent", "by": by, **receipt}
    else:
        emailed = {"status": "denied", "by": by}
    step = {"iteration": it, "tool": "send_email", "args": args, "observation": emailed}
    return goto("think", {**state, "emailed": emailed, "call": None, "steps": [*state["steps"], step]})
