"""Response fields made from stored records: a step's fields, a stored output (inline or a presigned URL)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.params import Query

from stepchain.api.decoding import MAX_SERVED_DEPTH, depth
from stepchain.api.security import output_url_ttl_s
from stepchain.define.workflow import Workflow
from stepchain.engine.events import waiting_for
from stepchain.engine.runs import RunService
from stepchain.exceptions import BlobUnavailable
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import NodeRecord, NodeStatus, node_key

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


def output_fields(runs: RunService, ref: str | None, name: str = "output") -> dict[str, Any]:
    """A stored value as response fields (``output``, or ``input`` with ``name``): inline, or a presigned
    URL when offloaded to the blob store; one nested too deeply for a JSON response is omitted."""
    if ref is None:
        return {}
    fields: dict[str, Any] = {f"has_{name}": True, f"{name}_bytes": PayloadCodec.size(ref)}
    key = PayloadCodec.blob_key(ref)
    url = None if key is None else runs.codec.blobs.presigned_url(key, output_url_ttl_s())
    if url is not None:
        fields[f"{name}_url"] = url
        return fields
    try:
        value = runs.codec.decode(ref)
    except BlobUnavailable as exc:  # a stored value we cannot read back is our problem, not the caller's
        raise RuntimeError(f"stored {name} is unreadable: {exc}") from exc
    if depth(value) > MAX_SERVED_DEPTH:  # a step may return what no JSON response here can carry
        fields[f"{name}_omitted"] = f"nested more than {MAX_SERVED_DEPTH} levels: read it with the library"
    else:
        fields[name] = value
    return fields


def input_ref(runs: RunService, wf: Workflow | None, rec: NodeRecord) -> str | None:
    """The node's input: its own (the first node, a map item, a redrive's new input), else the output
    of the node that routed to it (in its iteration or the one before: a route back starts the next),
    else of its chain predecessor in its iteration. None: not known yet (or the workflow is not
    registered here)."""
    if rec.input_ref is not None or wf is None or not wf.has_node(rec.node) or rec.index is not None:
        return rec.input_ref
    nodes = runs.store.list_nodes(rec.run_id)
    for src in nodes:
        routed = src.route == rec.node and src.index is None
        back = src.iteration == rec.iteration - 1 and wf.position(src.node) >= wf.position(rec.node)
        if routed and (src.iteration == rec.iteration or back):
            return src.output_ref
    prev = wf.prev_of(rec.node)
    if prev is None:
        return None
    key = node_key(prev.id, None, rec.iteration)
    found = next((n for n in nodes if n.key == key and n.status is NodeStatus.SUCCEEDED), None)
    return None if found is None else found.output_ref


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


__all__ = ["IterationQuery", "accepted", "input_ref", "output_fields", "output_if_done", "step_fields", "waiting_for"]
