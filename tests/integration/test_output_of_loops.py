"""``ctx.output_of`` inside and after a loop, and ``ctx.iteration`` (issue 15): it used to read the
node's iteration-0 record whatever the iteration (``{"round": 0}`` in iteration 2), and a node that
ran only in a later iteration was not found at all (the run failed). A ``tally`` run counts rounds:
``bump`` runs in every iteration, ``bonus`` only in iteration 1 (``pick`` routes past it otherwise)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import StepContext, Workflow, goto
from stepchain.exceptions import StepNotFound
from stepchain.testing import Harness, SfnHarness, SqsHarness

ROUNDS = 3
BONUS = {"round": 1, "total": 21, "bonus_at": 1}


def seen(ctx: StepContext, step: str, **kw: Any) -> Any:
    try:
        return ctx.output_of(step, **kw)
    except StepNotFound:
        return "missing"


def workflow() -> Workflow:
    wf = Workflow("tally", max_iterations=ROUNDS + 1)

    @wf.step()
    def bump(ctx: StepContext, total: int) -> dict[str, int]:
        return {"round": ctx.iteration, "total": total + 1}

    @wf.step(routes=("bonus", "judge"))
    def pick(ctx: StepContext, state: dict[str, int]) -> Any:
        return goto("bonus" if ctx.iteration == 1 else "judge", state)

    @wf.step()
    def bonus(ctx: StepContext, state: dict[str, int]) -> dict[str, int]:
        return {**state, "bonus_at": ctx.iteration}

    @wf.step(routes=("bump",))
    def judge(ctx: StepContext, state: dict[str, int]) -> Any:
        saw = {"iteration": ctx.iteration, "bump": seen(ctx, "bump"), "bonus": seen(ctx, "bonus")}
        if ctx.iteration < ROUNDS - 1:
            return goto("bump", state["total"] * 10)
        return saw

    @wf.step()
    def report(ctx: StepContext, last: dict[str, Any]) -> dict[str, Any]:
        return {
            "judge": last,
            "bump": seen(ctx, "bump"),
            "bump_0": seen(ctx, "bump", iteration=0),
            "bonus": seen(ctx, "bonus"),
            "bonus_0": seen(ctx, "bonus", iteration=0),
            "iteration": ctx.iteration,
        }

    return wf


@contextmanager
def harness(where: str) -> Iterator[Harness]:
    wf = workflow()
    if where == "memory":
        h: Harness = Harness(wf)
    elif where == "moto":
        h = Harness(wf, backend="moto")
    elif where == "sqs":
        h = SqsHarness(wf)
    else:
        h = SfnHarness(wf, poll_timeout_s=6.0)
    with h:
        yield h


@pytest.mark.parametrize("where", ["memory", "moto", "sqs", "sfn"])
def test_output_of_reads_the_latest_iteration(where: str) -> None:
    with harness(where) as h:
        run_id = h.start("tally", 1)
        assert h.run(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        out = h.output(run_id)
        assert out == {
            "judge": {"iteration": 2, "bump": {"round": 2, "total": 211}, "bonus": BONUS},
            "bump": {"round": 2, "total": 211},  # after the loop: the last iteration's
            "bump_0": {"round": 0, "total": 2},
            "bonus": BONUS,  # it ran only in iteration 1
            "bonus_0": "missing",
            "iteration": 2,
        }


def test_output_of_inside_the_loop_sees_each_iteration() -> None:
    seen_in: list[Any] = []
    wf = workflow()
    judge = wf.node("judge").fn
    assert judge is not None

    def spy(ctx: StepContext, state: dict[str, int]) -> Any:
        seen_in.append((ctx.iteration, seen(ctx, "bump"), seen(ctx, "bonus")))
        return judge(ctx, state)

    object.__setattr__(wf.node("judge"), "fn", spy)
    with Harness(wf) as h:
        run_id = h.start("tally", 1)
        assert h.run(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
    assert seen_in == [
        (0, {"round": 0, "total": 2}, "missing"),
        (1, {"round": 1, "total": 21}, BONUS),
        (2, {"round": 2, "total": 211}, BONUS),  # bonus ran in iteration 1 only
    ]


def test_output_of_costs_one_read_in_its_iteration_and_one_query_more_before() -> None:
    """The store calls of ``ctx.output_of`` (no read of every iteration)."""
    calls: Counter[str] = Counter()
    wf = workflow()
    report = wf.node("report").fn
    assert report is not None

    def counted(ctx: StepContext, last: dict[str, Any]) -> Any:
        store = ctx._services.store
        get, query = store.get_node, store.list_nodes

        def get_node(*a: Any, **kw: Any) -> Any:
            calls["get_node"] += 1
            return get(*a, **kw)

        def list_nodes(*a: Any, **kw: Any) -> Any:
            calls["list_nodes"] += 1
            return query(*a, **kw)

        object.__setattr__(store, "get_node", get_node)
        object.__setattr__(store, "list_nodes", list_nodes)
        try:
            ctx.output_of("bump")  # ran in this iteration: one read
            first = +calls
            ctx.output_of("bonus")  # ran in an earlier one: one read, one prefix query
            return {"first": dict(first), "both": dict(calls)}
        finally:
            del store.get_node, store.list_nodes

    object.__setattr__(wf.node("report"), "fn", counted)
    with Harness(wf) as h:
        run_id = h.start("tally", 1)
        assert h.run(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        out = h.output(run_id)
    print(f"\noutput_of store calls: same iteration {out['first']}, earlier iteration {out['both']}")
    assert out == {"first": {"get_node": 1}, "both": {"get_node": 2, "list_nodes": 1}}
