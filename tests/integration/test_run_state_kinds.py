"""Durable run state across the other node kinds: a map (items see their input only), a sleep and a
call (the child gets its input, returns its output) pass the state on unchanged; a routed loop
goes back through all of them. A crash after each one's checkpoint (the state handed on from the
checkpoint) and a duplicate delivery keep it exact, in memory and on Step Functions."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from stepchain import END, TerminalError, ValidationError, Workflow, goto
from stepchain.define.state import append
from stepchain.testing import Harness, SfnHarness


class Trail(BaseModel):
    seen: Annotated[list[str], append] = []


child = Workflow("state-kinds-child")


@child.step()
def double(ctx: Any, x: int) -> int:
    with pytest.raises(ValidationError):  # a child run gets its input only (its workflow has no state)
        ctx.state  # noqa: B018
    return 2 * x


flow = Workflow("state-kinds", state=Trail, max_iterations=3)


@flow.step()
def start(ctx: Any, _: Any) -> list[int]:
    ctx.update_state(seen=[f"start{ctx.iteration}"])
    return [1, 2]


@flow.map()
def square(ctx: Any, x: int) -> int:
    with pytest.raises(ValidationError):  # map items get their input only
        ctx.state  # noqa: B018
    return x * x


flow.sleep(30, name="nap")


@flow.step()
def total(ctx: Any, xs: list[int]) -> int:
    return sum(xs)


flow.call(child, name="sub")


@flow.step(routes=("start", END))
def check(ctx: Any, x: int) -> Any:
    want = ["start0"] if ctx.iteration == 0 else ["start0", "check0", "start1"]
    if ctx.state.seen != want or x != 10:
        raise TerminalError(f"check saw {ctx.state!r}, input {x}")
    ctx.update_state(seen=[f"check{ctx.iteration}"])
    return goto("start", None) if ctx.iteration == 0 else goto(END, ctx.state.model_dump())


EXPECTED = {"seen": ["start0", "check0", "start1", "check1"]}


@pytest.mark.parametrize(
    ("kind", "node"),
    [("memory", n) for n in ("square", "nap", "sub", "total")] + [("sfn", "sub")],
)
def test_state_passes_through_map_sleep_and_call(kind: str, node: str) -> None:
    h = Harness(flow) if kind == "memory" else SfnHarness(flow)
    with h:
        h.crash_at("after_checkpoint", node=node)
        rid = h.start("state-kinds", None)
        for _ in range(6):
            if h.run(rid) == "SUCCEEDED":
                break
            h.advance(600)
            h.sweep()
        assert h.status(rid) == "SUCCEEDED", h.view(rid).to_dict()
        assert h.output(rid) == EXPECTED and h.view(rid).state == EXPECTED


def test_state_through_the_kinds_with_duplicate_delivery() -> None:
    with Harness(flow, duplicate_delivery=True) as h:
        rid = h.start("state-kinds", None)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == EXPECTED


inside = Workflow("state-inside-once", state=Trail)


@inside.step()
def effect(ctx: Any, _: Any) -> str:
    with pytest.raises(ValidationError, match="outside"):  # a replay would not run it again
        ctx.once("e", lambda: ctx.update_state(seen=["lost on a replay"]))
    with pytest.raises(ValidationError, match="outside"):
        ctx.each([1], lambda i: ctx.update_state(seen=[f"item{i}"]))
    result = ctx.once("e2", lambda: "charged")
    ctx.update_state(seen=[result])  # the supported way: the checkpointed result, outside
    return result


def test_update_state_inside_once_or_each_is_refused() -> None:
    with Harness(inside) as h:
        rid = h.start("state-inside-once", None)
        assert h.run(rid) == "SUCCEEDED", h.view(rid).error
        assert h.view(rid).state == {"seen": ["charged"]}
