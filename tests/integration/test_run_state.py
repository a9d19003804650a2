"""Durable run state (issue 18): an agent with a typed state loops through an approval wait and
reads its state afterwards, on every harness, with a crash at every boundary: the state is right
and no tool call is repeated (except one a crash in its own effect window must repeat).

Each harness runs the flow of ``state_flows.py`` once per (boundary, node) crash rule; the
in-memory harness takes every node, the transports (moto SQS, moto Step Functions) four cells
around the wait, where the state crosses a suspension.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from tests.integration.state_flows import TOOL_CALLS, TURNS, AgentState, agent, expected

from stepchain import StateUpdate, ValidationError, Workflow
from stepchain.define.state import add
from stepchain.testing import API_BOUNDARIES, WORKER_BOUNDARIES, Harness, InjectedCrash, SfnHarness, SqsHarness

#: the wait node is keyed by its event's name (``wait_for_event("approve")``)
ALL_NODES = ("plan", "act", "approve", "review")
STATE_BOUNDARIES = (*(b for b in WORKER_BOUNDARIES if b not in ("mid_item", "item_window")), "api_start", "api_event")
MEMORY = [(b, n) for b in STATE_BOUNDARIES for n in ALL_NODES]
#: the transports (a run ~2 s on SQS, ~4 s on Step Functions): where the state crosses a
#: checkpoint, a claim, the event and the loop
SFN = [("after_checkpoint", "act"), ("after_claim", "approve"), ("api_event", "approve"), ("before_handoff", "act")]
HARNESSES: dict[str, Any] = {"memory": Harness, "sqs": SqsHarness, "sfn": SfnHarness}
#: the API reports only the first node (start) and the wait node (event)
CASES = [
    (kind, b, n)
    for kind, cells in (("memory", MEMORY), ("sqs", SFN), ("sfn", SFN))
    for b, n in cells
    if b not in API_BOUNDARIES or (b, n) in (("api_start", "plan"), ("api_event", "approve"))
]


def drive(h: Any, task: str) -> str:
    """Start the run and approve each turn. A crash inside an API call is recovered as a deployment
    does: time passes and the sweeper finishes the call's work (a client may also retry the event:
    the same payload again is idempotent)."""
    try:
        run_id = h.start("state-agent", task)
    except InjectedCrash:
        (run_id,) = h.runs()
    for _ in range(8 * TURNS):
        h.run(run_id)
        if h.status(run_id) in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        waiting = h.waiting_for(run_id)
        if waiting is not None:
            it = waiting["iteration"]
            payload = {"approvals": [f"ann-{it}"], "approved_by": f"ann-{it}"}
            with contextlib.suppress(InjectedCrash):  # the sweeper finishes the delivery
                h.send_event(run_id, "approve", payload, iteration=it)
        h.advance(600)
        with contextlib.suppress(InjectedCrash):  # the sweeper died in its re-issue's handoff: the next sweep
            h.sweep()
    return str(run_id)


@pytest.mark.parametrize(("kind", "boundary", "node"), CASES)
def test_state_survives_a_crash_at_every_boundary(kind: str, boundary: str, node: str) -> None:
    h = HARNESSES[kind](agent)
    with h:
        h.crash_at(boundary, node=node)
        run_id = drive(h, "t")
        no_effect = boundary == "effect_window" and node != "act"  # only act has an effect
        assert h.probe.rules[0].fired == 1 or no_effect, "the planned crash never happened"
        assert h.status(run_id) == "SUCCEEDED", h.view(run_id).to_dict()
        assert h.output(run_id) == expected("t")
        assert h.view(run_id).state == expected("t")
        for it in range(TURNS):  # a tool call runs again only after a crash in its own effect window
            ran = TOOL_CALLS[(run_id, it)]
            assert ran == 1 or (ran == 2 and boundary == "effect_window"), (it, ran)


class Count(BaseModel):
    steps: Annotated[int, add] = 0


def counting_chain(n: int, returned: bool = False) -> Workflow:
    wf = Workflow(f"state-chain-{n}", state=Count)
    for i in range(n):

        def step(ctx: Any, x: int) -> Any:
            if returned:  # the update returned with the output (StateUpdate)
                return StateUpdate(x + 1, steps=1)
            ctx.update_state(steps=1)
            return x + 1

        wf.step(name=f"s{i}")(step)
    return wf


def dynamodb_calls(kind: str, n: int, returned: bool = False) -> Counter[str]:
    wf = counting_chain(n, returned)
    h: Harness = SqsHarness(wf) if kind == "sqs" else Harness(wf, backend="moto")
    with h:
        rid = h.start(wf.name, 0)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == n and h.view(rid).state == {"steps": n}
        return Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")})


@pytest.mark.parametrize("returned", [False, True])
@pytest.mark.parametrize("kind", ["inprocess", "sqs"])
def test_a_state_update_costs_no_extra_call(kind: str, returned: bool) -> None:
    """Still two DynamoDB calls per step (claim, checkpoint) when every step changes the state
    (``update_state`` or a returned ``StateUpdate``): the state is written with the checkpoint and
    travels with the activation (measured as in test_calls_per_step: a 25-step chain less a 5-step one)."""
    short, long = dynamodb_calls(kind, 5, returned), dynamodb_calls(kind, 25, returned)
    per_step = {op: d / 20 for op in long | short if (d := long[op] - short[op])}
    assert per_step == {"dynamodb.UpdateItem": 2.0}, per_step


def test_duplicate_delivery_keeps_the_state_exactly_once() -> None:
    with Harness(agent, duplicate_delivery=True) as h:
        run_id = drive(h, "dup")
        assert h.output(run_id) == expected("dup")
        assert all(TOOL_CALLS[(run_id, it)] == 1 for it in range(TURNS))


def test_waiting_run_shows_its_state_and_large_state_goes_by_reference() -> None:
    with Harness(agent, inline_limit=64) as h:  # the state no longer fits inline: an S3 reference
        run_id = h.start("state-agent", "x" * 100)
        h.run(run_id)
        assert h.status(run_id) == "WAITING"
        shown = h.view(run_id).state
        assert set(shown) == {"blob", "bytes"} and shown["bytes"] > 64
        run_id = drive_existing(h, run_id)
        assert h.output(run_id) == expected("x" * 100)


def drive_existing(h: Any, run_id: str) -> str:
    for _ in range(2 * TURNS):
        waiting = h.waiting_for(run_id)
        if waiting is None:
            break
        it = waiting["iteration"]
        h.send_event(run_id, "approve", {"approvals": [f"ann-{it}"], "approved_by": f"ann-{it}"}, iteration=it)
        h.run(run_id)
    return run_id


def test_a_bad_event_payload_is_refused_before_it_is_stored() -> None:
    with Harness(agent) as h:
        run_id = h.start("state-agent", "t")
        h.run(run_id)
        with pytest.raises(ValidationError):
            h.send_event(run_id, "approve", {"no_such_field": 1}, iteration=0)
        with pytest.raises(ValidationError):
            h.send_event(run_id, "approve", ["not", "a", "dict"], iteration=0)
        assert h.status(run_id) == "WAITING"


def test_a_state_model_needs_defaults_and_into_state_needs_a_model() -> None:
    class NoDefault(AgentState):
        must: int

    with pytest.raises(ValidationError):
        Workflow("bad-state", state=NoDefault)
    with pytest.raises(ValidationError):
        Workflow("no-state").wait_for_event("go", into_state=True)


def test_the_readme_example_runs() -> None:
    """README's durable-state block, as written: it loops through the approval three times."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Durable run state")[1]
    code = section.split("```python\n")[1].split("```")[0]
    ns: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec", dont_inherit=True), ns)  # our own README
    with Harness(ns["agent"]) as h:
        rid = h.start("agent", "refunds")
        h.run(rid)
        h.send_event(rid, "approve", {"approved_by": "ann"}, iteration=0)  # first approval only:
        h.run(rid)  # the loop goes on through later iterations' waits
        for it in (1, 2):
            h.send_event(rid, "approve", {"approved_by": f"bob{it}"}, iteration=it)
            h.run(rid)
        assert h.output(rid)["turns"] == 3 and h.output(rid)["approved_by"] == "bob2"
        assert h.view(rid).state["notes"] == ["looked into refunds"] * 3
