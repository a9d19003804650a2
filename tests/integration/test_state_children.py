"""Durable state across child runs (``share_state=True`` on ``parallel`` and ``call``): each child
starts from the parent's state; the join merges the branches' changes into it by the parent's
reducers in declared branch order (replace: the last branch in that order that changed the field),
exactly once whatever the crashes and duplicate deliveries around the join, on every harness."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from stepchain import StateUpdate, ValidationError, Workflow
from stepchain.define.state import add, append, merge
from stepchain.testing import Harness, InjectedCrash, SfnHarness, SqsHarness

EFFECTS: Counter[tuple[str, str]] = Counter()  # (run id, what) -> real executions


class Shared(BaseModel):
    notes: Annotated[list[str], append] = []
    turns: Annotated[int, add] = 0
    seen: Annotated[dict[str, int], merge] = {}
    last: str = ""


class Narrow(BaseModel):  # a child may declare only the fields it uses
    notes: Annotated[list[str], append] = []
    turns: Annotated[int, add] = 0


def branch(name: str, model: type[BaseModel] = Shared) -> Workflow:
    wf = Workflow(f"branch-{name}", state=model)

    @wf.step(name=f"{name.replace('-', '_')}_work")
    def work(ctx: Any, x: int) -> Any:
        s = ctx.state
        assert s.notes[:1] == ["planned"], s  # it starts from the parent's state
        EFFECTS[(ctx.run_id, name)] += 1
        extra = {} if model is Narrow else {"seen": {name: 1}, "last": name}
        return StateUpdate(f"{name}:{x}", notes=[name], turns=1, **extra)

    return wf


parent = Workflow("shares-state", state=Shared)


@parent.step()
def plan(ctx: Any, x: int) -> int:
    ctx.update_state(notes=["planned"], seen={"plan": 0})
    return x


parent.parallel({"a": branch("a"), "b": branch("b"), "n": branch("n", Narrow)}, name="gather", share_state=True)


@parent.step()
def after(ctx: Any, outs: dict[str, Any]) -> dict[str, Any]:
    return {"outs": outs, "state": ctx.state.model_dump()}


parent.call(branch("c"), name="one", share_state=True)


@parent.step()
def finish(ctx: Any, out: Any) -> dict[str, Any]:
    return {"out": out, "state": ctx.state.model_dump()}


AFTER_GATHER = {
    "notes": ["planned", "a", "b", "n"],  # appended in declared branch order
    "turns": 3,
    "seen": {"plan": 0, "a": 1, "b": 1},
    "last": "b",  # replace: the last branch in declared order that changed it
}
FINAL = {**AFTER_GATHER, "notes": [*AFTER_GATHER["notes"], "c"], "turns": 4, "last": "c"}
FINAL["seen"] = {**AFTER_GATHER["seen"], "c": 1}  # type: ignore[dict-item]

HARNESSES: dict[str, Any] = {
    "memory": lambda **kw: Harness(parent, **kw),
    "moto": lambda **kw: Harness(parent, backend="moto", **kw),
    "sqs": lambda **kw: SqsHarness(parent, **kw),
    "sfn": lambda **kw: SfnHarness(parent, **kw),
}
#: around the join: the parent node's claim, its commit and handoff, and a branch's checkpoint
CRASHES = [
    (None, None),
    ("after_claim", "gather"),
    ("after_checkpoint", "gather"),
    ("before_handoff", "gather"),
    ("after_checkpoint", "a_work"),
    ("after_checkpoint", "one"),
]


def drive(h: Any) -> str:
    try:
        rid = h.start("shares-state", 1)
    except InjectedCrash:
        (rid,) = [r for r in h.runs() if h.engine.get_run(r).parent is None]
    for _ in range(6):
        with contextlib.suppress(InjectedCrash):
            h.run(rid)
        if h.status(rid) in ("SUCCEEDED", "FAILED"):
            break
        h.advance(900)
        h.sweep()
    return str(rid)


@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize(("boundary", "node"), CRASHES)
@pytest.mark.parametrize("kind", list(HARNESSES))
def test_the_join_merges_the_branches_state_once_in_branch_order(
    kind: str, boundary: str | None, node: str | None, duplicate: bool
) -> None:
    if kind == "sfn" and duplicate and boundary is not None:
        pytest.skip("one Step Functions case per crash (about 4 s each)")
    EFFECTS.clear()
    with HARNESSES[kind](duplicate_delivery=duplicate) as h:
        if boundary is not None:
            h.crash_at(boundary, node=node)
        rid = drive(h)
        assert h.status(rid) == "SUCCEEDED", h.view(rid).to_dict()
        out = h.output(rid)
        assert out["state"] == FINAL
        assert h.engine.output_of(rid, "after")["state"] == AFTER_GATHER
        assert h.engine.output_of(rid, "after")["outs"] == {"a": "a:1", "b": "b:1", "n": "n:1"}
        assert h.view(rid).state == FINAL
        ran = Counter(what for (_, what) in EFFECTS.elements())
        crashed_branch = "a" if node == "a_work" else None  # a crash after its checkpoint: no re-run
        assert all(ran[b] == 1 for b in "abnc"), (ran, crashed_branch)


def test_share_state_needs_a_state_on_both_sides() -> None:
    with pytest.raises(ValidationError):
        Workflow("no-state").call(branch("x"), share_state=True)
    stateless = Workflow("stateless-child")
    stateless.step(name="s")(lambda ctx, x: x)
    with pytest.raises(ValidationError):
        Workflow("has-state", state=Shared).call(stateless, share_state=True)


def test_without_share_state_children_see_no_state_and_change_none() -> None:
    wf = Workflow("keeps-state", state=Shared)

    @wf.step()
    def first(ctx: Any, x: int) -> int:
        ctx.update_state(notes=["mine"])
        return x

    child = Workflow("plain-child")
    child.step(name="echo")(lambda ctx, x: x + 1)
    wf.call(child, name="c")

    @wf.step()
    def last(ctx: Any, x: int) -> Any:
        return ctx.state.notes

    with Harness(wf) as h:
        rid = h.start("keeps-state", 1)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == ["mine"]


def test_a_child_named_without_a_state_fails_the_node_terminally() -> None:
    """A child given by name is checked when the node starts it: without a state model it cannot
    take the parent's state, and the node (and run) fail with a ValidationError, not retried."""
    stateless = Workflow("stateless-by-name")
    stateless.step(name="s")(lambda ctx, x: x)
    wf = Workflow("shares-with-a-name", state=Shared)
    wf.step(name="first")(lambda ctx, x: x)
    wf.call("stateless-by-name", name="c", share_state=True)
    with Harness(wf, stateless) as h:
        rid = h.start("shares-with-a-name", 1)
        assert h.run(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "ValidationError" and "declares no state" in err["message"], err


class Loose(BaseModel):  # reads the parent's state, but may write what the parent's model refuses
    seen: Annotated[dict[str, Any], merge] = {}


def test_a_branch_state_that_does_not_fit_the_parent_fails_the_join_terminally() -> None:
    child = Workflow("loose-child", state=Loose)

    @child.step()
    def scribble(ctx: Any, x: Any) -> Any:
        return StateUpdate(x, seen={"oops": "not an int"})

    wf = Workflow("joins-a-loose-child", state=Shared)
    wf.step(name="first")(lambda ctx, x: x)
    wf.call(child, name="c", share_state=True)
    with Harness(wf) as h:
        rid = h.start("joins-a-loose-child", 1)
        assert h.run(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "ValidationError" and "Shared" in err["message"], err
        assert h.engine.get_run(rid).error == err  # failed once, at the join (not retried)
