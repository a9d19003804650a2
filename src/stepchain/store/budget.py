"""A run's dollar budget on its RUN item, on the port's primitives (no new abstract method).

``budget_nano`` (the run's budget, nano-dollars) is written at the run's start; ``spent_nano`` is
ADDed by each attempt of a step of a budgeted run (LLM + compute), before the attempt's node
write; ``paused`` marks a run held in its ``budget`` wait. A caller's daily budget is a counter
item per (caller, UTC day) in the same table (``CALLER#<sha256(owner)[:32]>`` / ``D#<yyyy-mm-dd>``,
callers scoped as idempotency keys are). Each operation is ONE primitive call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stepchain.store.port import Cond, StorePort, Update
from stepchain.store.records import RUN_SK, RunStatus, run_pk

PAUSED = "budget"


def caller_pk(owner: str) -> str:
    """The partition of a caller's daily budget counters (one item per UTC day)."""
    return f"CALLER#{hashlib.sha256(owner.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class RunBudget:
    budget_nano: int | None
    spent_nano: int
    paused: bool


class BudgetOps(StorePort):
    """The budget half of :class:`~stepchain.store.base.CheckpointStore`."""

    def run_budget(self, run_id: str) -> RunBudget | None:
        """The run's budget and spend (one consistent read of the RUN item); None: no such run."""
        item = self._get(run_pk(run_id), RUN_SK)
        if item is None:
            return None
        budget = item.get("budget_nano")
        return RunBudget(None if budget is None else int(budget), int(item.get("spent_nano", 0)), "paused" in item)

    def add_spent(self, run_id: str, nano: int) -> None:
        """ADD one attempt's spend to the run (one write; the run must exist)."""
        self._update(run_pk(run_id), RUN_SK, Update(adds={"spent_nano": nano}), Cond(absent=False))

    def set_budget(self, run_id: str, budget_nano: int, now_ms: int) -> bool:
        """Raise (or set) the run's budget while it is not finished; False otherwise."""
        active = (RunStatus.RUNNING.value, RunStatus.WAITING.value)
        cond = Cond(absent=False, clauses=(("status", "in", active),))
        u = Update(sets={"budget_nano": budget_nano, "updated": now_ms})
        return self._update(run_pk(run_id), RUN_SK, u, cond)[0]

    def reserve_caller_day(self, owner: str, day: str, nano: int, limit_nano: int, now_ms: int) -> bool:
        """ADD ``nano`` to the caller's ``(owner, day)`` counter if it stays within ``limit_nano``
        (one conditional write: two concurrent starts cannot both pass); ``nano < 0`` refunds."""
        if nano > limit_nano:
            return False
        cond = Cond(absent=True, clauses=(("reserved_nano", "<", limit_nano - nano + 1),))
        u = Update(adds={"reserved_nano": nano}, inits={"owner": owner, "expires_at": now_ms // 1000 + 3 * 86_400})
        return self._update(caller_pk(owner), f"D#{day}", u, None if nano < 0 else cond)[0]

    def caller_day(self, owner: str, day: str) -> int:
        """What the caller's budgeted runs of ``day`` (UTC) reserved, nano-dollars."""
        item = self._get(caller_pk(owner), f"D#{day}")
        return 0 if item is None else int(item.get("reserved_nano", 0))

    def pause_for_budget(self, run_id: str, key: str, now_ms: int) -> bool:
        """RUNNING -> WAITING in its ``budget`` wait at node ``key``."""
        cond = Cond(absent=False, clauses=(("status", "=", RunStatus.RUNNING.value),))
        u = Update(sets={"status": RunStatus.WAITING.value, "current": key, "paused": PAUSED, "updated": now_ms})
        return self._update(run_pk(run_id), RUN_SK, u, cond)[0]

    def resume_from_budget(self, run_id: str, now_ms: int) -> bool:
        """WAITING in its ``budget`` wait -> RUNNING."""
        clauses = (("status", "=", RunStatus.WAITING.value), ("paused", "=", PAUSED))
        u = Update(sets={"status": RunStatus.RUNNING.value, "updated": now_ms}, removes=["paused"])
        return self._update(run_pk(run_id), RUN_SK, u, Cond(absent=False, clauses=clauses))[0]


__all__ = ["PAUSED", "BudgetOps", "RunBudget", "caller_pk"]
