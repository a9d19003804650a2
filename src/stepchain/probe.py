"""The probe: an observer of named boundaries (the test harness injects crashes and counts
executions there; the AWS runtime counts them as metrics). Injected through constructors. The
boundaries where a worker can be killed, and the rule that picks one (:class:`CrashRule`, used by
the harnesses and by the embedded runtime's crash plan), are named here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
#: where a fork (stepchain.engine.fork) dies: ``api_fork_copy`` after each transaction of copies
#: (reports the fork's chosen node key; no RUN item yet), ``api_fork`` after the RUN item and the
#: chosen node are written, before the first activation
FORK_BOUNDARIES = ("api_fork_copy", "api_fork")
BOUNDARIES = WORKER_BOUNDARIES + API_BOUNDARIES + FORK_BOUNDARIES


class Probe(Protocol):
    """Observer of named boundaries (the test harness injects crashes and counts executions here)."""

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None: ...


class NoProbe:
    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        return None


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


__all__ = ["API_BOUNDARIES", "BOUNDARIES", "FORK_BOUNDARIES", "WORKER_BOUNDARIES", "CrashRule", "NoProbe", "Probe"]
