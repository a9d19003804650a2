"""Dollar budgets per run (issue 19, first slice): checked before a step starts.

A workflow with ``Workflow(budget_usd=...)`` is *limited*: every run of it carries ``budget_nano``
on its RUN item (the workflow's, or the start's override) and ``spent_nano``. For a step of a
limited run the worker makes two extra store calls per activation, none for other runs:

1. before the user's function, after the claim: read the RUN item (``run_budget``); if
   ``spent + the step's estimate_usd > budget`` the step does not start: with ``on_budget="pause"``
   the node goes RETRYING (its attempt not counted) and the run WAITING in its ``budget`` wait,
   re-checked every :data:`RECHECK_S` (any transport's delayed wake, a Step Functions Wait state)
   or at once by :meth:`~stepchain.engine.runs.RunService.raise_budget`; with ``"fail"`` the run
   fails (``BudgetExceeded``).
2. after the function returned or raised, BEFORE the attempt's node write: ADD what the attempt
   spent (its LLM cost from ``ctx.cost`` + its Lambda compute) to ``spent_nano``.

Crash semantics: a crash after the ADD and before the node write counts that attempt, and its
rerun counts again: over-counted, so the run pauses early, never late. A crash after the function
and before the ADD loses that attempt's spend (the node's ledger loses it too): at most one
attempt's spend is uncounted per crash. A run therefore spends at most ``budget`` + one step's
actual spend past its last check; with estimates that hold, ``budget + one step's estimate``.
Two steps running at once (map items, parallel children) each check alone: not covered yet.
"""

from __future__ import annotations

import time
from typing import Any

from stepchain.define.context import CostMeter
from stepchain.define.workflow import Node, Workflow
from stepchain.engine.nodes.scope import KindServices
from stepchain.exceptions import BudgetExceeded, BudgetNotDeclared, ValidationError
from stepchain.handoff.base import RECHECK
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.observe.ledger import compute_usd
from stepchain.store.changes import NodeChanges
from stepchain.store.records import NodeRecord, NodeStatus, RunRecord

#: how often a run paused in its budget wait re-checks its budget (seconds)
RECHECK_S = 300
NANO = 1_000_000_000


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def limited(wf: Workflow) -> bool:
    return wf.budget_usd is not None


def check(w: KindServices, wf: Workflow, node: Node, msg: Activation, key: str, rec: NodeRecord) -> Outcome | None:
    """None: the step may start. Else the outcome to report (paused, or the run failed)."""
    if not limited(wf):
        return None
    now = w.clock.now_ms()
    b = w.store.run_budget(msg.run_id)
    if b is None or b.budget_nano is None:
        return None
    estimate = to_nano(node.estimate_usd)
    if b.spent_nano + estimate <= b.budget_nano:
        if b.paused:  # back from the budget wait (a raised budget)
            w.store.resume_from_budget(msg.run_id, now)
        return None
    err = {
        "node": key,
        "type": "BudgetExceeded",
        "message": (
            f"spent ${b.spent_nano / NANO:.6f} + estimate ${estimate / NANO:.6f} > budget ${b.budget_nano / NANO:.6f}"
        ),
    }
    if wf.on_budget == "fail":
        w.fail(msg, key, err, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), owner=rec.owner)
        return Outcome(OutcomeKind.FAILED, error=err)
    wake = now + RECHECK_S * 1000
    # no wake_at on the node: a held step may be claimed at any time (its claim re-checks the budget;
    # a RETRYING node with a wake_at is claimed only from then on, see CheckpointStore.claim)
    changes = NodeChanges(NodeStatus.RETRYING, now, error=err)
    w.store.finish(msg.run_id, key, changes, owner=rec.owner)
    if not b.paused:
        w.store.pause_for_budget(msg.run_id, key, now)
    return Outcome(OutcomeKind.WAIT, wake_at_ms=wake, error=err, detail=RECHECK)


def _valid(usd: Any) -> float:
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not 0 <= usd < 1e9:
        raise ValidationError("budget_usd must be a number of dollars, 0 <= budget_usd < 1e9")
    return float(usd)


def start_fields(wf: Workflow, budget_usd: float | None) -> dict[str, Any]:
    """The RUN item's budget field at the start (the workflow's budget, or the start's override)."""
    if budget_usd is not None and not limited(wf):
        raise BudgetNotDeclared(f"workflow {wf.name!r} declares no budget_usd: a run of it cannot have one")
    usd = wf.budget_usd if budget_usd is None else _valid(budget_usd)
    return {} if usd is None else {"budget_nano": to_nano(usd)}


def reserve(w: KindServices, wf: Workflow, owner: str | None, extra: dict[str, Any]) -> str | None:
    """At a budgeted run's start: reserve its budget on its caller's daily counter (one conditional
    write) when the deployment sets ``STEPCHAIN_CALLER_DAILY_BUDGET_USD``; returns the day reserved
    on (None: nothing reserved). Raises :class:`~stepchain.exceptions.BudgetExceeded` when full.
    Before the run is created: a crash after it, or a retried start, reserves too much, never too little."""
    limit = w.limits.caller_daily_budget_usd
    if owner is None or limit is None or "budget_nano" not in extra:
        return None
    now = w.clock.now_ms()
    day = time.strftime("%Y-%m-%d", time.gmtime(now // 1000))
    if not w.store.reserve_caller_day(owner, day, extra["budget_nano"], to_nano(limit), now):
        raise BudgetExceeded(
            f"caller {owner!r} has no room today for a run of ${extra['budget_nano'] / NANO:.6f} "
            f"in its daily budget of ${limit:.6f} (STEPCHAIN_CALLER_DAILY_BUDGET_USD)"
        )
    return day


def set_budget(w: KindServices, run: RunRecord, budget_usd: float) -> bool:
    """Raise (or lower) a budgeted run's budget; False: the run has no budget or is finished."""
    usd = _valid(budget_usd)
    if not limited(w.registry.get(run.workflow, run.version)):
        return False
    return w.store.set_budget(run.run_id, to_nano(usd), w.clock.now_ms())


def spend(w: KindServices, wf: Workflow, node: Node, run_id: str, t0: float, cost: CostMeter) -> None:
    """ADD one attempt's spend (LLM + compute) to the run, before the attempt's node write."""
    if not limited(wf):
        return
    ms = max(0, int(w.clock.monotonic_ms() - t0))
    w.store.add_spent(run_id, cost.usd_nano + to_nano(compute_usd(ms, 1, node.memory_mb)))


__all__ = ["NANO", "RECHECK_S", "check", "limited", "reserve", "set_budget", "spend", "start_fields", "to_nano"]
