"""Admission of a step: ONE check before the user's function, after the claim (issue 19).

It combines the run's dollar budget (:mod:`stepchain.engine.budget`) and the step's concurrency and
rate limits (:mod:`stepchain.engine.limits`), in that order: a run paused for its budget takes no
slot and reserves no rate. :func:`gated` is the predicate other features ask (e.g. running a
successor inline: a gated step must go through its own activation, never be fused).
"""

from __future__ import annotations

from stepchain.define.context import CostMeter
from stepchain.define.workflow import Node, Workflow
from stepchain.engine import budget, limits
from stepchain.engine.limits import Attempt, Held
from stepchain.engine.nodes.scope import KindServices
from stepchain.handoff.messages import Outcome


def gated(wf: Workflow, node: Node) -> bool:
    """True when an activation of ``node`` is checked before it starts (a budget, or limits)."""
    return budget.limited(wf) or bool(limits.declared(wf, node))


def admit(a: Attempt) -> Held | Outcome | None:
    """None or :class:`Held` (give it to :func:`settle`): the step may start. An :class:`Outcome`: it
    does not (paused or failed for its budget, throttled by a limit); the node is written."""
    over = budget.check(a.w, a.wf, a.node, a.msg, a.key, a.rec)  # a budgeted run only: one read
    if over is not None:
        return over
    return limits.acquire(a)  # a limited step only


def settle(w: KindServices, held: Held | None, cost: CostMeter, exc: BaseException | None = None) -> None:
    """Right before the step's node write: release what :func:`admit` took, charge what the step used."""
    limits.release(w, held, cost, exc)


__all__ = ["Attempt", "admit", "gated", "settle"]
