"""The SQS worker: one Lambda invocation serves a batch of activations, with partial batch failure.

Each record is one activation. A record that fails (a malformed body, a store outage, any error
from the engine) is reported in ``batchItemFailures``: SQS retries only that one, and after the
queue's ``maxReceiveCount`` moves it to the dead-letter queue. The other records are deleted.

A record that arrives before its ``not_before_ms`` (a delay longer than SQS's 15 minutes) is sent
on with the next delay chunk and acknowledged. Without a heartbeat the Lambda context's remaining
time is what the engine derives its lease from, so the queue's visibility timeout must be at least
the function timeout plus the engine's 2 s lease grace (see :mod:`stepchain.handoff.sqs`). With one
(``STEPCHAIN_SQS_VISIBILITY_S``, :mod:`stepchain.engine.heartbeat`) each record's own visibility is short
and kept alive while the invocation runs, and the lease follows it: a killed invocation's records
come back within V seconds, whatever the function timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stepchain.engine import Engine
from stepchain.engine.heartbeat import HeartbeatPolicy, InFlight, SqsHeartbeat, queue_url_for_arn
from stepchain.engine.short_queues import sqs_policy_from_env
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation
from stepchain.handoff.sqs import NOT_BEFORE, SqsHandoff
from stepchain.logs import LambdaContextLike, logger
from stepchain.runtimes.serve import serve


def not_before_ms(record: SQSRecord) -> int | None:
    """The record's due time (epoch ms), if it was sent with a delay."""
    attr = record.message_attributes[NOT_BEFORE]
    if attr is None or attr.string_value is None:
        return None
    try:
        return int(attr.string_value)
    except ValueError:
        return None


def handle_record(engine: Engine, record: SQSRecord, context: LambdaContextLike) -> str:
    """Serve one record; returns the outcome kind (or ``DEFERRED``). Raises to fail the record."""
    try:
        msg = Activation.from_json(record.body)
    except ValidationError:
        logger.error(
            "malformed activation; it goes to the dead-letter queue after maxReceiveCount",
            extra={"message_id": record.message_id, "body": record.body[:200]},
        )
        raise
    now = engine.clock.now_ms()
    due = not_before_ms(record)
    if due is not None and due > now:  # a delay longer than one SQS hop: send it on
        if isinstance(engine.handoff, SqsHandoff):
            engine.handoff.forward(msg, due)
        else:
            engine.handoff.dispatch([msg], at_ms=due)
        return "DEFERRED"
    return serve(engine, msg, context).kind.value


def handle_sqs_batch(
    engine: Engine,
    event: Mapping[str, Any],
    context: LambdaContextLike,
    *,
    heartbeat: HeartbeatPolicy | Literal["env"] | None = "env",
) -> PartialItemFailureResponse:
    """The handler body for an SQS event source mapping with ``ReportBatchItemFailures``.

    With a heartbeat policy (default: from ``STEPCHAIN_SQS_VISIBILITY_S`` / ``STEPCHAIN_HEARTBEAT_S``)
    each record's visibility is V and a heartbeat keeps the unfinished ones and the running node's
    lease alive (:mod:`stepchain.engine.heartbeat`); it is stopped before this returns. From the
    environment, a function whose queue's own visibility is <= V runs none
    (:func:`~stepchain.engine.heartbeat.sqs_policy_from_env`)."""
    policy = sqs_policy_from_env() if heartbeat == "env" else heartbeat
    hb = _heartbeat(engine, event, policy) if isinstance(policy, HeartbeatPolicy) else None

    def record_handler(record: SQSRecord) -> str:
        if hb is None:
            return handle_record(engine, record, context)
        with hb.serving(record.message_id, receive_count=_receive_count(record)):
            return handle_record(engine, record, context)

    processor = BatchProcessor(event_type=EventType.SQS)
    ctx: Any = context
    handoff = engine.handoff
    with handoff.coalescing() if isinstance(handoff, SqsHandoff) else nullcontext(), hb or nullcontext():
        return process_partial_response(
            event=dict(event), record_handler=record_handler, processor=processor, context=ctx
        )


def _receive_count(record: SQSRecord) -> int:
    try:
        return int(record.attributes.approximate_receive_count)
    except (KeyError, TypeError, ValueError):
        return 1


def _heartbeat(engine: Engine, event: Mapping[str, Any], policy: HeartbeatPolicy) -> SqsHeartbeat | None:
    """The batch's heartbeat (None when the handoff is not SQS: no client to change visibility with)."""
    handoff = engine.handoff
    if not isinstance(handoff, SqsHandoff):
        return None
    known = list(handoff.queues.values())
    records = [
        InFlight(r["messageId"], queue_url_for_arn(r["eventSourceARN"], known), r["receiptHandle"])
        for r in event.get("Records", [])
        if r.get("receiptHandle") and r.get("eventSourceARN")
    ]
    return SqsHeartbeat(policy, engine.store, handoff.client, records, engine.clock)


__all__ = ["handle_record", "handle_sqs_batch", "not_before_ms"]
