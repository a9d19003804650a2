"""`make bench`, step fusion (issue 20, stepchain.engine.fusion): a 100-step chain of trivial steps served
by one function, fused (``Workflow(fuse=50)``, as `stepchain template` deploys it) and not, on the
moto-backed transports; and on the embedded runtime, the step-to-step gap beside the
ctx.each item gap, measured in one run.

Transports (SqsHarness: the deployed SQS worker on moto SQS, batch size 1, no heartbeat: steps <= 15 s;
SfnHarness: the generated state machine on moto's Step Functions): invocations, AWS requests per step
from the run's ledger (whole run / 100: the run's own start and end writes included), DynamoDB writes per
step as moto served them (UpdateItem + PutItem + TransactWriteItems), Step Functions transitions per step
from the execution history (StateEntered events: Tasks, the .fused Choices, the start Choice, the end),
and orchestration $ per million steps (DynamoDB units + SQS requests + transitions + Lambda requests).

Embedded runtime (stepchain.runtimes.local: moto's server on 127.0.0.1, one worker process, real time):
step gap = a step's start - its predecessor's end (node records), item gap = consecutive ctx.each items'
end times (their checkpoints); median over 40 of each, fused and unfused.

    .venv/bin/python bench/fusion_bench.py [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src")]

from stepchain import Workflow  # noqa: E402
from stepchain.engine.short_queues import ENV_QUEUE_VISIBILITY, queue_visibility_s  # noqa: E402
from stepchain.observe.pricing import load_prices  # noqa: E402
from stepchain.testing import Harness, LocalHarness, SfnHarness, SqsHarness  # noqa: E402

BEGIN, END = "<!-- fusion:begin -->", "<!-- fusion:end -->"
N = 100
CAP = 50
DDB_WRITES = ("dynamodb.UpdateItem", "dynamodb.PutItem", "dynamodb.TransactWriteItems", "dynamodb.DeleteItem")


def chain(name: str, fused: bool, n: int = N) -> Workflow:
    wf = Workflow(name, fuse=CAP if fused else False)
    for i in range(n):
        wf.step(name=f"s{i}", timeout_s=10)(lambda ctx, x: {"i": x["i"] + 1})
    return wf


def with_env(env: dict[str, str | None]) -> dict[str, str | None]:
    saved = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return saved


def transport_run(transport: str, fused: bool) -> dict[str, Any]:
    env: dict[str, str | None] = {ENV_QUEUE_VISIBILITY: None}
    if transport == "sqs":  # steps <= 15 s: the queue's own visibility, no heartbeat (as deployed)
        env[ENV_QUEUE_VISIBILITY] = str(queue_visibility_s(20 if fused else 10))
    saved = with_env(env)
    try:
        wf = chain(f"fz-{transport}-{int(fused)}", fused)
        h: Harness = SqsHarness(wf, batch_size=1) if transport == "sqs" else SfnHarness(wf)
        with h:
            rid = h.start(wf.name, {"i": 0})
            assert h.run(rid) == "SUCCEEDED" and h.output(rid) == {"i": N}
            view = h.view(rid)
            requests = Counter(view.totals["requests"])
            writes = sum(h.api_calls[k] for k in DDB_WRITES)
            entered = 0
            if isinstance(h, SfnHarness):
                entered = sum(1 for e in h.history(rid) if e["type"].endswith("StateEntered"))
            invocations = len(h.invocations)
            saved_view = view.fusion_saved
    finally:
        with_env(saved)
    if transport == "stepfunctions":  # the history is the truth for transitions (Choices included)
        requests["sfn_transition"] = entered
    prices = load_prices("us-east-1")
    usd_m = sum(prices.cost(dict(requests)).values()) / N * 1e6
    sqs = sum(requests[k] for k in ("sqs_send", "sqs_receive", "sqs_delete", "sqs_other"))
    aws = requests["ddb_read"] + requests["ddb_write"] + requests["s3_put"] + requests["s3_get"] + sqs
    return {
        "transport": transport,
        "fused": fused,
        "invocations": invocations,
        "aws_requests": aws / N,
        "sqs_requests": sqs / N,
        "ddb_writes_served": writes / N,
        "ddb_writes_ledger": requests["ddb_write"] / N,
        "transitions": entered / N,
        "usd_per_m": usd_m,
        "saved": saved_view,
    }


def embedded_gaps(fused: bool) -> dict[str, float]:
    spec, name = ("fusion_flow:fused", "fusion-gap-fused") if fused else ("fusion_flow:wf", "fusion-gap")
    with LocalHarness(spec, pythonpath=[str(HERE), str(ROOT / "src")], budget_ms=60_000) as h:
        rid = h.start(name, None)
        assert h.run(rid, timeout_s=300) == "SUCCEEDED"
        recs = sorted(
            (r for r in h.store.list_nodes(rid) if r.index is None and r.started_ms is not None),
            key=lambda r: r.started_ms or 0,
        )
        steps = [r for r in recs if r.node.startswith("s")]
        step_gaps = [(b.started_ms or 0) - (a.ended_ms or 0) for a, b in pairwise(recs)]
        each = sorted(h.store.list_each_all(rid).get("loop", []), key=lambda e: e.index)
        item_gaps = [b.ended_ms - a.ended_ms for a, b in pairwise(each)]
        fused_n = sum(1 for r in steps if r.fused)
    return {
        "step_gap_ms": statistics.median(step_gaps),
        "item_gap_ms": statistics.median(item_gaps),
        "fused_steps": fused_n,
        "steps": len(steps),
    }


def section() -> list[str]:
    rows = [
        f"{N}-step chain of trivial steps served by one function; fused: `Workflow(fuse={CAP})`.",
        "",
        "| transport | fusion | invocations | AWS requests / step | SQS requests / step | DynamoDB writes / step "
        "(served by moto) | SFN transitions / step (history) | orchestration $ / M steps | saved by fusion (ledger) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results = [transport_run(t, f) for t in ("sqs", "stepfunctions") for f in (False, True)]
    for r in results:
        s = r["saved"]
        rows.append(
            f"| {r['transport']} | {'on' if r['fused'] else 'off'} | {r['invocations']} | {r['aws_requests']:.2f} | "
            f"{r['sqs_requests']:.2f} | {r['ddb_writes_served']:.2f} | {r['transitions']:.2f} | "
            f"${r['usd_per_m']:.2f} | {s['fused_steps']} steps, ${s['usd']:.6f}, {s['handoff_s']:.3f} s |"
        )
    gaps = {f: embedded_gaps(f) for f in (False, True)}
    rows += [
        "",
        "Embedded runtime (one worker process, moto server on 127.0.0.1, real time), medians over 40 each, "
        "each pair measured in one run:",
        "",
        "| fusion | step-to-step gap | ctx.each item gap | ratio | steps fused |",
        "|---|---|---|---|---|",
    ]
    for f, g in gaps.items():
        rows.append(
            f"| {'on' if f else 'off'} | {g['step_gap_ms']:.1f} ms | {g['item_gap_ms']:.1f} ms | "
            f"{g['step_gap_ms'] / max(g['item_gap_ms'], 0.1):.2f}x | {g['fused_steps']} / {g['steps']} |"
        )
    rows += [
        "",
        "On LocalStack (one deployment, a fused and an unfused chain through API Gateway): "
        'bench/fusion_localstack.py, section "Step fusion on LocalStack".',
    ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    import datetime

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        "## Step fusion",
        "",
        f"Command: `.venv/bin/python bench/fusion_bench.py` (also run by `make bench`); {stamp}; 2-core shared "
        "machine.",
        "",
        *section(),
    ]
    text = "\n".join(body)
    print(text)
    path = Path(args.results)
    old = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


if __name__ == "__main__":
    main()
