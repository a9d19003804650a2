"""``async def`` steps: one event loop per invocation, bounded by the invocation's time budget.

A step (or map item) function that returns an awaitable (an ``async def`` function) is run to its
end by :func:`run_coroutine` on a fresh event loop (``asyncio.Runner``, what ``asyncio.run`` uses),
closed before the step's checkpoint is written. The coroutine gets the invocation's remaining time
minus a margin of 1 s (:func:`budget_ms`); when it outlives that, it is cancelled (``CancelledError`` at its
current ``await``) and the step fails this attempt with :class:`~stepchain.exceptions.StepTimedOut`,
which is retried per the step's ``RetryPolicy`` like any error (``ctx.each`` items and ``ctx.once``
results checkpointed before stay checkpointed). The margin leaves the worker the time to write
that outcome, which a sync step killed by Lambda never gets.

Signals raised inside the coroutine (``ContinueInNewInvocation`` from ``ctx.each``, ``StepCancelled``,
a test harness's injected crash) leave the loop unchanged and reach the engine as from a sync step.

A clock may make the loop (``clock.new_event_loop()``): the test harness's virtual clock makes one
whose timers run in virtual time (``asyncio.sleep`` spends virtual time, the budget is virtual).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stepchain.exceptions import StepTimedOut, ValidationError

R = TypeVar("R")

#: kept free at the end of an invocation after an async step's budget (for its outcome's writes)
ASYNC_MARGIN_MS = 1_000


def budget_ms(remaining_ms: int, margin_ms: int = ASYNC_MARGIN_MS) -> int:
    """An async step's time: the invocation's remaining time minus ``margin_ms``, or minus a tenth
    of it when that is less (a step started late in an SQS batch's invocation still gets 90%)."""
    return remaining_ms - min(margin_ms, remaining_ms // 10)


def run_coroutine(aw: Awaitable[R], *, budget: int, clock: object = None) -> R:
    """Run ``aw`` on a new event loop, cancelling it after ``budget`` ms (:class:`StepTimedOut`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if asyncio.iscoroutine(aw):
            aw.close()
        raise ValidationError(
            "an async step cannot run inside a running event loop: serve activations from synchronous code "
            "(as the Lambda handlers do)"
        )

    async def guarded() -> R:
        limit = asyncio.timeout(budget / 1000)
        try:
            async with limit:
                return await aw
        except TimeoutError:
            if not limit.expired():
                raise  # the step's own TimeoutError
            raise StepTimedOut(
                f"async step outlived its budget of {budget} ms (the invocation's remaining time minus a "
                "margin for its checkpoint) and was cancelled"
            ) from None

    factory: Callable[[], asyncio.AbstractEventLoop] | None = getattr(clock, "new_event_loop", None)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(guarded())


__all__ = ["ASYNC_MARGIN_MS", "budget_ms", "run_coroutine"]
