"""The values the checkpoint store's operations take and give (:mod:`stepchain.store.base`): what a
claim found, the changes a node or run write makes, a node or run to create, a page of runs. Their own
module so the change tables (:mod:`stepchain.store.items`) and the store both read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus


class ClaimKind(StrEnum):
    CLAIMED = "claimed"  # we hold the lease now
    DONE = "done"  # already SUCCEEDED: serve the checkpoint
    BUSY = "busy"  # someone else holds a lease (maybe expired: see record.lease_until_ms)
    GONE = "gone"  # missing, failed or cancelled: nothing to do


@dataclass(frozen=True)
class ClaimResult:
    kind: ClaimKind
    record: NodeRecord | None


class FinishResult(StrEnum):
    OK = "ok"
    LOST = "lost"  # the node was not in the expected state (lease lost, already done, cancelled)


@dataclass(frozen=True)
class NodeChanges:
    """Fields to set on a node when it leaves RUNNING (or another expected state)."""

    status: NodeStatus
    now_ms: int
    output_ref: str | None = None
    input_ref: str | None = None
    add_duration_ms: int = 0
    add_cost_nano: int = 0
    add_input_tokens: int = 0
    add_output_tokens: int = 0
    invocation: Invocation | None = None
    #: the record ``invocation`` extends (the one the caller's claim or read returned): the store
    #: SETs its window plus ``invocation`` as a value. Without it the store reads the node first.
    prior: NodeRecord | None = None
    error: dict[str, str] | None = None
    clear_error: bool = False
    attempts: int | None = None
    wake_at_ms: int | None = None
    event_name: str | None = None
    task_token: str | None = None
    items_total: int | None = None
    #: the successor a routing step chose (``NodeRecord.route``), stored with its checkpoint
    route: str | None = None
    ended: bool = False
    #: ``ctx.each`` items / ``ctx.once`` results this invocation served from their checkpoints
    add_checkpoint_hits: int = 0
    #: ``ctx.once`` effects this invocation started again (an earlier attempt never checkpointed them)
    add_effect_reruns: int = 0
    #: start a new progress generation: earlier ``ctx.each``/``ctx.once`` checkpoints are ignored
    new_generation: bool = False
    #: a redrive reset the node (``NodeRecord.redriven`` + 1): its progress-stream lifecycle ids change
    add_redrive: bool = False
    #: the run's durable state after this node (a codec reference, :mod:`stepchain.define.state`),
    #: stored with the node's own checkpoint write
    state_ref: str | None = None
    #: the invocation runs the successor inline and holds it until then (stepchain.engine.fusion)
    chain_until_ms: int | None = None
    #: a crash the write records (a fused step whose invocation died: stepchain.engine.fusion)
    add_crashes: int = 0


@dataclass(frozen=True)
class RunChanges:
    now_ms: int
    status: RunStatus | None = None
    current: str | None = None
    output_ref: str | None = None
    error: dict[str, str] | None = None
    clear_error: bool = False
    ended: bool = False
    add_redrive: bool = False
    #: the run needs no more sweeping: drop it from the active-run index (a CANCELLED run stays
    #: listed until its cancel has finished, see ``Engine.finish_cancel``)
    settled: bool = False


@dataclass(frozen=True)
class NodeInit:
    """A node record created PENDING with its input (by the predecessor's commit, or fan-out)."""

    run_id: str
    key: str
    node: str
    input_ref: str | None
    index: int | None = None
    attempts: int = 1
    status: NodeStatus = NodeStatus.PENDING
    #: the durable state the node starts from (a child run's first node: its parent's, ``share_state``)
    state_ref: str | None = None

    def item(self, now_ms: int, expires_at: int | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "run_id": self.run_id,
            "key": self.key,
            "node": self.node,
            "status": self.status.value,
            "input": self.input_ref,
            "attempts": self.attempts,
            "invocations": 0,
            "created": now_ms,
        }
        if self.index is not None:
            item["index"] = self.index
        if self.state_ref is not None:
            item["state"] = self.state_ref
        if expires_at is not None:
            item["expires_at"] = expires_at
        return item


@dataclass(frozen=True)
class RunPage:
    runs: list[RunRecord]
    cursor: str | None = None


@dataclass(frozen=True)
class NewRun:
    run_id: str
    workflow: str
    version: str
    input_ref: str
    now_ms: int
    first: NodeInit
    idempotency_key: str | None = None
    request_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the caller starting the run: recorded on it, and it scopes ``idempotency_key`` (store/access.py)
    owner: str | None = None
