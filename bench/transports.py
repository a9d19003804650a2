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

import os
from collections import Counter
from typing import Any

from stepchain import Workflow
from stepchain.engine.heartbeat import ENV_INTERVAL, ENV_VISIBILITY
from stepchain.engine.short_queues import DEFAULT_VISIBILITY_S, ENV_QUEUE_VISIBILITY, queue_visibility_s
from stepchain.observe.pricing import load_prices
from stepchain.testing import Harness, SfnHarness, SqsHarness

#: AWS Lambda durable functions: $8 per million durable operations (one step = one operation)
DURABLE_USD_PER_M_STEPS = 8.0
#: Step Functions Standard used directly: $25 per million state transitions (one Task per step)
SFN_STANDARD_USD_PER_M = 25.0
TARGETS = {"sqs": 2.7, "stepfunctions": 27.0}
DDB_OPS = ("GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchGetItem")


#: the SQS rows: (label, step timeout_s, queue visibility Q given to the worker or None); the worker runs
#: as deployed (heartbeat="env", V = 20 s, H = 5 s, stepchain.engine.heartbeat.sqs_policy_from_env)
SQS_KINDS = (
    ("sqs (timeout <= 15 s: no heartbeat)", 10, queue_visibility_s(10)),
    ("sqs (longer steps: heartbeat)", 60, None),
)
DEPLOYED = {ENV_VISIBILITY: str(DEFAULT_VISIBILITY_S), ENV_INTERVAL: "5"}


def chain(name: str, n: int, timeout_s: int = 60) -> Workflow:
    wf = Workflow(name)
    for i in range(n):
        wf.step(name=f"s{i}", timeout_s=timeout_s)(lambda ctx, x: {"i": x["i"] + 1})
    return wf


def one_run(transport: str, n: int, timeout_s: int = 60, queue_visibility: int | None = None) -> dict[str, Any]:
    wf = chain(f"bench-{transport}-{n}", n, timeout_s)
    env = {**DEPLOYED, **({ENV_QUEUE_VISIBILITY: str(queue_visibility)} if queue_visibility else {})}
    saved = {k: os.environ.pop(k, None) for k in (*DEPLOYED, ENV_QUEUE_VISIBILITY)}
    os.environ.update(env if transport == "sqs" else {})
    try:
        harness: Harness = SqsHarness(wf, batch_size=1, heartbeat="env") if transport == "sqs" else SfnHarness(wf)
        with harness as h:
            run_id = h.start(wf.name, {"i": 0})
            assert h.run(run_id) == "SUCCEEDED"
            served_ddb = sum(v for k, v in h.api_calls.items() if k.split(".")[0] == "dynamodb")
            entered = 0
            if isinstance(h, SfnHarness):
                entered = sum(1 for e in h.history(run_id) if e["type"].endswith("StateEntered"))
            requests = Counter(h.view(run_id).totals["requests"])
            # the heartbeat's ChangeMessageVisibilityBatch (at receipt, and per beat; its own thread) reaches
            # the ledger through the claiming activation's node writes: checked against what moto served
            served_cmvb = h.api_calls["sqs.ChangeMessageVisibilityBatch"]
            assert requests["sqs_other"] == served_cmvb, (requests["sqs_other"], served_cmvb)
    finally:
        for k, old in saved.items():
            os.environ.pop(k, None)
            if old is not None:
                os.environ[k] = old
    return {"requests": requests, "served_ddb": served_ddb, "entered": entered}


def per_step(
    transport: str, n1: int, n2: int, timeout_s: int = 60, queue_visibility: int | None = None
) -> dict[str, Any]:
    a = one_run(transport, n1, timeout_s, queue_visibility)
    b = one_run(transport, n2, timeout_s, queue_visibility)
    steps = n2 - n1
    rq = {k: (b["requests"][k] - a["requests"][k]) / steps for k in b["requests"]}
    overhead = {k: a["requests"][k] - rq[k] * n1 for k in a["requests"]}
    prices = load_prices("us-east-1")
    usd_m = sum(prices.cost({k: v for k, v in rq.items()}).values()) * 1e6  # Lambda's request charge included
    ddb_calls = rq.get("ddb_read", 0) + rq.get("ddb_write", 0)
    sqs_keys = ("sqs_send", "sqs_receive", "sqs_delete", "sqs_other")
    aws_requests = ddb_calls + sum(rq.get(k, 0) for k in ("s3_put", "s3_get", *sqs_keys))
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
    results = [{**per_step("sqs", n1, n2, t, q), "label": label} for label, t, q in SQS_KINDS]
    results.append({**per_step("stepfunctions", n1, n2), "label": "stepfunctions"})
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
            f"| {r['label']} | {r['aws_requests']:.2f} | {r['ddb_calls']:.2f} ({served}) | "
            f"{r['transitions']:.2f} ({r['history_transitions']:.2f}) | ${r['usd_per_m']:.2f} | "
            f"<= ${TARGETS[t]:g} | ${DURABLE_USD_PER_M_STEPS:g} | ${SFN_STANDARD_USD_PER_M:g} | "
            "see *Kill -> resume* (bench/kill_resume.py) |"
        )
    return rows, results


__all__ = ["table"]
