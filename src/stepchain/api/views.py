"""Response fields made from stored records: a step's fields, a stored output (inline or a presigned URL)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.params import Query

from stepchain.api.decoding import MAX_SERVED_DEPTH, depth
from stepchain.api.security import output_url_ttl_s
from stepchain.engine.events import waiting_for
from stepchain.engine.runs import RunService
from stepchain.exceptions import BlobUnavailable
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import NodeRecord, NodeStatus

#: ``?iteration=N`` of an event delivery (bad values: 400 ``invalid_parameter``, like every query parameter)
IterationQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**31,
        description=(
            "The loop iteration whose wait the event is for (the run's waiting_for.iteration). Idempotent per "
            "(event, iteration). Required for a wait inside a loop once the run is past its first iteration's wait."
        ),
    ),
]


def accepted(result: str) -> Literal["delivered", "buffered"]:
    """An event delivery's answer (``RunService.deliver_event``) as the API reports it."""
    return "delivered" if result == "delivered" else "buffered"


def output_fields(runs: RunService, ref: str | None) -> dict[str, Any]:
    """A stored value as response fields: inline, or a presigned URL when offloaded to the blob store."""
    if ref is None:
        return {}
    fields: dict[str, Any] = {"has_output": True, "output_bytes": PayloadCodec.size(ref)}
    key = PayloadCodec.blob_key(ref)
    url = None if key is None else runs.codec.blobs.presigned_url(key, output_url_ttl_s())
    if url is not None:
        fields["output_url"] = url
        return fields
    try:
        value = runs.codec.decode(ref)
    except BlobUnavailable as exc:  # a stored value we cannot read back is our problem, not the caller's
        raise RuntimeError(f"stored output is unreadable: {exc}") from exc
    if depth(value) > MAX_SERVED_DEPTH:  # a step may return what no JSON response here can carry
        fields["output_omitted"] = f"nested more than {MAX_SERVED_DEPTH} levels: read it with the library"
    else:
        fields["output"] = value
    return fields


def step_fields(rec: NodeRecord, kind: str) -> dict[str, Any]:
    return {
        "run_id": rec.run_id,
        "step": rec.node,
        "key": rec.key,
        "index": rec.index,
        "kind": kind,
        "status": rec.status,
        "attempts": rec.attempts,
        "invocations": rec.invocations,
        "crashes": rec.crashes,
        "checkpoint_hits": rec.checkpoint_hits,
        "duration_ms": rec.duration_ms,
        "created_ms": rec.created_ms,
        "started_ms": rec.started_ms,
        "ended_ms": rec.ended_ms,
        "cost_usd": round(rec.cost_usd, 9),
        "input_tokens": rec.input_tokens,
        "output_tokens": rec.output_tokens,
        "error": rec.error,
        "wake_at_ms": rec.wake_at_ms,
        "event_name": rec.event_name,
        "items_total": rec.items_total,
        "history": [h.to_dict() for h in rec.history],
        "copied_from": rec.copied_from,
    }


def output_if_done(runs: RunService, rec: NodeRecord) -> dict[str, Any]:
    return output_fields(runs, rec.output_ref) if rec.status is NodeStatus.SUCCEEDED else {}


__all__ = ["IterationQuery", "accepted", "output_fields", "output_if_done", "step_fields", "waiting_for"]
