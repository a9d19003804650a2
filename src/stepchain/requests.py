"""What durability itself cost: the AWS requests the engine makes, per run and per service.

Counted (botocore ``after-call`` events on the clients the adapters use, :func:`instrument`):
DynamoDB read and write requests, S3 PUT/GET, SQS calls other than SendMessage (made on
the activation's thread), Step Functions API calls; requests made for an activation on another
thread (the SQS heartbeat's visibility changes and lease writes) are counted by their maker and
handed over with :func:`attach`. Estimated: DynamoDB request units (write:
the size of the key and values it sends per KB, at least 1, x2 in a transaction; read: the
response's size per 4 KB, at least 1, i.e. strongly consistent; the real units depend on the
whole item), and the delivery of
each activation, added once per activation by :func:`metering` from its transport
(:attr:`stepchain.handoff.base.Handoff.delivery`): SQS 1 SendMessage (by the sender) + the 1
ReceiveMessage and 1 DeleteMessage Lambda's event source makes per message (batches of one;
empty long polls of an idle queue belong to no run), 1 Lambda invocation; Step Functions 1 state
transition (the node's Task) and 1 Lambda invocation. Step Functions' extra transitions come with
the node write that caused them (a retry or sleep: wake + Wait, 2; a continuation: 1).

How counts reach the ledger without an extra write: while an activation is served
(:func:`metering`), counts accumulate in a per-thread meter; the node write the engine makes
anyway (checkpoint, continue, retry, fail: every :class:`~stepchain.store.base.NodeChanges`) takes
them, plus itself (one write), and ADDs them to the node item as ``rq_<counter>``. Requests after
an activation's last node write (its handoff, the run's final write) are not on any node: the
run's start transaction and final write are added per run by the ledger (estimated); the
handoff's SendMessage is the next activation's delivery. A write that loses its condition (lease
lost) loses its counts. So the figures are a close lower bound of what a run made, not a bill.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

C = TypeVar("C")

#: counter names (stored as ``rq_<name>`` on node items)
COUNTERS = (
    "ddb_read",
    "ddb_write",
    "ddb_rru",
    "ddb_wru",
    "s3_put",
    "s3_get",
    "sqs_send",
    "sqs_receive",
    "sqs_delete",
    "sqs_other",
    "sfn_request",
    "sfn_transition",
    "lambda_invoke",
)
STORED_PREFIX = "rq_"

DDB_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
DDB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})

#: Step Functions transitions a node write adds beyond its Task, by the node's new status
SFN_EXTRA_TRANSITIONS = {"RETRYING": 2, "SLEEPING": 2, "CONTINUING": 1}


class Meter:
    """The counts of one activation, until a node write takes them."""

    def __init__(self, delivery: Mapping[str, int]) -> None:
        self.counts: Counter[str] = Counter(delivery)
        self.sfn = bool(delivery.get("sfn_transition"))
        self.dynamodb = False  # the store is DynamoDB (a call was seen): a node write counts itself
        self.self_counted = 0  # node writes counted ahead of their own after-call
        self.sources: list[Callable[[], Mapping[str, int]]] = []  # requests made on other threads

    def take(self, status: str) -> dict[str, int]:
        """The counts for the node write about to be made (itself included); the meter restarts."""
        for source in self.sources:
            self.counts.update(source())
        if self.dynamodb:
            self.counts["ddb_write"] += 1
            self.counts["ddb_wru"] += 1
            self.self_counted += 1
        if self.sfn:
            self.counts["sfn_transition"] += SFN_EXTRA_TRANSITIONS.get(status, 0)
        out = {k: v for k, v in self.counts.items() if v}
        self.counts.clear()
        return out


_METER: ContextVar[Meter | None] = ContextVar("stepchain_meter", default=None)


@contextmanager
def metering(delivery: Mapping[str, int] = {}) -> Iterator[Meter]:
    """Count this thread's requests while one activation is served (``serve`` wraps ``process``)."""
    meter = Meter(delivery)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def attach(source: Callable[[], Mapping[str, int]]) -> None:
    """Let this activation's node writes also take what ``source`` returns (and resets): requests made
    for it on another thread (the SQS heartbeat's visibility changes and lease writes)."""
    meter = _METER.get()
    if meter is not None and source not in meter.sources:
        meter.sources.append(source)


