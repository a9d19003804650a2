"""Run and node records: the durable state of a run, and how it maps onto store items.

One DynamoDB partition per run (``pk = RUN#<run_id>``) holds:

=====================================  ===========================================================
sort key                               item
=====================================  ===========================================================
``RUN``                                the run: workflow, version, status, input/output refs
``N#<node>``                           a node (step, map, sleep, wait): status, lease, ledger
``N#<node>#<index>``                   one item of a map node
``E#<node key>#<loop>#<i>``            one checkpointed iteration of ``ctx.each``
``O#<node key>#<key>``                 one ``ctx.once`` effect
``V#<event name>``                     an event delivered before its wait node was reached
=====================================  ===========================================================

Adapters exchange plain ``dict`` items (JSON-compatible values, ints for numbers); the
functions here turn them into frozen records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

RUN_SK = "RUN"


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class NodeStatus(StrEnum):
    PENDING = "PENDING"  # created with its input, not started
    RUNNING = "RUNNING"  # claimed under a lease
    CONTINUING = "CONTINUING"  # yielded to a fresh invocation, progress saved
    RETRYING = "RETRYING"  # failed, another attempt scheduled
    SLEEPING = "SLEEPING"  # durable sleep in progress
    WAITING = "WAITING"  # waiting for an external event
    FANNED_OUT = "FANNED_OUT"  # map node: items created, waiting for them
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.CANCELLED)


CLAIMABLE = (NodeStatus.PENDING, NodeStatus.CONTINUING, NodeStatus.RETRYING)


def run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def node_key(node: str, index: int | None = None) -> str:
    """The stable key of a node (or of one map item): also its ASL state name stem."""
    return node if index is None else f"{node}#{index:05d}"


def node_sk(key: str) -> str:
    return f"N#{key}"


def each_sk(key: str, loop: str, i: int) -> str:
    return f"E#{key}#{loop}#{i:06d}"


def each_prefix(key: str, loop: str) -> str:
    return f"E#{key}#{loop}#"


def once_sk(key: str, name: str) -> str:
    return f"O#{key}#{name}"


def event_sk(name: str) -> str:
    return f"V#{name}"


@dataclass(frozen=True)
class Invocation:
    """One bar on a node's timeline: an invocation that worked on it."""

    started_ms: int
    ended_ms: int | None
    outcome: str  # succeeded | continued | retrying | failed | crashed | cancelled

    def to_dict(self) -> dict[str, Any]:
        return {"started_ms": self.started_ms, "ended_ms": self.ended_ms, "outcome": self.outcome}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Invocation:
        ended = d.get("ended_ms")
        return cls(int(d["started_ms"]), None if ended is None else int(ended), str(d["outcome"]))


@dataclass(frozen=True)
class NodeRecord:
    run_id: str
    key: str
    node: str
    index: int | None
    status: NodeStatus
    input_ref: str | None = None
    output_ref: str | None = None
    attempts: int = 1
    invocations: int = 0
    crashes: int = 0
    checkpoint_hits: int = 0
    owner: str | None = None
    lease_until_ms: int = 0
    current_started_ms: int | None = None
    created_ms: int = 0
    started_ms: int | None = None
    ended_ms: int | None = None
    updated_ms: int | None = None  # the last write that changed its status (None: never since created)
    duration_ms: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error: dict[str, str] | None = None
    wake_at_ms: int | None = None
    event_name: str | None = None
    task_token: str | None = None
    items_total: int | None = None
    history: tuple[Invocation, ...] = field(default_factory=tuple)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> NodeRecord:
        def opt_int(name: str) -> int | None:
            v = item.get(name)
            return None if v is None else int(v)

        # run_id, key, node and index are derivable from the item's keys (pk RUN#<id>, sk N#<key>)
        key = str(item["key"]) if "key" in item else str(item["sk"])[2:]
        node, _, idx = key.partition("#")
        return cls(
            run_id=str(item["run_id"]) if "run_id" in item else str(item["pk"])[4:],
            key=key,
            node=node,
            index=int(idx) if idx else None,
            status=NodeStatus(item["status"]),
            input_ref=item.get("input"),
            output_ref=item.get("output"),
            attempts=int(item.get("attempts", 1)),
            invocations=int(item.get("invocations", 0)),
            crashes=int(item.get("crashes", 0)),
            checkpoint_hits=int(item.get("checkpoint_hits", 0)),
            owner=item.get("owner"),
            lease_until_ms=int(item.get("lease_until", 0)),
            current_started_ms=opt_int("cur_started"),
            created_ms=int(item.get("created", item.get("started", 0))),
            started_ms=opt_int("started"),
            ended_ms=opt_int("ended"),
            updated_ms=opt_int("updated"),
            duration_ms=int(item.get("duration_ms", 0)),
            cost_usd=int(item.get("cost_nano", 0)) / 1e9,
            input_tokens=int(item.get("input_tokens", 0)),
            output_tokens=int(item.get("output_tokens", 0)),
            error=item.get("error"),
            wake_at_ms=opt_int("wake_at"),
            event_name=item.get("event_name"),
            task_token=item.get("task_token"),
            items_total=opt_int("items_total"),
            history=tuple(Invocation.from_dict(h) for h in item.get("history", [])),
        )


@dataclass(frozen=True)
class CrashEvent:
    """A point where a worker died (or lost its handoff) and the run resumed from a checkpoint."""

    at_ms: int
    node: str
    kind: str  # "takeover" (died mid-step) | "lost_handoff" (died after the checkpoint) | "swept" (sweeper)

    def to_dict(self) -> dict[str, Any]:
        return {"at_ms": self.at_ms, "node": self.node, "kind": self.kind}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    workflow: str
    version: str
    status: RunStatus
    input_ref: str
    created_ms: int
    updated_ms: int
    output_ref: str | None = None
    ended_ms: int | None = None
    current: str | None = None
    error: dict[str, str] | None = None
    idempotency_key: str | None = None
    crash_events: tuple[CrashEvent, ...] = ()
    redrives: int = 0

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RunRecord:
        ended = item.get("ended")
        return cls(
            run_id=str(item["run_id"]),
            workflow=str(item["workflow"]),
            version=str(item["version"]),
            status=RunStatus(item["status"]),
            input_ref=str(item["input"]),
            created_ms=int(item["created"]),
            updated_ms=int(item["updated"]),
            output_ref=item.get("output"),
            ended_ms=None if ended is None else int(ended),
            current=item.get("current"),
            error=item.get("error"),
            idempotency_key=item.get("idempotency_key"),
            crash_events=tuple(
                CrashEvent(int(c["at_ms"]), str(c["node"]), str(c["kind"])) for c in item.get("crashes", [])
            ),
            redrives=int(item.get("redrives", 0)),
        )


@dataclass(frozen=True)
class EachRecord:
    """One checkpointed iteration of ``ctx.each``."""

    index: int
    value_ref: str
    duration_ms: int
    ended_ms: int
