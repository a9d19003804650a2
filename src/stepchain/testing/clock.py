"""Virtual time for the harness: sleeps, waits and retries skip; work takes the time you say."""

from __future__ import annotations

import asyncio
import threading

from stepchain.engine.heartbeat import TickListener
from stepchain.exceptions import StepchainSignal

#: 2026-01-01T00:00:00Z, so timestamps in tests are readable
EPOCH_MS = 1_767_225_600_000


class InvocationTimeout(StepchainSignal):
    """The emulated Lambda kill: virtual time passed an invocation's deadline."""


class VirtualClock:
    def __init__(self, start_ms: int = EPOCH_MS) -> None:
        self._now = float(start_ms)
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._listeners: list[TickListener] = []

    def now_ms(self) -> int:
        return int(self._now)

    def monotonic_ms(self) -> float:
        return self._now

    def subscribe(self, listener: TickListener) -> None:
        """Fire ``listener.tick(t)`` at each of its due moments ``t`` that :meth:`advance` passes (the
        clock reads ``t`` meanwhile): the SQS heartbeat beats in virtual time."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: TickListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _fire_until(self, end: float) -> None:
        while True:
            dues = [(d, i) for i, lis in enumerate(self._listeners) if (d := lis.next_due_ms()) is not None]
            due = min(dues, default=None)
            if due is None or due[0] > end:
                return
            with self._lock:
                self._now = max(self._now, float(due[0]))
            self._listeners[due[1]].tick(due[0])

    def advance(self, ms: float) -> None:
        """Let ``ms`` of virtual time pass. Inside an invocation, passing its deadline kills it."""
        if self._listeners:
            end = self._now + ms
            self._fire_until(end if self._deadline is None else min(end, self._deadline))
            ms = max(0.0, end - self._now)
        with self._lock:
            self._now += ms
            if self._deadline is not None and self._now > self._deadline:
                over = self._now - self._deadline
                self._now = self._deadline
                raise InvocationTimeout(f"invocation ran {over:.0f} ms past its deadline")

    def set_to(self, ms: float) -> None:
        with self._lock:
            self._now = max(self._now, ms)

    def set_deadline(self, deadline_ms: float | None) -> None:
        self._deadline = deadline_ms

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop whose timers run on this clock (``async def`` steps run on it: :mod:`stepchain.define.aio`)."""
        from stepchain.testing.aio import VirtualTimeLoop

        return VirtualTimeLoop(self)


class VirtualLambdaContext:
    """A Lambda context whose remaining time follows the virtual clock."""

    def __init__(self, clock: VirtualClock, budget_ms: int, request_id: str, function_name: str = "harness") -> None:
        self.clock = clock
        self.budget_ms = budget_ms
        self.started_ms = clock.monotonic_ms()
        self.deadline_ms = self.started_ms + budget_ms
        self.aws_request_id = request_id
        self.function_name = function_name
        self.memory_limit_in_mb = 512

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_ms - self.clock.monotonic_ms()))

    def elapsed_ms(self) -> float:
        return self.clock.monotonic_ms() - self.started_ms
