"""What a fork costs (issue 18): fork a 3-step agent loop (think -> act -> check -> think ...) at
iteration k, on the real DynamoDB adapter (moto), and report the items copied, the DynamoDB requests
the fork made (one query of the source's node items, one transaction per 100 copies, the run's own
transaction, and the reads around them) and the wall time of the ``fork`` call. The copies are
bounded by what ran before the chosen node: 3 items per earlier iteration, never a payload.

``python bench/fork_bench.py`` prints the section (about 40 s; ``FORK_BENCH_ITERATIONS``: a longer
source loop). The request counts are what DynamoDB would serve; the wall times are moto's, whose
``TransactWriteItems`` deep-copies the whole table for its rollback (O(table) per transaction: 300
copies take ~20 s here), so they say nothing about DynamoDB's latency. Measured (2-core shared
machine, 101-iteration source): k=10: 30 copies, 4 requests; k=50: 150 copies, 5 requests; k=100:
300 copies, 6 requests (GetItem, Query, one TransactWriteItems per 100 copies plus the run's).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from stepchain import END, Workflow, goto
from stepchain.testing import Harness

ITERATIONS = int(os.environ.get("FORK_BENCH_ITERATIONS", "100"))
AT = tuple(k for k in (10, 10, 50, 100, 200, 400) if k <= ITERATIONS)  # the first call warms the client


def loop(iterations: int) -> Workflow:
    wf = Workflow("fork-bench", max_iterations=iterations + 2)

    @wf.step()
    def think(ctx: Any, n: int) -> int:
        return n + 1

    @wf.step()
    def act(ctx: Any, n: int) -> int:
        return n

    @wf.step(routes=("think", END))
    def check(ctx: Any, n: int) -> Any:
        return goto("think", n) if n <= iterations else goto(END, n)

    return wf


def main() -> None:
    with Harness(loop(ITERATIONS), backend="moto") as h:
        t0 = time.perf_counter()
        src = h.start("fork-bench", 0)
        assert h.run(src) == "SUCCEEDED"
        run_s = time.perf_counter() - t0
        rows = []
        for k in AT:
            before = Counter(h.api_calls)
            t = time.perf_counter()
            fid = h.fork(src, "think", iteration=k, input=0, replace_input=True)
            ms = (time.perf_counter() - t) * 1000
            calls = Counter(h.api_calls) - before
            copies = sum(1 for i in h.store.node_items(fid) if i.get("copied_from") == src)
            ddb = {op.split(".", 1)[1]: n for op, n in sorted(calls.items()) if op.startswith("dynamodb.")}
            detail = ", ".join(f"{o} {n}" for o, n in ddb.items())
            rows.append(f"| {k} | {copies} | {sum(ddb.values())} ({detail}) | {ms:.0f} ms |")
    source = f"the source: {ITERATIONS + 1} iterations, {run_s:.0f} s"
    print(f"## Fork a run at iteration k of a 3-step loop (moto DynamoDB; {source})\n")
    print("| k | items copied | DynamoDB requests | fork call |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
