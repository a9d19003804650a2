"""Events inside a loop over the API: the run detail says what the run waits for
(``waiting_for: {"event", "iteration"}``), ``POST /runs/{id}/events/{name}?iteration=N`` names the
iteration (idempotent per event and iteration), a delivery that must name it and does not is a 409
``event_iteration_required`` naming it, a bad ``iteration`` is a 400, and an approval token is bound
to the iteration it was minted for: a token minted for iteration 0 never approves iteration 1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.functional.test_api import Reply, call
from tests.integration.expense_flows import expense, single

from stepchain.api.tokens import read_token
from stepchain.testing import Harness

REJECT = {"approved": False, "by": "ann", "cap": 300}
APPROVE = {"approved": True, "by": "bo", "amount": 300}


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness(expense, single, backend="memory") as harness:
        yield harness


def event(h: Harness, rid: str, name: str, body: Any, iteration: str | None = None) -> Reply:
    query = None if iteration is None else {"iteration": iteration}
    return call(h, "send-event", path=f"/runs/{rid}/events/{name}", body=body, query=query)


def waiting_for(h: Harness, rid: str) -> Any:
    r = call(h, "get-run", path=f"/runs/{rid}")
    assert r.status == 200, r.raw
    return r.json["waiting_for"]


def test_a_retry_after_the_wait_completed_is_a_409_naming_the_iteration(h: Harness) -> None:
    rid = h.start("expense-approval", 500)
    assert h.run(rid) == "WAITING"
    assert waiting_for(h, rid) == {"event": "approval", "iteration": 0}
    first = event(h, rid, "approval", REJECT)
    assert first.status == 202 and first.json == {
        "run_id": rid,
        "event": "approval",
        "iteration": 0,
        "status": "delivered",
    }
    h.run(rid)
    assert waiting_for(h, rid) == {"event": "approval", "iteration": 1}
    retry = event(h, rid, "approval", REJECT)  # the first 202 was lost
    assert retry.status == 409, retry.raw
    assert retry.json["error"]["code"] == "event_iteration_required"
    assert retry.json["error"]["details"] == [{"event": "approval", "iteration": 1}]
    assert "iteration 1" in retry.json["error"]["message"]
    named = event(h, rid, "approval", REJECT, "0")  # the retry naming its iteration: as before
    assert (named.status, named.json["status"], named.json["iteration"]) == (202, "delivered", 0)
    other = event(h, rid, "approval", APPROVE, "0")
    assert other.status == 409 and other.json["error"]["code"] == "invalid_run_state"
    assert h.status(rid) == "WAITING" and waiting_for(h, rid) == {"event": "approval", "iteration": 1}
    ok = event(h, rid, "approval", APPROVE, "1")
    assert (ok.status, ok.json["status"], ok.json["iteration"]) == (202, "delivered", 1)
    h.run(rid)
    assert waiting_for(h, rid) == {"event": "receipt", "iteration": 1}
    assert event(h, rid, "receipt", "r", "1").status == 202
    h.run(rid)
    done = call(h, "get-run", path=f"/runs/{rid}").json
    assert done["status"] == "SUCCEEDED" and done["waiting_for"] is None


@pytest.mark.parametrize("bad", ["x", "-1", "1.5", "", "99999999999999999999"])
def test_a_bad_iteration_is_a_400_before_anything_is_stored(h: Harness, bad: str) -> None:
    rid = h.start("expense-approval", 500)
    h.run(rid)
    r = event(h, rid, "approval", APPROVE, bad)
    assert r.status == 400, (bad, r.raw)
    assert r.json["error"]["code"] == "invalid_parameter"
    assert h.engine.store.get_event(rid, "approval") is None and h.status(rid) == "WAITING"


def test_an_iteration_the_run_is_past_or_never_has_is_a_409(h: Harness) -> None:
    rid = h.start("expense-approval", 500)
    h.run(rid)
    assert event(h, rid, "approval", {**REJECT, "cap": 40}).status == 202
    h.run(rid)  # iteration 1 pays 40 without approval
    past = event(h, rid, "approval", APPROVE, "1")
    assert past.status == 409 and past.json["error"]["code"] == "event_iteration_passed"
    assert past.json["error"]["details"] == [{"event": "approval", "iteration": 2}]
    beyond = event(h, rid, "approval", APPROVE, "8")  # max_iterations=8: iterations 0..7
    assert beyond.status == 409 and beyond.json["error"]["code"] == "event_iteration_unknown"
    plain = h.start("single-approval", 1)
    never = event(h, plain, "approval", "yes", "1")
    assert never.status == 409 and never.json["error"]["code"] == "event_iteration_unknown"
    assert event(h, plain, "approval", "yes", "0").json["status"] == "buffered"


def mint(h: Harness, rid: str, **body: Any) -> Reply:
    return call(h, "send-event", path=f"/runs/{rid}/approvals", body={"event": "approval", **body}, query=None)


def approve(h: Harness, token: str, payload: Any) -> Reply:
    return call(h, "send-event", path="/approvals", body=payload, query=None, headers={"Approval-Token": token})


def test_an_approval_token_is_bound_to_the_iteration_it_was_minted_for(h: Harness) -> None:
    rid = h.start("expense-approval", 500)
    h.run(rid)
    early = mint(h, rid)  # while iteration 0 waits
    assert early.status == 201 and early.json["iteration"] == 0, early.raw
    assert read_token(early.json["token"], h.engine.clock.now_ms()).iteration == 0
    assert event(h, rid, "approval", REJECT).status == 202  # someone else rejected iteration 0
    h.run(rid)
    assert waiting_for(h, rid) == {"event": "approval", "iteration": 1}
    # the token of iteration 0, used late: refused, and iteration 1 still waits
    late = approve(h, early.json["token"], APPROVE)
    assert late.status == 409, late.raw
    assert h.status(rid) == "WAITING" and h.engine.store.get_event(rid, "approval~00001") is None
    # a token minted now is for iteration 1; one minted ahead for iteration 2 is buffered for it
    now = mint(h, rid)
    ahead = mint(h, rid, iteration=2)
    assert (now.json["iteration"], ahead.json["iteration"]) == (1, 2)
    bad = mint(h, rid, iteration=9)
    assert bad.status == 409 and bad.json["error"]["code"] == "event_iteration_unknown"
    used = approve(h, now.json["token"], APPROVE)
    assert used.status == 202 and used.json == {
        "run_id": rid,
        "event": "approval",
        "iteration": 1,
        "status": "delivered",
    }
    again = approve(h, now.json["token"], APPROVE)
    assert again.status == 409 and again.json["error"]["code"] == "token_used"
    h.run(rid)
    assert h.engine.output_of(rid, "pay~00001")["approved_by"] == "bo"
    assert approve(h, ahead.json["token"], APPROVE).json["status"] == "buffered"
