"""Limits in combination (issue 19): one key of one slot and a request limit shared by a step in the
child runs of a parallel's branches, reached after a routing step in every iteration of a loop, and
by a step of the parent after the loop; two runs at once, the first holder dies with its slot held,
every message delivered twice, on every transport. The steps' own log never shows a start while
another holder's lease is live, never more requests in a window than the key allows, and every run
finishes with each limited step run once (the dead holder's twice)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from stepchain import StepContext, Workflow, goto
from stepchain.define.flow import Concurrency, RateLimit
from stepchain.testing import Harness, InjectedCrash, SfnHarness, SqsHarness

ITERATIONS, RUNS = 2, 2
SHARED = (Concurrency(1, name="combo-slot", poll_s=2), RateLimit(30, per_s=60, name="combo-rpm"))
#: (virtual start ms, its lease end ms, run, node key) of each admitted limited step
LOG: list[tuple[int, int, str, str]] = []
DEAD: list[tuple[int, int]] = []  # (start, lease end) of the holder that died holding its slot


def admitted(ctx: StepContext) -> None:
    now = ctx._services.clock.now_ms()
    rec = ctx._services.store.get_node(ctx.run_id, ctx.key)
    assert rec is not None
    LOG.append((now, rec.lease_until_ms, ctx.run_id, ctx.key))
    if not DEAD:  # the first holder dies: no release, its slot stays held until its lease ends
        DEAD.append((now, rec.lease_until_ms))
        raise InjectedCrash("the worker dies holding the slot")


child = Workflow("combo-limited-child")


@child.step(timeout_s=10, limits=SHARED)
def tool(ctx: StepContext, n: int) -> int:
    admitted(ctx)
    return n


parent = Workflow("combo-limited", max_iterations=ITERATIONS + 1)


@parent.step(routes=("both", "finish"))
def route(ctx: StepContext, n: int) -> Any:
    return goto("both", n) if ctx.iteration < ITERATIONS else goto("finish", n)


parent.parallel({"a": child, "b": child}, name="both")


@parent.step(routes=("route",))
def again(ctx: StepContext, out: dict[str, int]) -> Any:
    return goto("route", out["a"])


@parent.step(timeout_s=10, limits=SHARED)
def finish(ctx: StepContext, n: int) -> int:
    admitted(ctx)
    return n


HARNESSES: dict[str, Callable[..., Harness]] = {
    "memory": lambda *wfs, **kw: Harness(*wfs, backend="memory", **kw),
    "sqs": lambda *wfs, **kw: SqsHarness(*wfs, **kw),
    "sfn": lambda *wfs, **kw: SfnHarness(*wfs, **kw),
}


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_a_shared_key_holds_across_children_branches_loop_iterations_and_runs(kind: str) -> None:
    LOG.clear()
    DEAD.clear()
    with HARNESSES[kind](parent, child, duplicate_delivery=True) as h:
        ids = [h.start("combo-limited", n) for n in range(RUNS)]
        h.run()
        for rid in ids:
            if h.status(rid) not in ("SUCCEEDED", "FAILED"):
                h.run(rid)
        assert [h.status(r) for r in ids] == ["SUCCEEDED"] * RUNS
        assert [h.output(r) for r in ids] == list(range(RUNS))
    # each run: 2 iterations x 2 branches of the child's step, then its own finish; the dead one twice
    assert len(LOG) == RUNS * (2 * ITERATIONS + 1) + 1, len(LOG)
    nodes = Counter(key.partition("~")[0] for _, _, _, key in LOG)  # finish~00002: iteration 2's
    assert nodes == {"tool": RUNS * 2 * ITERATIONS + (LOG[0][3] == "tool"), "finish": RUNS + (LOG[0][3] != "tool")}
    ((dead_start, dead_until),) = DEAD
    starts = sorted(t for t, _, _, _ in LOG)
    # one slot: nobody starts while the dead holder's lease is live, and starts never coincide
    assert not [t for t in starts if dead_start < t <= dead_until], (DEAD, starts)
    assert len(set(starts)) == len(starts)
    # 30 a minute: at most 5 starts in any 10 s (one more where a transport woke a reservation late)
    most = max(sum(1 for t in starts if t0 <= t < t0 + 10_000) for t0 in starts)
    assert most <= (5 if kind == "memory" else 6), starts
