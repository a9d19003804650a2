"""The tool agent (functions/tool_agent) on every harness: a loop of model calls and tools, a
human-approval branch, a delegated child run, an async step, a simulated rate limit.

"No completed iteration is executed again" is checked with the agent's own counters
(``tool_agent.tools.STATS``: tool executions and document reads by loop iteration, model calls by
iteration) as well as the harness's per-node-key execution counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.matrix import spread

from stepchain.testing import Harness, SfnHarness, SqsHarness
from tool_agent import tools
from tool_agent.llm import OfflineToolLLM
from tool_agent.workflow import lookup, services, wf

QUESTION = "By what percent did trips per station grow from 2024 to 2025? Email the answer to ops@northvale.example"
ANSWER = "The growth of trips per station from 2024 to 2025: 9.53%."
#: what the loop does, iteration by iteration (the first fact, trips@2024, came from the delegate)
PLAN = ["search", "search", "search", "calculator", "send_email"]
HARNESSES: dict[str, Callable[..., Harness]] = {
    "memory": lambda **kw: Harness(wf, lookup, backend="memory", **kw),
    "moto": lambda **kw: Harness(wf, lookup, backend="moto", **kw),
    "sqs": lambda **kw: SqsHarness(wf, lookup, **kw),
    "sfn": lambda **kw: SfnHarness(wf, lookup, **kw),
}

#: the harnesses every test runs on
KINDS = ["memory", "moto", "sqs", "sfn"]


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    tools.STATS.clear()
    tools.OUTBOX.clear()
    services.llm = OfflineToolLLM(latency_ms=50, rate_limit_iteration=1, retry_after_s=2)
    yield
    services.llm = None


def drive(h: Harness, *, approved: bool = True) -> tuple[str, Any]:
    rid = h.start("tool-agent", {"question": QUESTION})
    assert h.run(rid) == "WAITING"  # the model asked to send an e-mail: a human decides
    # the approval is inside the loop: it names the iteration the run waits in (think routed there in 4)
    assert h.waiting_for(rid) == {"event": "approval", "iteration": 4}
    assert h.send_event(rid, "approval", {"approved": approved, "by": "qa"}, iteration=4) == "delivered"
    assert h.run(rid) == "SUCCEEDED"
    return rid, h.output(rid)


def expected_stats(**changes: int) -> Counter[str]:
    stats = Counter(
        {
            "lookup/locate": 1,
            "lookup/extract": 1,
            "llm/rate_limited": 1,
            **{f"llm@{i}": 1 for i in range(6)},
            # search reads the ranked candidates until... all of them (ctx.each reads every candidate)
            "read:bikeshare-report.txt@0": 1,
            "read:city-budget.txt@0": 1,
            "read:network-expansion.txt@0": 1,
            "read:bikeshare-report.txt@1": 1,
            "read:ferries.txt@1": 1,
            "read:city-budget.txt@1": 1,
            "read:bikeshare-report.txt@2": 1,
            "read:network-expansion.txt@2": 1,
            "read:city-budget.txt@2": 1,
            "calculator@3": 1,
            "send_email@4": 1,
        }
    )
    stats.update(changes)
    return stats


@pytest.mark.parametrize("kind", KINDS)
def test_the_tool_agent_answers_with_tools_approval_and_a_child_run(kind: str) -> None:
    with HARNESSES[kind]() as h:
        rid, out = drive(h)
        assert out["answer"].startswith(ANSWER), out["answer"]
        assert out["answer"].endswith("E-mail to ops@northvale.example: sent.")
        assert [s["tool"] for s in out["steps"]] == PLAN
        assert out["iterations"] == 6 and out["emailed"]["status"] == "sent"
        assert out["facts"]["trips@2024"] == {"value": 1052000.0, "source": "bikeshare-report.txt"}  # the delegate's
        assert expected_stats() == tools.STATS
        assert next(iter(tools.OUTBOX.values()))["to"] == "ops@northvale.example"
        keys = set(h.executions)
        assert {"understand", "think", "act", "think~00001", "act~00003", "send~00004", "think~00005"} <= keys
        assert all(n == 1 for n in h.executions.values()), h.executions
        assert len(h.runs()) == 2  # the agent and its child (the delegate), started once
        # the rate-limited model call: the retry of iteration 1 came after the model's Retry-After (2 s)
        node = next(n for n in h.view(rid).nodes if n.key == "think~00001")
        first, second = node.history
        assert (first["outcome"], second["outcome"]) == ("retrying", "succeeded")
        assert 2_000 <= second["started_ms"] - first["ended_ms"] <= 3_000


#: (boundary, node key, skip): a crash at every worker boundary inside a loop iteration
CRASHES = [
    ("after_claim", "think~00001", 0),
    ("after_claim", "act~00002", 0),
    ("after_claim", "approve~00004", 0),
    ("after_claim", "send~00004", 0),
    ("mid_item", "act~00001", 1),
    ("item_window", "act~00001", 0),
    ("effect_window", "act~00003", 0),
    ("effect_window", "send~00004", 0),
    ("after_checkpoint", "think~00002", 0),
    ("after_checkpoint", "act~00002", 0),
    ("after_checkpoint", "send~00004", 0),
    ("before_handoff", "act~00002", 0),
    ("before_handoff", "think~00003", 0),
]


@pytest.mark.parametrize(("kind", "boundary", "node", "skip"), spread((k, *c) for c in CRASHES for k in KINDS))
def test_a_crash_inside_a_loop_iteration_never_runs_a_completed_iteration_again(
    kind: str, boundary: str, node: str, skip: int
) -> None:
    with HARNESSES[kind](duplicate_delivery=True) as h:
        h.crash_at(boundary, node=node, skip=skip)
        _rid, out = drive(h)
        assert h.probe.crashes == [(boundary, node)]
        assert out["answer"].startswith(ANSWER)
        assert all(n == 1 for n in h.executions.values()), h.executions
        # the only repeats are the ones at-least-once windows allow: a document read whose result the crash
        # lost (item_window), a calculator run whose result it lost (effect_window); the e-mail is reconciled
        changes = {}
        if boundary == "item_window":
            changes = {"read:bikeshare-report.txt@1": 1}
        if (boundary, node) == ("effect_window", "act~00003"):
            changes = {"calculator@3": 1}
        assert expected_stats(**changes) == tools.STATS
        assert len(tools.OUTBOX) == 1


@pytest.mark.parametrize("kind", ["memory", "sfn"])
def test_a_denied_approval_sends_nothing(kind: str) -> None:
    with HARNESSES[kind]() as h:
        _, out = drive(h, approved=False)
        assert out["emailed"] == {"status": "denied", "by": "qa"}
        assert out["answer"].endswith("E-mail to ops@northvale.example: denied.")
        assert tools.OUTBOX == {} and tools.STATS["send_email@4"] == 0


def test_a_question_without_email_answers_without_asking() -> None:
    with Harness(wf, lookup, backend="memory") as h:
        rid = h.start("tool-agent", {"question": "How many trips per station did the bike share record in 2025?"})
        assert h.run(rid) == "SUCCEEDED"
        out = h.output(rid)
        assert out["answer"].startswith("Trips per station in 2025: 4115.38.")
        assert [s["tool"] for s in out["steps"]] == ["search", "calculator"]


def test_a_question_the_model_does_not_understand_fails_the_run_at_once() -> None:
    with Harness(wf, lookup, backend="memory") as h:
        rid = h.start("tool-agent", {"question": "What is the meaning of life?"})
        assert h.run(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "TerminalError" and "bad request" in err["message"]
