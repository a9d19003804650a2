"""An asyncio event loop whose timers run on the harness's virtual clock.

``VirtualClock.new_event_loop()`` makes one; :mod:`stepchain.define.aio` runs every ``async def`` step on
the loop its engine's clock makes. ``loop.time()`` reads the virtual clock, and when the loop has
nothing to do but wait for a timer (``asyncio.sleep``, ``asyncio.timeout``, the step's budget), the
clock jumps to it instead of the process sleeping. So in the harness ``await asyncio.sleep(s)``
spends ``s`` of virtual time, as ``time.sleep`` does in a sync step, and passing the invocation's
deadline kills it (``InvocationTimeout``) as Lambda would.

Real I/O still wakes the loop: ready file descriptors are polled first, and while work handed to
threads (``run_in_executor``, ``asyncio.to_thread``) is in flight the loop waits for it in real time
(work in threads takes no virtual time).
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar


class TimerClock(Protocol):
    """What the loop needs of the harness's clock (:class:`stepchain.testing.clock.VirtualClock` has it)."""

    def monotonic_ms(self) -> float: ...
    def advance(self, ms: float) -> None: ...


T = TypeVar("T")


class _VirtualSelector(selectors.BaseSelector):
    """The real selector, except that waiting for a timer moves the virtual clock."""

    def __init__(self, clock: TimerClock, loop_state: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        self._loop_state = loop_state

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None or self._loop_state.threads_in_flight:
            ready = self._real.select(timeout)  # only I/O or a thread can wake the loop: wait for it
            if ready or timeout is None:
                return ready
        self._clock.advance(max(1, math.ceil(timeout * 1000)))  # whole ms: the clock stays exact
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on ``clock``'s virtual time."""

    def __init__(self, clock: TimerClock) -> None:
        self._vclock = clock
        self.threads_in_flight = 0
        super().__init__(selector=_VirtualSelector(clock, self))
        self._clock_resolution = 0.001  # timers within 1 ms of now are due (the clock moves in whole ms)

    def time(self) -> float:
        return self._vclock.monotonic_ms() / 1000

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self.threads_in_flight += 1

        def done(_: asyncio.Future[T]) -> None:
            self.threads_in_flight -= 1

        fut.add_done_callback(done)
        return fut


__all__ = ["VirtualTimeLoop"]
