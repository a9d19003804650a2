"""``RetryableError(message, retry_after_s=...)``: the step names the delay before its next attempt
(a rate-limited API's Retry-After), on every transport, in virtual time; ``max_attempts`` still bounds it.

In-process and SQS carry the delay as the activation's due time (SQS: ``DelaySeconds``); Step
Functions as the ``wake_at`` of the task's WAIT state, which its Wait state sleeps until (rounded
up to the second).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest

from stepchain import RetryableError, RetryPolicy, StepContext, Workflow
from stepchain.handoff.messages import Activation
from stepchain.testing import Harness, SfnHarness, SqsHarness

WORLD: dict[str, Any] = {}

HARNESSES: dict[str, Callable[..., Harness]] = {
    "memory": lambda *wfs, **kw: Harness(*wfs, backend="memory", **kw),
    "moto": lambda *wfs, **kw: Harness(*wfs, backend="moto", **kw),
    "sqs": lambda *wfs, **kw: SqsHarness(*wfs, **kw),
    "sfn": lambda *wfs, **kw: SfnHarness(*wfs, **kw),
}
#: Step Functions' Wait state takes a whole-second timestamp, rounded up
SLACK_MS = {"memory": 0, "moto": 0, "sqs": 0, "sfn": 1_000}


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    WORLD.clear()
    WORLD.update(starts=[], fail_times=1)
    yield
    WORLD.clear()


def attempt_started(ctx: StepContext) -> None:
    WORLD["starts"].append((ctx.attempt, WORLD["clock"].now_ms()))
    if len(WORLD["starts"]) <= WORLD["fail_times"]:
        raise RetryableError("429 Too Many Requests", retry_after_s=42)


flow = Workflow("rate-limited")


@flow.step(retry=RetryPolicy(max_attempts=3, backoff_s=1))
def call_api(ctx: StepContext, x: int) -> int:
    attempt_started(ctx)
    return x + 1


@flow.step(retry=RetryPolicy(max_attempts=3, backoff_s=1))
async def call_llm(ctx: StepContext, x: int) -> int:  # the same from an async step
    await asyncio.sleep(0.5)
    attempt_started(ctx)
    return x * 10


def gaps(starts: list[tuple[int, int]]) -> list[int]:
    return [b[1] - a[1] for a, b in pairwise(starts)]


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_the_next_attempt_comes_after_retry_after_s(kind: str) -> None:
    WORLD["fail_times"] = 1  # call_api's first attempt is rate limited, then call_llm's first
    with HARNESSES[kind](flow) as h:
        WORLD["clock"] = h.clock
        rid = h.start("rate-limited", 1)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == 20
        starts = WORLD["starts"]
        assert [a for a, _ in starts] == [1, 2, 1]
        # 42 s (not the policy's 1 s backoff) between the failed attempt and the next
        assert 42_000 <= gaps(starts)[0] <= 42_000 + SLACK_MS[kind], starts
        # visible in the step's history: the retry, its error and its delay
        node = next(n for n in h.view(rid).nodes if n.key == "call_api")
        assert node.attempts == 2
        assert [i["outcome"] for i in node.history] == ["retrying", "succeeded"]


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_retry_after_s_is_still_bounded_by_max_attempts(kind: str) -> None:
    WORLD["fail_times"] = 99  # every attempt of call_api is rate limited
    with HARNESSES[kind](flow) as h:
        WORLD["clock"] = h.clock
        rid = h.start("rate-limited", 1)
        assert h.run(rid) == "FAILED"
        starts = WORLD["starts"]
        assert [a for a, _ in starts] == [1, 2, 3]  # max_attempts=3
        assert all(42_000 <= g <= 42_000 + SLACK_MS[kind] for g in gaps(starts)), starts  # not 1 s, 2 s
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "RetryableError" and err["retry_after_s"] == "42"
        assert err["message"] == "gave up after 3 attempts: 429 Too Many Requests"


def test_the_retrying_node_records_the_delay_while_it_waits() -> None:
    with Harness(flow, backend="moto") as h:
        WORLD["clock"] = h.clock
        rid = h.start("rate-limited", 1)
        t0 = h.clock.now_ms()
        h.run(rid, until_ms=t0 + 10_000)  # inside the 42 s
        rec = h.store.get_node(rid, "call_api")
        assert rec is not None and rec.status.value == "RETRYING"
        assert rec.error is not None and rec.error["retry_after_s"] == "42"
        assert rec.wake_at_ms == t0 + 42_000
        assert h.run(rid) == "SUCCEEDED"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 86_401, True, "5"])
def test_retry_after_s_must_be_a_sane_number_of_seconds(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        RetryableError("x", retry_after_s=bad)
    assert RetryableError("x").retry_after_s is None
    assert RetryableError("x", retry_after_s=0).retry_after_s == 0.0


def _retrying(h: Harness, rid: str) -> int:
    """Wait (Step Functions runs in moto's threads) until call_api is RETRYING; its wake_at."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rec = h.store.get_node(rid, "call_api")
        if rec is not None and rec.status.value == "RETRYING" and rec.wake_at_ms is not None:
            return rec.wake_at_ms
        time.sleep(0.005)
    raise AssertionError("call_api never went RETRYING")


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_an_early_duplicate_does_not_run_a_retry_before_its_delay(kind: str) -> None:
    """A duplicate (or a sweeper re-issue) delivered inside the retry delay does not start the next
    attempt early: the claim refuses a RETRYING node before its wake_at and re-delivers it then."""
    WORLD["fail_times"] = 1
    with HARNESSES[kind](flow) as h:
        WORLD["clock"] = h.clock
        held = threading.Event()
        if isinstance(h, SfnHarness):  # the execution's Wait state passes no time before the duplicate came
            pass_time_to = h.pass_time_to
            h.pass_time_to = lambda at_ms: (held.wait(30), pass_time_to(at_ms))  # type: ignore[method-assign]
        rid = h.start("rate-limited", 1)
        if not isinstance(h, SfnHarness):
            h.run(rid, until_ms=h.clock.now_ms() + 10_000)  # the first attempt failed: 42 s to wait
        wake = _retrying(h, rid)
        assert h.clock.now_ms() < wake
        h.redeliver(Activation(rid, "rate-limited", h.engine.get_run(rid).version, "call_api"))
        held.set()
        assert h.run(rid) == "SUCCEEDED"
        starts = WORLD["starts"]
        assert [a for a, _ in starts] == [1, 2, 1], starts  # no extra attempt ran
        assert gaps(starts)[0] >= 42_000, starts
