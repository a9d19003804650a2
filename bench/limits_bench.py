"""What concurrency and rate limits cost per step (issue 19): the DynamoDB requests and their dollars of
one limited step against the same step without limits, on the real DynamoDB adapter (moto), counted on
the client. Uncontended (limits set high enough never to hold a step back): the marginal step of a 12-step chain
less a 2-step chain, over 10 steps.
Contended: 20 runs of one step on a key whose limit holds them back (each throttled wake is one more
activation: its claim, its try, its RETRYING write, and its delivery).

``python bench/limits_bench.py`` prints the figures.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from stepchain import Workflow
from stepchain.define.flow import Concurrency, Limit, RateLimit
from stepchain.engine import limits as engine_limits
from stepchain.observe.pricing import load_prices
from stepchain.testing import Harness

KINDS: dict[str, tuple[Limit, ...]] = {
    "no limits": (),
    "Concurrency(10)": (Concurrency(10, name="c"),),
    "RateLimit(requests)": (RateLimit(1_000_000, per_s=1, name="r"),),
    "RateLimit(tokens, estimate = usage)": (RateLimit(10**9, per_s=60, unit="tokens", estimate=100, name="t"),),
    "RateLimit(tokens, no estimate)": (RateLimit(10**9, per_s=60, unit="tokens", name="t0"),),
    "Concurrency + RPM + TPM": (
        Concurrency(10, name="c3"),
        RateLimit(10**6, per_s=60, name="r3"),
        RateLimit(10**9, per_s=60, unit="tokens", estimate=100, name="t3"),
    ),
    "Concurrency + RPM + TPM, no estimate": (
        Concurrency(10, name="c4"),
        RateLimit(10**6, per_s=60, name="r4"),
        RateLimit(10**9, per_s=60, unit="tokens", name="t4"),
    ),
}


def chain(n: int, label: str, limits: tuple[Limit, ...]) -> Workflow:
    wf = Workflow(f"chain-{n}-{abs(hash(label)) % 10**6}")
    for i in range(n):

        def step(ctx: Any, x: int) -> int:
            ctx.record_cost(input_tokens=60, output_tokens=40)
            return x + 1

        wf.step(name=f"s{i}", limits=limits)(step)
    return wf


#: items written in transactions (each costs two write units), counted beside the client's calls
TX_ITEMS = "items in transactions"


def count_tx_items(h: Harness) -> Counter[str]:
    """Wrap the store's transaction primitive to count the items each transaction writes."""
    items: Counter[str] = Counter()
    transact = h.store._transact

    def counted(writes: Any) -> Any:
        items[TX_ITEMS] += len(writes)
        return transact(writes)

    h.store._transact = counted  # type: ignore[method-assign]
    return items


def calls(wf: Workflow, runs: int = 1) -> Counter[str]:
    engine_limits._seen.clear()  # a new table: the process's guesses of its buckets start empty
    with Harness(wf, backend="moto") as h:
        items = count_tx_items(h)
        ids = [h.start(wf.name, 0) for _ in range(runs)]
        h.run()
        assert all(h.status(r) == "SUCCEEDED" for r in ids)
        return Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")}) + items


def usd(prices: Any, c: Counter[str]) -> float:
    """DynamoDB on-demand: a write request unit per written item (two in a transaction), a read unit
    per read (items < 1 KB)."""
    writes = sum(v for k, v in c.items() if k.split(".")[-1] in ("UpdateItem", "PutItem", "DeleteItem"))
    writes += 2 * c[TX_ITEMS]
    reads = sum(v for k, v in c.items() if k.split(".")[-1] in ("GetItem", "Query"))
    return float(sum(v for k, v in prices.cost({"ddb_wru": writes, "ddb_rru": reads}).items()))


def request_count(c: Counter[str]) -> float:
    return float(sum(v for k, v in c.items() if k != TX_ITEMS))


def main() -> None:
    prices = load_prices()
    t = time.perf_counter()
    print("## Concurrency and rate limits: DynamoDB calls and dollars per step (moto DynamoDB)\n")
    print("| step declares | DynamoDB calls / step | by operation | DynamoDB $ / step | extra calls |")
    print("|---|---|---|---|---|")
    base = 0.0
    for label, limits in KINDS.items():
        c2, c12 = calls(chain(2, label, limits)), calls(chain(12, label, limits))
        per = {k: (c12[k] - c2[k]) / 10 for k in c12 | c2 if c12[k] != c2[k]}
        n = request_count(Counter(per))
        base = n if not limits else base
        cost = usd(prices, Counter({k: round(v * 10) for k, v in per.items()})) / 10
        print(f"| {label} | {n:g} | {dict(sorted(per.items()))} | {cost:.9f} | {n - base:+g} |")
    print("\n### Contended: 20 runs of one step at once\n")
    print("| key | activations / step | DynamoDB calls / step | DynamoDB $ / step | calls / throttled wake |")
    print("|---|---|---|---|---|")
    for label, lim, held_s in (
        ("RateLimit(60/min): FIFO reservations", RateLimit(60, per_s=60, name="rc"), 0),
        ("RateLimit(6000 tokens/min), no estimate", RateLimit(6000, per_s=60, unit="tokens", name="tc"), 0),
        ("Concurrency(3) held elsewhere 10 s, poll_s=1", Concurrency(3, name="cc", poll_s=1), 10),
    ):
        wf = Workflow(f"contended-{abs(hash(label)) % 10**6}")

        def fast(ctx: Any, x: int) -> int:
            ctx.record_cost(input_tokens=60, output_tokens=40)
            return x

        wf.step(name="call", limits=lim)(fast)
        alone = request_count(calls(wf))  # one run, nothing held: its calls without a throttled wake
        with Harness(wf, backend="moto") as h:
            items = count_tx_items(h)
            now = h.clock.now_ms()
            for i in range(3 if held_s else 0):  # live holders of another deployment sharing the key
                h.store.acquire_slot("LIMIT#cc#*", f"elsewhere-{i}", 3, now + held_s * 1000, now)
            h.api_calls.clear()
            ids = [h.start(wf.name, i) for i in range(20)]
            h.run()
            assert all(h.status(r) == "SUCCEEDED" for r in ids)
            c = Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")}) + items
            wakes = len(h.invocations) - 20
        per_wake = (request_count(c) - 20 * alone) / wakes if wakes else 0.0
        row = f"| {label} | {1 + wakes / 20:.2f} | {request_count(c) / 20:.1f} | {usd(prices, c) / 20:.9f}"
        print(f"{row} | {per_wake:.1f} |")
    print(f"\n({prices.region} on-demand prices; {time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
