"""An expense-approval loop (not the research or tool agent): a claim over 100 waits for a human's
``approval``; a rejection caps the amount and the revised claim is checked again in the next loop
iteration (``revise`` routes back to ``check``), so each iteration has its own approval wait
(``approve``, ``approve~00001``, ...). A claim of at most 100 is paid without approval (``check``
routes forward past the wait), and every paid claim waits for its ``receipt``.

Every step counts its completed executions in ``RAN`` ((run id, node key) -> count).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stepchain import Workflow, goto

RAN: Counter[tuple[str, str]] = Counter()

expense = Workflow("expense-approval", max_iterations=8)


@expense.step()
def submit(ctx: Any, amount: int) -> dict[str, Any]:
    RAN[(ctx.run_id, ctx.key)] += 1
    return {"amount": amount}


@expense.step(routes=("approve", "pay"))
def check(ctx: Any, claim: dict[str, Any]) -> Any:
    RAN[(ctx.run_id, ctx.key)] += 1
    if claim["amount"] <= 100:  # small claims need no approval
        return goto("pay", {"amount": claim["amount"], "approved_by": "auto", "at": ctx.key})
    return claim  # the chain's next node: the approval wait


expense.wait_for_event("approval", timeout_s=86_400, name="approve")


@expense.step(routes=("revise", "pay"))
def decide(ctx: Any, decision: dict[str, Any]) -> Any:
    RAN[(ctx.run_id, ctx.key)] += 1
    if decision["approved"]:
        return goto("pay", {"amount": decision["amount"], "approved_by": decision["by"], "at": ctx.key})
    return decision  # the chain's next node: revise


@expense.step(routes=("check",))
def revise(ctx: Any, decision: dict[str, Any]) -> Any:
    RAN[(ctx.run_id, ctx.key)] += 1
    return goto("check", {"amount": decision["cap"]})  # back: the next iteration checks it again


@expense.step()
def pay(ctx: Any, payment: dict[str, Any]) -> dict[str, Any]:
    RAN[(ctx.run_id, ctx.key)] += 1
    return payment


expense.wait_for_event("receipt", timeout_s=86_400)


@expense.step()
def file(ctx: Any, receipt: Any) -> dict[str, Any]:
    RAN[(ctx.run_id, ctx.key)] += 1
    return {"receipt": receipt, "filed": ctx.key}


#: a workflow without loops: its event has only iteration 0
single = Workflow("single-approval")


@single.step()
def ask(ctx: Any, x: Any) -> Any:
    return x


single.wait_for_event("approval", timeout_s=86_400)


@single.step()
def done(ctx: Any, decision: Any) -> Any:
    return {"decision": decision}


def counts(run_id: str) -> dict[str, int]:
    return {k: n for (r, k), n in RAN.items() if r == run_id}
