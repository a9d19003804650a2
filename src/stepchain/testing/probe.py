"""Crash and duplicate injection, and execution counters, at the engine's named boundaries."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from stepchain.exceptions import StepchainSignal

#: where a worker can be killed (the engine and the handoff call the probe at each)
#: ``effect_window``: a ``ctx.once`` effect has run (its fn returned), its result is not checkpointed yet;
#: ``item_window``: a ``ctx.each`` item fn returned, its result is not checkpointed yet.
WORKER_BOUNDARIES = (
    "after_claim",
    "mid_item",
    "after_checkpoint",
    "before_handoff",
    "effect_window",
    "item_window",
)
#: where the API's lifecycle call dies after a durable write, before its handoff: ``api_start``
#: (the run and its first node written; reports the first node), ``api_event`` (reports the wait
#: node: 1st hit = the event stored, 2nd = the wait completed), ``api_cancel`` (reports the run's
#: current node: 1st = the run CANCELLED, 2nd = its nodes cancelled), ``api_redrive`` (reports the
#: top failed node: 1st = the run RUNNING again, 2nd = its failed nodes PENDING). ``skip=1`` picks
#: the 2nd hit. The harness call raises :class:`InjectedCrash`; ``sweep()`` finishes the call's work.
API_BOUNDARIES = ("api_start", "api_event", "api_cancel", "api_redrive")
BOUNDARIES = WORKER_BOUNDARIES + API_BOUNDARIES


class InjectedCrash(StepchainSignal):
    """Raised at a boundary to emulate the worker process dying there."""


@dataclass
class CrashRule:
    boundary: str
    node: str | None  # node id (or key prefix); None = any
    times: int
    skip: int = 0  # let this many matches pass first
    fired: int = 0

    def matches(self, boundary: str, key: str) -> bool:
        if boundary != self.boundary or self.fired >= self.times:
            return False
        if self.node is not None and key != self.node and not key.startswith((self.node + "#", self.node + "~")):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True


class HarnessProbe:
    """Counts what really executed, and kills the worker where a rule says so."""

    def __init__(self) -> None:
        self.rules: list[CrashRule] = []
        self.executions: Counter[str] = Counter()  # node key -> completed executions of its code
        self.items: Counter[str] = Counter()  # "key/loop:i" -> executions of a ctx.each item
        #: "<node key>/<operation id>" -> real executions of a ctx.once effect fn (counted when it returns)
        self.effects: Counter[str] = Counter()
        self.once = self.effects  # the older name
        self.crashes: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def crash(self, boundary: str, *, node: str | None = None, times: int = 1, skip: int = 0) -> None:
        if boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {boundary!r}; choose from {BOUNDARIES}")
        self.rules.append(CrashRule(boundary, node, times, skip))

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        with self._lock:
            if boundary == "step_executed":
                self.executions[key] += 1
            elif boundary == "item_executed":
                self.items[f"{key}/{detail}"] += 1
            elif boundary == "once_executed":
                self.effects[f"{key}/{detail}"] += 1
            for rule in self.rules:
                if rule.matches(boundary, key):
                    rule.fired += 1
                    self.crashes.append((boundary, key))
                    raise InjectedCrash(f"injected crash at {boundary} of {key}")
