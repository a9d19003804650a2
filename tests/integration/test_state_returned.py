"""A step returns its state update (``StateUpdate(output, field=...)``) instead of calling
``ctx.update_state``: merged by the same reducers after the step's own ``update_state`` calls,
checkpointed in the same write as the output, on every harness; the output stays separate."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from stepchain import END, StateUpdate, ValidationError, Workflow, goto
from stepchain.define.state import add, append
from stepchain.testing import Harness, SfnHarness, SqsHarness

HARNESSES: dict[str, Any] = {
    "memory": lambda wf, **kw: Harness(wf, **kw),
    "moto": lambda wf, **kw: Harness(wf, backend="moto", **kw),
    "sqs": lambda wf, **kw: SqsHarness(wf, **kw),
    "sfn": lambda wf, **kw: SfnHarness(wf, **kw),
}


class Notes(BaseModel):
    notes: Annotated[list[str], append] = []
    turns: Annotated[int, add] = 0
    last: str = ""


wf = Workflow("returns-state", state=Notes, max_iterations=4)


@wf.step()
def start(ctx: Any, n: int) -> StateUpdate[int]:
    ctx.update_state(notes=["called"])  # a call first, the returned update after it
    return StateUpdate(n * 10, notes=["returned"], last="start")


@wf.step(routes=("loop", END))
def loop(ctx: Any, x: int) -> Any:
    s = ctx.state
    if s.turns < 2:  # the update rides inside the route
        return goto("loop", StateUpdate(x + 1, turns=1, notes=[f"turn{s.turns}"], last="loop"))
    return StateUpdate(goto(END, {"x": x, "state": s.model_dump()}), last="done")  # or wraps it


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_a_returned_update_merges_by_the_reducers_and_the_output_stays_separate(kind: str) -> None:
    with HARNESSES[kind](wf) as h:
        rid = h.start("returns-state", 1)
        assert h.run(rid) == "SUCCEEDED"
        want = {"notes": ["called", "returned", "turn0", "turn1"], "turns": 2, "last": "loop"}
        assert h.output(rid) == {"x": 12, "state": want}  # the loop's input: the plain output
        assert h.view(rid).state == {**want, "last": "done"}
        assert h.engine.output_of(rid, "start") == 10


def test_a_returned_update_is_exactly_once_under_duplicate_delivery() -> None:
    with Harness(wf, backend="moto", duplicate_delivery=True) as h:
        rid = h.start("returns-state", 1)
        assert h.run(rid) == "SUCCEEDED"
        assert h.view(rid).state["notes"] == ["called", "returned", "turn0", "turn1"]


def test_a_returned_update_that_does_not_fit_the_model_fails_the_run() -> None:
    bad = Workflow("bad-update", state=Notes)

    @bad.step()
    def only(ctx: Any, x: Any) -> Any:
        return StateUpdate(x, no_such_field=1)

    plain = Workflow("no-state-update")

    @plain.step()
    def one(ctx: Any, x: Any) -> Any:
        return StateUpdate(x, notes=["x"])

    for w in (bad, plain):
        with Harness(w) as h:
            rid = h.start(w.name, 1)
            assert h.run(rid) == "FAILED"
            err = h.engine.get_run(rid).error
            assert err is not None and err["type"] == ValidationError.__name__, err
