"""``async def`` steps, async ``ctx.each``/``ctx.once`` item functions, and their time budget,
on the in-process, SQS and Step Functions harnesses (virtual time: ``asyncio.sleep`` spends it).

An async step runs on its own event loop per invocation (:mod:`stepchain.define.aio`); it gets the
invocation's remaining time minus a 1 s margin, and one that outlives it is cancelled and retried
as ``StepTimedOut`` (a sync step would be killed by Lambda instead).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.matrix import spread

from stepchain import RetryPolicy, StepContext, Workflow
from stepchain.testing import WORKER_BOUNDARIES, Harness, SfnHarness, SqsHarness

WORLD: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    WORLD.clear()
    WORLD.update(calls=Counter())
    yield
    WORLD.clear()


HARNESSES: dict[str, Callable[..., Harness]] = {
    "memory": lambda *wfs, **kw: Harness(*wfs, backend="memory", **kw),
    "moto": lambda *wfs, **kw: Harness(*wfs, backend="moto", **kw),
    "sqs": lambda *wfs, **kw: SqsHarness(*wfs, **kw),
    "sfn": lambda *wfs, **kw: SfnHarness(*wfs, **kw),
}

# ============================================================== an async workflow
flow = Workflow("async-flow")


@flow.step(timeout_s=4)
async def collect(ctx: StepContext, n: int) -> list[int]:
    async def square(i: int) -> int:
        await asyncio.sleep(1)  # 1 s of virtual time: 2 items fit in a 4 s invocation, then it continues
        return i * i

    async def notify() -> str:
        await asyncio.sleep(0.2)
        WORLD["calls"]["notify"] += 1
        return f"notified:{ctx.idempotency_key}"

    squares = await ctx.each(list(range(n)), square)
    receipt = await ctx.once("notify", notify)
    assert receipt.endswith(":notify")
    return squares


@flow.map(timeout_s=5, max_concurrency=2)
async def double(ctx: StepContext, x: int) -> int:
    await asyncio.sleep(0.5)
    return 2 * x


@flow.step()
def total(ctx: StepContext, xs: list[int]) -> int:
    return sum(xs)


N = 5
EXPECTED = 2 * sum(i * i for i in range(N))


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_async_workflow_continues_across_invocations(kind: str) -> None:
    with HARNESSES[kind](flow) as h:
        rid = h.start("async-flow", N)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == EXPECTED
        outcomes = [i.outcome for i in h.invocations if i.key == "collect"]
        # 5 items of 1 s in 4 s invocations: ContinueInNewInvocation raised from async code, twice
        assert outcomes.count("CONTINUE") == 2, outcomes
        assert "timed_out" not in outcomes and "crashed" not in outcomes
        assert h.probe.items == Counter({f"collect/@1:{i}": 1 for i in range(N)})
        assert h.effects == Counter({"collect/notify": 1})
        assert all(n == 1 for n in h.executions.values()), h.executions


@pytest.mark.parametrize(("kind", "boundary"), spread((k, b) for k in HARNESSES for b in WORKER_BOUNDARIES))
def test_async_workflow_survives_a_crash_at_every_boundary(kind: str, boundary: str) -> None:
    node = {"after_claim": "double", "after_checkpoint": "collect", "before_handoff": "double"}.get(boundary)
    with HARNESSES[kind](flow, duplicate_delivery=True) as h:
        h.crash_at(boundary, node=node, skip=1 if boundary in ("mid_item", "item_window") else 0)
        rid = h.start("async-flow", N)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == EXPECTED
        assert h.probe.crashes and h.probe.crashes[0][0] == boundary, h.probe.crashes
        # completed work never runs again: each step's code completed once, each item once, except the
        # item whose result the crash lost (item_window) and the effect that did (effect_window)
        assert all(n == 1 for n in h.executions.values()), h.executions
        assert set(h.executions) == {"collect", "total", *(f"double#{i:05d}" for i in range(N))}
        items = {f"collect/@1:{i}": 1 for i in range(N)}
        if boundary == "item_window":
            items["collect/@1:1"] = 2
        assert h.probe.items == Counter(items)
        assert h.effects == Counter({"collect/notify": 2 if boundary == "effect_window" else 1})


# ============================================================== the time budget
budget = Workflow("async-budget")


@budget.step(timeout_s=10, retry=RetryPolicy(max_attempts=2, backoff_s=5))
async def slow(ctx: StepContext, _: Any) -> str:
    try:
        await asyncio.sleep(60)  # outlives a 10 s invocation
    except asyncio.CancelledError:
        WORLD["calls"]["cancelled"] += 1
        raise
    return "never"


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_an_async_step_that_outlives_its_budget_is_cancelled_and_retried(kind: str) -> None:
    with HARNESSES[kind](budget) as h:
        rid = h.start("async-budget")
        assert h.run(rid) == "FAILED"
        logs = [i for i in h.invocations if i.key == "slow"]
        # cancelled at the budget (10 s minus the 1 s margin) and retried, not killed by "Lambda"
        assert [i.outcome for i in logs] == ["WAIT", "FAILED"], logs
        assert all(9_000 <= i.elapsed_ms < 10_000 for i in logs), logs
        assert WORLD["calls"]["cancelled"] == 2
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "StepTimedOut"
        assert err["message"].startswith("gave up after 2 attempts: async step outlived its budget of")


# ============================================================== misuse
misuse = Workflow("async-misuse")


@misuse.step()
async def both_at_once(ctx: StepContext, _: Any) -> list[int]:
    async def one() -> int:
        await asyncio.sleep(0.1)
        return 1

    async def two() -> int:
        await asyncio.sleep(0.1)
        return 2

    # two operations at the same time: their ids come from call order, so this is refused
    return list(await asyncio.gather(ctx.once("one", one), ctx.once("two", two)))


sync_misuse = Workflow("sync-misuse")


@sync_misuse.step()
def sync_step_with_async_item(ctx: StepContext, _: Any) -> Any:
    async def item(i: int) -> int:
        return i

    return ctx.each([1, 2], item)


@sync_misuse.step()
def unreached(ctx: StepContext, x: Any) -> Any:
    return x


def test_concurrent_operations_and_async_items_in_a_sync_step_fail_the_run() -> None:
    with Harness(misuse, sync_misuse, backend="memory") as h:
        a = h.start("async-misuse")
        b = h.start("sync-misuse")
        h.run()
        for rid, text in ((a, "one at a time"), (b, "needs an `async def` step")):
            assert h.status(rid) == "FAILED"
            err = h.engine.get_run(rid).error
            assert err is not None and err["type"] == "ValidationError" and text in err["message"], err
        assert len([i for i in h.invocations if i.key == "both_at_once"]) == 1  # terminal: not retried


def test_a_coroutine_item_function_from_a_lambda_is_refused_not_checkpointed() -> None:
    wf = Workflow("lambda-item")

    async def fetch(i: int) -> int:
        return i

    @wf.step()
    async def step(ctx: StepContext, _: Any) -> Any:
        return ctx.each([1], lambda i: fetch(i))  # a coroutine object, not an async def

    with Harness(wf, backend="memory") as h:
        rid = h.start("lambda-item")
        assert h.run(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and "returned an awaitable" in err["message"]


threads = Workflow("async-threads")


@threads.step(timeout_s=10)
async def blocking_call(ctx: StepContext, _: Any) -> str:
    import time

    def slow_sdk_call() -> str:
        time.sleep(0.2)  # real time, in a thread (the harness only makes the step's own thread virtual)
        return "done"

    # while the thread works, the virtual loop waits for it in real time instead of jumping to the budget
    return await asyncio.to_thread(slow_sdk_call)


def test_work_in_a_thread_does_not_jump_virtual_time_to_the_budget() -> None:
    with Harness(threads, backend="memory") as h:
        rid = h.start("async-threads")
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == "done"
        assert [i.outcome for i in h.invocations] == ["DONE"]
        assert h.invocations[0].elapsed_ms < 1_000


reconciled = Workflow("async-reconcile")


@reconciled.step()
async def charge(ctx: StepContext, amount: int) -> dict[str, Any]:
    key = ctx.idempotency_key_for("charge")

    async def pay() -> dict[str, Any]:
        await asyncio.sleep(0.1)
        WORLD["calls"]["pay"] += 1
        WORLD.setdefault("ledger", {})[key] = amount
        return {"charged": amount}

    async def look_up() -> dict[str, Any] | None:  # an async reconcile: did the charge go through?
        await asyncio.sleep(0.1)
        WORLD["calls"]["reconcile"] += 1
        done = WORLD.get("ledger", {}).get(key)
        return None if done is None else {"charged": done, "reconciled": True}

    return await ctx.once("charge", pay, reconcile=look_up)


@pytest.mark.parametrize("kind", ["memory", "sqs"])
def test_an_async_reconcile_decides_after_a_crash_in_the_effect_window(kind: str) -> None:
    with HARNESSES[kind](reconciled) as h:
        h.crash_at("effect_window", node="charge")
        rid = h.start("async-reconcile", 42)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == {"charged": 42, "reconciled": True}
        assert WORLD["calls"] == Counter({"pay": 1, "reconcile": 1})  # the charge ran once
