"""What a dollar budget costs per step (issue 19): the DynamoDB requests and their dollars of one
step of a budgeted workflow against the same step without a budget, on the real DynamoDB adapter
(moto), counted on the client as the ledger counts them. The marginal step: a 12-step chain less a
2-step chain, over 10 steps (the run's own start and end cancel out).

``python bench/budget_bench.py`` prints the figures.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stepchain import Workflow
from stepchain.observe.pricing import load_prices
from stepchain.testing import Harness


def chain(n: int, budget_usd: float | None) -> Workflow:
    wf = Workflow(f"chain-{n}-{'b' if budget_usd else 'u'}", budget_usd=budget_usd)
    for i in range(n):

        def step(ctx: Any, x: int) -> int:
            ctx.record_cost(usd=0.001)
            return x + 1

        wf.step(name=f"s{i}", estimate_usd=0.002)(step)
    return wf


def measure(n: int, budget_usd: float | None) -> tuple[Counter[str], Counter[str]]:
    wf = chain(n, budget_usd)
    with Harness(wf, backend="moto") as h:
        rid = h.start(wf.name, 0)
        assert h.run(rid) == "SUCCEEDED"
        calls = Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")})
        return calls, Counter(h.view(rid).totals["requests"])


def per_step(budget_usd: float | None) -> tuple[dict[str, float], dict[str, float]]:
    (c2, r2), (c12, r12) = measure(2, budget_usd), measure(12, budget_usd)
    calls = {k: (c12[k] - c2[k]) / 10 for k in c12 | c2 if c12[k] != c2[k]}
    reqs = {k: (r12[k] - r2[k]) / 10 for k in r12 | r2 if r12[k] != r2[k]}
    return calls, reqs


def main() -> None:
    prices = load_prices()
    rows = []
    for label, budget in (("no budget", None), ("budget_usd=1.0", 1.0)):
        calls, reqs = per_step(budget)
        usd = sum(v for k, v in prices.cost({k: round(v * 10) for k, v in reqs.items()}).items() if k != "lambda") / 10
        rows.append((label, sum(calls.values()), calls, usd))
    print("## Dollar budgets: DynamoDB calls and dollars per step (moto DynamoDB, marginal step)\n")
    print("| workflow | DynamoDB calls / step | by operation | orchestration $ / step |")
    print("|---|---|---|---|")
    for label, n, calls, usd in rows:
        print(f"| {label} | {n:g} | {dict(sorted(calls.items()))} | {usd:.9f} |")
    extra = rows[1][1] - rows[0][1]
    print(f"\nextra per budgeted step: {extra:g} DynamoDB calls, ${rows[1][3] - rows[0][3]:.9f} ({prices.region})")


if __name__ == "__main__":
    main()
