"""In-process handoff: a time-ordered queue drained by the caller (the harness, the local runtime)."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Sequence

from stepchain.clock import Clock
from stepchain.handoff.base import Handoff
from stepchain.handoff.messages import Activation


class InProcessHandoff(Handoff):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Activation]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.sent = 0

    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        due = self.clock.now_ms() if at_ms is None else at_ms
        with self._lock:
            for m in msgs:
                heapq.heappush(self._heap, (due, next(self._seq), m))
                self.sent += 1

    def push_back(self, msg: Activation, at_ms: int) -> None:
        """Re-deliver ``msg`` at ``at_ms``, as a queue does after a visibility timeout."""
        with self._lock:
            heapq.heappush(self._heap, (at_ms, next(self._seq), msg))

    def peek(self) -> tuple[int, Activation] | None:
        with self._lock:
            return (self._heap[0][0], self._heap[0][2]) if self._heap else None

    def only_timeouts_left(self) -> bool:
        with self._lock:
            return all(m.action in ("timeout", "recheck") for _, _, m in self._heap)

    def pop(self, due_by_ms: int | None = None) -> tuple[int, Activation] | None:
        """The head message and its due time (None: empty). With ``due_by_ms``, only a head due by
        then: threads that peek, then pop, would otherwise take a message another thread's pop made
        the head, before it is due (a queue never delivers a delayed message early)."""
        with self._lock:
            if not self._heap or (due_by_ms is not None and self._heap[0][0] > due_by_ms):
                return None
            due, _, msg = heapq.heappop(self._heap)
            return due, msg

    def __len__(self) -> int:
        return len(self._heap)
