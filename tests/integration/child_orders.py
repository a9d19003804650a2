"""An order workflow that delegates (for tests/integration/test_child_workflows.py), unlike the
research agent: ``orders`` prices an order, calls the ``charge`` workflow as a child run, then runs
``inventory``, ``shipping`` and ``email`` as parallel branches, and confirms.

Every step counts its executions in ``COUNTS`` (by workflow/step) and records LLM-like cost, so a
test checks "each child started once" from the workflows' own side and the cost roll-up."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stepchain import RetryPolicy, StepContext, TerminalError, Workflow

COUNTS: Counter[str] = Counter()
#: branches that fail (a test sets them): "inventory" -> raise TerminalError there
FAILING: set[str] = set()
ONCE = RetryPolicy(max_attempts=10, backoff_s=1.0)
#: order id -> how many times its card was charged (the effect a child run must not repeat)
BANK: dict[str, int] = {}


def _charge(order: str, amount: int) -> int:
    BANK[order] = BANK.get(order, 0) + 1
    return amount


def reset() -> None:
    COUNTS.clear()
    FAILING.clear()
    BANK.clear()


def charge_wf() -> Workflow:
    wf = Workflow("charge")

    @wf.step(retry=ONCE)
    def authorize(ctx: StepContext, order: dict[str, Any]) -> dict[str, Any]:
        COUNTS["charge/authorize"] += 1
        ctx.record_cost(usd=0.01, input_tokens=100, output_tokens=10)
        return {"order": order["id"], "amount": order["total"]}

    @wf.step(retry=ONCE)
    def capture(ctx: StepContext, auth: dict[str, Any]) -> dict[str, Any]:
        COUNTS["charge/capture"] += 1
        if "charge" in FAILING:
            raise TerminalError("card declined")
        charged = ctx.once("charge", lambda: _charge(auth["order"], auth["amount"]))
        return {"charged": charged, "receipt": f"r-{auth['order']}"}

    return wf


def branch_wf(name: str, nap_s: int = 0) -> Workflow:
    wf = Workflow(name)
    if nap_s:
        wf.sleep(nap_s, name="nap")

    @wf.step(name="work", retry=ONCE)
    def work(ctx: StepContext, order: dict[str, Any]) -> dict[str, Any]:
        COUNTS[f"{name}/work"] += 1
        ctx.record_cost(usd=0.002, input_tokens=20, output_tokens=2)
        if name in FAILING:
            raise TerminalError(f"{name} is down")
        return {name: f"{name}-ok-{order['id']}"}

    return wf


def orders_wf(on_error: str = "fail", name: str = "orders", nap_s: int = 0) -> Workflow:
    """``nap_s``: the shipping and email branches sleep that long before their work."""
    charge = charge_wf()
    wf = Workflow(name)

    @wf.step(retry=ONCE)
    def price(ctx: StepContext, order: dict[str, Any]) -> dict[str, Any]:
        COUNTS[f"{name}/price"] += 1
        return {**order, "total": sum(order["lines"])}

    wf.call(charge, name="pay")

    @wf.step(retry=ONCE)
    def fulfil_input(ctx: StepContext, paid: dict[str, Any]) -> dict[str, Any]:
        COUNTS[f"{name}/fulfil_input"] += 1
        return {"id": paid["receipt"].removeprefix("r-"), "charged": paid["charged"]}

    wf.parallel(
        {
            "inventory": branch_wf("inventory"),
            "shipping": branch_wf("shipping", nap_s),
            "email": branch_wf("email", nap_s),
        },
        name="fulfil",
        on_error=on_error,
    )

    @wf.step(retry=ONCE)
    def confirm(ctx: StepContext, done: dict[str, Any]) -> dict[str, Any]:
        COUNTS[f"{name}/confirm"] += 1
        return {"status": "confirmed", "branches": done}

    return wf


def expected(order: dict[str, Any]) -> dict[str, Any]:
    oid = order["id"]
    return {
        "status": "confirmed",
        "branches": {
            "inventory": {"inventory": f"inventory-ok-{oid}"},
            "shipping": {"shipping": f"shipping-ok-{oid}"},
            "email": {"email": f"email-ok-{oid}"},
        },
    }