def metered() -> bool:
    """True while this thread's requests are counted (inside :func:`metering`)."""
    return _METER.get() is not None


def take_for_node_write(status: str) -> dict[str, int]:
    """The counts a node write stores (empty outside :func:`metering`)."""
    meter = _METER.get()
    return {} if meter is None else meter.take(status)


def _record(service: str, op: str, sent: list[int], received: int) -> None:
    meter = _METER.get()
    if meter is None:
        return
    c = meter.counts
    if service == "dynamodb":
        meter.dynamodb = True
        if op in DDB_WRITES:
            units = sum(max(1, math.ceil(b / 1024)) for b in sent or [0]) * (2 if op.startswith("Transact") else 1)
            if meter.self_counted:  # counted (1 request, 1 unit) by the node write that carried it
                meter.self_counted -= 1
                c["ddb_wru"] += units - 1
            else:
                c["ddb_write"] += 1
                c["ddb_wru"] += units
        elif op in DDB_READS:
            c["ddb_read"] += 1
            c["ddb_rru"] += max(1, math.ceil(received / 4096))
    elif service == "s3":
        if op == "PutObject":
            c["s3_put"] += 1
        elif op in ("GetObject", "HeadObject"):
            c["s3_get"] += 1
    elif service == "sqs":
        if not op.startswith("SendMessage"):  # a send is its receiver's delivery
            name = "sqs_receive" if op == "ReceiveMessage" else "sqs_delete" if op.startswith("Delete") else "sqs_other"
            c[name] += 1
    elif service == "sfn":
        c["sfn_request"] += 1


def _item_sizes(body: Any) -> list[int]:
    """About the size of each item a DynamoDB write stores: its key and values, not its expressions."""
    try:
        req = json.loads(body) if isinstance(body, bytes | str) else {}
    except ValueError:
        return []
    parts = [p for t in req.get("TransactItems", []) for p in t.values()] if "TransactItems" in req else [req]
    return [sum(len(json.dumps(p.get(f, {}))) for f in ("Key", "Item", "ExpressionAttributeValues")) for p in parts]


def instrument(client: C) -> C:
    """Count ``client``'s requests into the current meter (idempotent); returns the client."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:  # not a botocore client (a test double)
        return client
    service = str(client.meta.service_model.service_id.hyphenize())  # type: ignore[attr-defined]

    def before(params: Any = None, context: Any = None, **_: Any) -> None:
        if service == "dynamodb" and isinstance(context, dict) and isinstance(params, dict):
            context["stepchain_sent"] = _item_sizes(params.get("body"))

    def after(http_response: Any = None, model: Any = None, context: Any = None, **_: Any) -> None:
        if _METER.get() is None or model is None:
            return
        sent = context.get("stepchain_sent", []) if isinstance(context, dict) else []
        received = 0
        if service == "dynamodb":  # never read a streaming body (S3 GetObject): its reader would get nothing
            received = len(getattr(http_response, "content", b"") or b"")
        _record(service, str(model.name), sent, received)

    events.register(f"before-call.{service}", before, unique_id="stepchain-requests-before")
    events.register(f"after-call.{service}", after, unique_id="stepchain-requests-after")
    return client


def stored(item: Mapping[str, Any]) -> dict[str, int]:
    """The counts on a stored node item."""
    n = len(STORED_PREFIX)
    return {k[n:]: int(v) for k, v in item.items() if k.startswith(STORED_PREFIX) and v}


__all__ = ["COUNTERS", "Meter", "instrument", "metering", "stored", "take_for_node_write"]
