"""Crash and duplicate injection, and execution counters, at the engine's named boundaries."""

from __future__ import annotations

import threading
from collections import Counter

from stepchain.exceptions import StepchainSignal
from stepchain.probe import API_BOUNDARIES as API_BOUNDARIES  # re-exported: the harness names them
from stepchain.probe import BOUNDARIES as BOUNDARIES
from stepchain.probe import FORK_BOUNDARIES as FORK_BOUNDARIES
from stepchain.probe import WORKER_BOUNDARIES as WORKER_BOUNDARIES
from stepchain.probe import CrashRule


class InjectedCrash(StepchainSignal):
    """Raised at a boundary to emulate the worker process dying there."""


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
