"""``GET /runs/{run_id}/stream`` through the real API handler (REST proxy events): pages after a
sequence, resuming with ``next``, long-poll on a finished run, 400s for bad parameters, 404s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.functional.test_api_ownership import ALICE, BOB, MISSING_RUN, call

from stepchain import StepContext, Workflow
from stepchain.testing import Harness

chatty = Workflow("chatty", stream_lifecycle=True)


@chatty.step()
def talk(ctx: StepContext, n: int) -> int:
    for i in range(n):
        ctx.emit("said", {"i": i})
    return n


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("STEPCHAIN_OWNERSHIP", "on")
    monkeypatch.setenv("STEPCHAIN_CURSOR_KEY", "k" * 32)
    monkeypatch.setenv("STEPCHAIN_APPROVAL_KEY", "a" * 32)
    with Harness(chatty, backend="memory") as harness:
        yield harness


def start(h: Harness, n: int) -> str:
    status, body = call(h, "POST", "/runs", ALICE, {"workflow": "chatty", "input": n})
    assert status == 202
    return str(body["run_id"])


def test_pages_resume_with_next_and_end_when_finished(h: Harness) -> None:
    run_id = start(h, 5)
    status, page = call(h, "GET", f"/runs/{run_id}/stream", ALICE)
    assert status == 200 and page == {"run_id": run_id, "events": [], "next": 0, "finished": False}
    assert h.run(run_id) == "SUCCEEDED"
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        query = {"after": str(after), "limit": "2", "wait_s": "5"}  # finished: no waiting
        status, page = call(h, "GET", f"/runs/{run_id}/stream", ALICE, query=query)
        assert status == 200 and page["finished"] is True
        if not page["events"]:
            break
        seen += page["events"]
        after = page["next"]
    assert [e["seq"] for e in seen] == list(range(1, 10))
    assert [e["kind"] for e in seen] == [
        "run.started",
        "node.started",
        *["said"] * 5,
        "node.succeeded",
        "run.succeeded",
    ]
    assert [e["data"] for e in seen[2:7]] == [{"i": i} for i in range(5)]
    assert seen == h.stream(run_id)


@pytest.mark.parametrize("query", [{"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"wait_s": "60"}])
def test_bad_parameters_are_400(h: Harness, query: dict[str, str]) -> None:
    run_id = start(h, 1)
    assert call(h, "GET", f"/runs/{run_id}/stream", ALICE, query=query)[0] == 400


def test_missing_run_and_other_callers_get_404(h: Harness) -> None:
    run_id = start(h, 1)
    assert call(h, "GET", f"/runs/{MISSING_RUN}/stream", ALICE)[0] == 404
    assert call(h, "GET", f"/runs/{run_id}/stream", BOB)[0] == 404


def test_a_long_poll_on_a_running_run_waits_then_returns_empty(h: Harness) -> None:
    run_id = start(h, 1)  # RUNNING: not run yet
    t0 = h.clock.now_ms()
    status, page = call(h, "GET", f"/runs/{run_id}/stream", ALICE, query={"wait_s": "2"})
    assert status == 200 and page["events"] == [] and page["finished"] is False
    assert h.clock.now_ms() - t0 >= 1750  # (virtual) time passed polling
