"""Workflows for the step-fusion tests (tests/integration/test_fusion*.py): chains of plain steps in
one function, each step a ``ctx.once`` effect counted per run, so a completed step run again or an
effect repeated shows in the counters; a routed loop, a child workflow, a durable state."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel

from stepchain import END, RetryableError, Workflow, goto

EFFECTS: Counter[tuple[str, str]] = Counter()  # (run id, node key) -> real effect executions
FLAKY: Counter[str] = Counter()  # run id -> failures raised by ``flaky``
Fuse = bool | int
#: the workflows' ``Workflow(fuse=...)``: at most 10 steps per invocation unless a test says otherwise
FUSE: Fuse = 10


def _bump(ctx: Any, x: dict[str, Any]) -> dict[str, Any]:
    ctx.once("effect", lambda: EFFECTS.update([(ctx.run_id, ctx.key)]) or 1)
    return {**x, "n": x["n"] + 1, "path": [*x["path"], ctx.key]}


def chain(name: str, n: int, *, timeout_s: int = 60, no_fuse: tuple[int, ...] = (), fuse: Fuse = FUSE) -> Workflow:
    wf = Workflow(name, fuse=fuse)
    for i in range(n):
        wf.step(name=f"s{i}", timeout_s=timeout_s, fuse=i not in no_fuse)(_bump)
    return wf


def looped(name: str = "fuse-loop", rounds: int = 3, *, fuse: Fuse = FUSE) -> Workflow:
    """a -> b -> c, c loops back to a until ``rounds`` rounds ran, then d: one fused chain throughout."""
    wf = Workflow(name, max_iterations=rounds + 1, fuse=fuse)
    wf.step(name="a")(_bump)
    wf.step(name="b")(_bump)

    @wf.step(name="c", routes=("a", "d"))
    def c(ctx: Any, x: dict[str, Any]) -> Any:
        x = _bump(ctx, x)
        return goto("a", x) if x["n"] < 3 * rounds else goto("d", x)

    wf.step(name="d")(_bump)
    return wf


def with_child(name: str = "fuse-parent", *, fuse: Fuse = FUSE) -> tuple[Workflow, Workflow]:
    """A parent: two fused steps, a call of a child whose three steps fuse, two fused steps."""
    child = chain(f"{name}-child", 3, fuse=fuse)
    parent = Workflow(name, fuse=fuse)
    parent.step(name="p0")(_bump)
    parent.step(name="p1")(_bump)
    parent.call(child, name="sub")
    parent.step(name="p2")(_bump)
    parent.step(name="p3")(_bump)
    return parent, child


def flaky_chain(name: str = "fuse-flaky", *, fuse: Fuse = FUSE) -> Workflow:
    """s0 -> flaky (fails once, retried) -> s2: the retry is a fused step's own RETRYING record."""
    wf = Workflow(name, fuse=fuse)
    wf.step(name="s0")(_bump)

    @wf.step(name="flaky")
    def flaky(ctx: Any, x: dict[str, Any]) -> dict[str, Any]:
        if FLAKY[ctx.run_id] == 0:
            FLAKY[ctx.run_id] += 1
            raise RetryableError("once")
        return _bump(ctx, x)

    wf.step(name="s2")(_bump)
    return wf


class Tally(BaseModel):
    seen: list[str] = []


def stateful(name: str = "fuse-state", *, fuse: Fuse = FUSE) -> Workflow:
    wf = Workflow(name, state=Tally, fuse=fuse)
    for i in range(4):

        @wf.step(name=f"t{i}")
        def t(ctx: Any, x: int) -> int:
            assert ctx.state.seen == [f"t{j}" for j in range(x)], ctx.state.seen
            ctx.update_state(seen=[*ctx.state.seen, ctx.key])
            ctx.emit("tick", {"at": ctx.key})
            return x + 1

    return wf


START = {"n": 0, "path": []}
__all__ = ["EFFECTS", "END", "FUSE", "START", "chain", "flaky_chain", "looped", "stateful", "with_child"]

#: the embedded runtime's workflow (tests/integration/test_fusion.py: LocalHarness imports it by name)
LOCAL = chain("fuse-local", 6, timeout_s=1)


def budgeted(name: str = "fuse-budget", *, fuse: Fuse = FUSE) -> Workflow:
    """Three fused steps of $0.04 each (estimated and spent) under a $0.10 budget: the third is held."""
    wf = Workflow(name, budget_usd=0.10, fuse=fuse)
    for i in range(3):

        @wf.step(name=f"b{i}", estimate_usd=0.04)
        def b(ctx: Any, x: dict[str, Any]) -> dict[str, Any]:
            ctx.record_cost(usd=0.04)
            return _bump(ctx, x)

    return wf
