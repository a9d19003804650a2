"""`make bench`, per transport: AWS requests and state transitions per step, orchestration $ per million steps.

Each transport runs a chain of trivial steps on moto (SqsHarness: real SQS queues, the deployed SQS
worker, batch size 1; SfnHarness: the generated state machine executed by moto's Step Functions,
each task served by the deployed worker) twice, with N1 and N2 steps; per-step figures are the
difference divided by N2 - N1, so the per-run requests (start transaction, final write, the
execution's first and last states) do not blur them; the per-run overhead is reported apart.

Counts come from the run's ledger (stepchain.requests: DynamoDB and S3 counted from the SDK's calls,
SQS send/receive/delete and Lambda invocations one per message, Step Functions transitions one per
task plus the rarer paths) and are checked against what moto served: DynamoDB calls against the
harness's call counter, transitions against the execution history (StateEntered events).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stepchain import Workflow
from stepchain.pricing import load_prices
from stepchain.testing import Harness, SfnHarness, SqsHarness

#: AWS Lambda durable functions: $8 per million durable operations (one step = one operation)
DURABLE_USD_PER_M_STEPS = 8.0
#: Step Functions Standard used directly: $25 per million state transitions (one Task per step)
SFN_STANDARD_USD_PER_M = 25.0
TARGETS = {"sqs": 2.7, "stepfunctions": 27.0}
DDB_OPS = ("GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchGetItem")


def chain(name: str, n: int) -> Workflow:
    wf = Workflow(name)
    for i in range(n):
        wf.step(name=f"s{i}")(lambda ctx, x: {"i": x["i"] + 1})
    return wf


def one_run(transport: str, n: int) -> dict[str, Any]:
    wf = chain(f"bench-{transport}-{n}", n)
    harness: Harness = SqsHarness(wf, batch_size=1) if transport == "sqs" else SfnHarness(wf)
    with harness as h:
        run_id = h.start(wf.name, {"i": 0})
        assert h.run(run_id) == "SUCCEEDED"
        served_ddb = sum(v for k, v in h.api_calls.items() if k.split(".")[0] == "dynamodb")
        entered = 0
        if isinstance(h, SfnHarness):
            entered = sum(1 for e in h.history(run_id) if e["type"].endswith("StateEntered"))
        requests = Counter(h.view(run_id).totals["requests"])
    return {"requests": requests, "served_ddb": served_ddb, "entered": entered}


def per_step(transport: str, n1: int, n2: int) -> dict[str, Any]:
    a, b = one_run(transport, n1), one_run(transport, n2)
    steps = n2 - n1
    rq = {k: (b["requests"][k] - a["requests"][k]) / steps for k in b["requests"]}
    overhead = {k: a["requests"][k] - rq[k] * n1 for k in a["requests"]}
    prices = load_prices("us-east-1")
    usd_m = sum(prices.cost({k: v for k, v in rq.items()}).values()) * 1e6  # Lambda's request charge included
    ddb_calls = rq.get("ddb_read", 0) + rq.get("ddb_write", 0)
    aws_requests = ddb_calls + sum(rq.get(k, 0) for k in ("s3_put", "s3_get", "sqs_send", "sqs_receive", "sqs_delete"))
    return {
        "transport": transport,
        "per_step": rq,
        "overhead": {k: round(v, 3) for k, v in overhead.items() if abs(v) > 1e-9},
        "ddb_calls": ddb_calls,
        "aws_requests": aws_requests,
        "transitions": rq.get("sfn_transition", 0.0),
        "history_transitions": (b["entered"] - a["entered"]) / steps,
        "served_ddb_per_step": (b["served_ddb"] - a["served_ddb"]) / steps,
        "usd_per_m": usd_m,
        "by_service": {k: v * 1e6 for k, v in prices.cost(rq).items()},  # type: ignore[arg-type]
    }


def table(n1: int = 5, n2: int = 25) -> tuple[list[str], list[dict[str, Any]]]:
    results = [per_step(t, n1, n2) for t in ("sqs", "stepfunctions")]
    rows = [
        "| transport | AWS requests / step | of which DynamoDB (served by moto) | state transitions / step "
        "(history) | orchestration $ / M steps | target | AWS Lambda durable functions | Step Functions Standard "
        "| kill -> resume |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["transport"]
        # SfnHarness's own polling reads the store too: its served count is no check there (history is)
        served = f"{r['served_ddb_per_step']:.2f}" if t == "sqs" else "-"
        rows.append(
            f"| {t} | {r['aws_requests']:.2f} | {r['ddb_calls']:.2f} ({served}) | "
            f"{r['transitions']:.2f} ({r['history_transitions']:.2f}) | ${r['usd_per_m']:.2f} | "
            f"<= ${TARGETS[t]:g} | ${DURABLE_USD_PER_M_STEPS:g} | ${SFN_STANDARD_USD_PER_M:g} | "
            "see *Kill -> resume* (bench/kill_resume.py) |"
        )
    return rows, results


__all__ = ["table"]
