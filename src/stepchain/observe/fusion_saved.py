"""What step fusion saved a run (issue 20, :mod:`stepchain.engine.fusion`), shown next to the restart tax.

A fused step (``NodeRecord.fused``) ran inline after its predecessor: no handoff and no claim write.
Per fused step that is the transport's delivery (SQS: SendMessage + ReceiveMessage + DeleteMessage;
Step Functions: one state transition; the run's transport read from what its other nodes recorded)
plus one Lambda invocation and one conditional write (1 WRU), priced with the run's price table.
The handoff time saved is the run's own measured handoff gap (a handed-off node's start less its
predecessor's end, the mean over the run's unfused successors) times the fused steps: 0 when the run
had no handoff to measure.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

from stepchain.observe.pricing import Prices
from stepchain.store.records import NodeRecord

#: what one handoff + claim costs, by the run's transport
SQS_HANDOFF = {"sqs_send": 1, "sqs_receive": 1, "sqs_delete": 1}
SFN_HANDOFF = {"sfn_transition": 1}
CLAIM = {"ddb_write": 1, "ddb_wru": 1, "lambda_invoke": 1}


def fusion_saved(records: list[NodeRecord], prices: Prices) -> dict[str, Any]:
    """``{"fused_steps", "requests", "usd", "handoff_s"}`` for the run whose node records these are."""
    tops = sorted((r for r in records if r.index is None and r.started_ms is not None), key=lambda r: r.started_ms or 0)
    fused = sum(1 for r in tops if r.fused)
    seen: Counter[str] = Counter()
    for r in records:
        seen.update(r.requests)
    per_step = {**CLAIM, **(SFN_HANDOFF if seen["sfn_transition"] else SQS_HANDOFF if seen["sqs_receive"] else {})}
    requests = {k: v * fused for k, v in per_step.items()}
    usd = sum(prices.cost(requests).values()) if fused else 0.0
    gaps = [
        (b.started_ms or 0) - (a.ended_ms or 0)
        for a, b in pairwise(tops)
        if not b.fused and a.ended_ms is not None and (b.started_ms or 0) >= a.ended_ms
    ]
    handoff_s = fused * (sum(gaps) / len(gaps)) / 1000 if gaps else 0.0
    return {"fused_steps": fused, "requests": requests, "usd": round(usd, 9), "handoff_s": round(handoff_s, 3)}


__all__ = ["fusion_saved"]
