"""The research agent end to end on the in-process harness (real DynamoDB/S3 adapters on moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from research_agent.fetcher import CorpusFetcher
from research_agent.workflow import services, wf
from stepchain.testing import WORKER_BOUNDARIES, Harness

QUESTION = "What is the global installed capacity of grid-scale battery storage and how much do battery packs cost?"


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness(wf, backend="moto", budget_ms=5_000) as h:
        # every page takes 1.2 s of virtual time: the 5 s budget forces the fetch step to continue
        services.fetcher = CorpusFetcher(latency_ms=1200, sleep=lambda s: h.clock.advance(s * 1000))
        yield h
    services.fetcher = None


def finish(h: Harness, run_id: str) -> None:
    h.run()
    assert h.status(run_id) == "WAITING"
    assert h.send_event(run_id, "approval", {"approved": True, "reviewer": "qa"}) == "delivered"
    h.run()
    assert h.status(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error


@pytest.mark.parametrize("boundary", WORKER_BOUNDARIES)
def test_crash_mid_run_reruns_no_completed_step(harness: Harness, boundary: str) -> None:
    harness.crash_at(boundary, node="fetch", skip=2)  # in the middle of fetching
    harness.crash_at(boundary, node="summarize", times=2)
    run_id = harness.start("research-agent", {"question": QUESTION, "max_sources": 8})
    finish(harness, run_id)
    assert harness.probe.crashes, "the crash was injected"
    assert all(n == 1 for n in harness.executions.values()), harness.executions
    # no page fetched twice, no LLM call paid twice; except that a crash in the window between an
    # item's (an effect's) end and its checkpoint runs that one again (at-least-once there, by design)
    reruns = len(harness.probe.crashes)
    items, effects = harness.probe.items, harness.effects
    assert sum(items.values()) - len(items) == (reruns if boundary == "item_window" else 0), items
    assert sum(effects.values()) - len(effects) == (reruns if boundary == "effect_window" else 0), effects
    assert len(harness.probe.items) == 8
    assert all(inv.elapsed_ms <= inv.budget_ms for inv in harness.invocations)

    report = harness.output(run_id)
    assert report["markdown"].startswith("# Research briefing")
    assert report["counts"]["conflicting"] >= 1  # the corpus disagrees on some figures
    view = harness.view(run_id)
    fetch = next(n for n in view.nodes if n.key == "fetch")
    assert fetch.invocations >= 3  # 8 pages x 1.2 s does not fit one 5 s invocation
    assert view.totals["cost_usd"] > 0 and view.totals["input_tokens"] > 0
    assert view.totals["crashes"] + view.totals["checkpoint_hits"] >= 1


def test_rejected_findings_fail_the_run_and_redrive_completes(harness: Harness) -> None:
    run_id = harness.start("research-agent", {"question": QUESTION})
    harness.run()
    harness.send_event(run_id, "approval", {"approved": False, "comment": "check the efficiency numbers"})
    harness.run()
    run = harness.engine.get_run(run_id)
    assert run.status.value == "FAILED" and run.error is not None and "rejected" in run.error["message"]
    executed = dict(harness.executions)
    harness.engine.redrive(run_id, input={"approved": True, "reviewer": "lead"}, replace_input=True)
    harness.run()
    assert harness.status(run_id) == "SUCCEEDED"
    # only the failed draft step ran again
    assert {k: v - executed.get(k, 0) for k, v in harness.executions.items() if v != executed.get(k, 0)} == {"draft": 1}


def test_bad_request_is_a_terminal_error(harness: Harness) -> None:
    run_id = harness.start("research-agent", {"question": "short"})
    harness.run()
    run = harness.engine.get_run(run_id)
    assert run.status.value == "FAILED"
    assert run.error is not None and run.error["type"] == "TerminalError"
    assert harness.view(run_id).nodes[0].attempts == 1  # not retried
