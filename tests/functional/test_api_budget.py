"""Dollar budgets over the runs API (issue 19): ``budget_usd`` at ``POST /runs``, the ``budget``
wait in the run view, ``POST /runs/{id}/budget`` and the approval ``POST /runs/{id}/events/budget``,
a caller's daily budget (429), and the 4xx answers to bad input."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from tests.functional.test_api import call, start

from stepchain import StepContext, Workflow
from stepchain.testing import Harness

agent = Workflow("api-budgeted", budget_usd=0.10)
plain = Workflow("api-unbudgeted")
for wf in (agent, plain):
    for name in ("plan", "search", "write"):

        def fn(ctx: StepContext, x: int) -> int:
            ctx.record_cost(usd=0.04)
            return x + 1

        fn.__name__ = name
        wf.step(estimate_usd=0.05)(fn)


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness(agent, plain, backend="memory") as harness:
        yield harness


def budget(h: Harness, run_id: str, body: Any) -> Any:
    return call(h, "redrive-run", path=f"/runs/{run_id}/budget", body=body)


def test_a_held_run_shows_its_budget_wait_and_a_raise_resumes_it(h: Harness) -> None:
    run_id = start(h, "api-budgeted", 0).json["run_id"]
    assert h.run(run_id) == "WAITING"
    view = call(h, "get-run", path=f"/runs/{run_id}").json
    assert view["waiting_for"] == {"event": "budget", "iteration": 0}
    assert view["totals"]["budget_usd"] == 0.10 and 0.08 <= view["totals"]["budget_spent_usd"] < 0.081
    r = budget(h, run_id, {"budget_usd": 0.5})
    assert r.status == 200 and r.json["run_id"] == run_id
    assert h.run(run_id) == "SUCCEEDED"


def test_an_approval_event_lets_the_held_step_run(h: Harness) -> None:
    run_id = start(h, "api-budgeted", 0).json["run_id"]
    early = call(h, "send-event", path=f"/runs/{run_id}/events/budget", body=None)
    assert early.status == 409  # nothing held yet
    assert h.run(run_id) == "WAITING"
    r = call(h, "send-event", path=f"/runs/{run_id}/events/budget", body=None)
    assert r.status == 202 and r.json["status"] == "delivered"
    assert h.run(run_id) == "SUCCEEDED"  # write was the last step


def test_a_start_with_its_own_budget_and_the_bad_inputs(h: Harness) -> None:
    r = call(h, "start-run", body={"workflow": "api-budgeted", "input": 0, "budget_usd": 0.05})
    assert r.status == 202
    run_id = r.json["run_id"]
    assert h.run(run_id) == "WAITING" and h.engine.get_run(run_id).budget_nano == 50_000_000
    for bad in ({"budget_usd": -1}, {"budget_usd": "lots"}, {}, {"budget_usd": 1, "extra": 1}):
        assert budget(h, run_id, bad).status == 422, bad
    assert budget(h, run_id, None).status in (400, 422)
    unbudgeted = call(h, "start-run", body={"workflow": "api-unbudgeted", "input": 0, "budget_usd": 1})
    assert unbudgeted.status == 409 and unbudgeted.code == "budget_not_declared"  # well formed, not for it
    other = start(h, "api-unbudgeted", 0).json["run_id"]
    assert budget(h, other, {"budget_usd": 1}).status == 409  # it has no budget
    assert budget(h, "0" * 24, {"budget_usd": 1}).status == 404


def test_a_callers_daily_budget_answers_429(h: Harness) -> None:
    h.engine.worker.limits = dataclasses.replace(h.engine.worker.limits, caller_daily_budget_usd=0.15)
    assert start(h, "api-budgeted", 0).status == 202
    r = start(h, "api-budgeted", 0)
    assert r.status == 429 and r.code == "budget_exceeded"
