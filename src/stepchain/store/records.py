"""Run and node records: the durable state of a run, and how it maps onto store items.

One DynamoDB partition per run (``pk = RUN#<run_id>``) holds:

=====================================  ===========================================================
sort key                               item
=====================================  ===========================================================
``RUN``                                the run: workflow, version, status, input/output refs
``N#<node>``                           a node (step, map, sleep, wait): status, lease, ledger
``N#<node>#<index>``                   one item of a map node
``E#<node key>#g<gen>#<op>#<i>``      one checkpointed iteration of ``ctx.each`` (op: its operation id)
``O#<node key>#g<gen>#<op>``           one ``ctx.once`` effect: in-progress marker, then its result
``V#<event name>``                     an event delivered before its wait node was reached
``H#<node key>#<n>``                   invocation ``n`` of a node, moved out of the node's window
``C#<at_ms>#<node>#<kind>#<rand>``     one crash event (a takeover or a lost handoff)
=====================================  ===========================================================

Items stay the same size whatever the number of invocations and crashes. A node item keeps the
last :data:`HISTORY_WINDOW` invocations (``history``) and how many it ever had (``hist_n``); the
invocation that leaves the window is first written as its own ``H#`` item (one extra ``PutItem``,
only for a node past the window), then the node item is updated with the new window SET as a value,
fenced by the node's owner/status condition. Crash events are ``C#`` items, one ``PutItem`` each;
the RUN item holds no list. :func:`full_history` joins a node's ``H#`` items and its window (the
ledger, the timeline and the API read it); an ``H#`` item whose number is still inside the window
(written just before a node update that was then lost) is ignored, and rewritten with the same
content by the next eviction.

Adapters exchange plain ``dict`` items (JSON-compatible values, ints for numbers); the
functions here turn them into frozen records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stepchain.requests import stored
from stepchain.store.steplocal_records import EachRecord as EachRecord  # re-exported: step-local records
from stepchain.store.steplocal_records import OnceStart as OnceStart
from stepchain.store.steplocal_records import OnceState as OnceState

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


def node_key(node: str, index: int | None = None, iteration: int = 0) -> str:
    """The stable key of a node (or of one map item) in loop iteration ``iteration``: ``think``,
    ``fetch#00003``; from iteration 1 on ``think~00001``, ``fetch~00002#00003``."""
    base = node if iteration == 0 else f"{node}~{iteration:05d}"
    return base if index is None else f"{base}#{index:05d}"


def parse_node_key(key: str) -> tuple[str, int, int | None]:
    """``(node, iteration, index)`` of a key made by :func:`node_key`."""
    base, _, idx = key.partition("#")
    node, _, it = base.partition("~")
    return node, int(it) if it else 0, int(idx) if idx else None


def node_sk(key: str) -> str:
    return f"N#{key}"


def each_sk(key: str, loop: str, i: int, generation: int = 0) -> str:
    """``loop`` is the ``each`` operation's id (``ctx.each``); ``generation`` the node's progress generation."""
    return f"E#{key}#g{generation}#{loop}#{i:06d}"


def each_prefix(key: str, loop: str, generation: int = 0) -> str:
    return f"E#{key}#g{generation}#{loop}#"


def each_done_sk(key: str, loop: str, generation: int = 0) -> str:
    """A completed loop's summary (all its results): sorts after its items, so a resume finds it first."""
    return f"E#{key}#g{generation}#{loop}#~"


def parse_each_sk(sk: str) -> tuple[str, int, str, int]:
    """``(node key, generation, loop, index)`` of an ``E#`` sort key (node keys may contain ``#``);
    the index of a loop's summary is -1."""
    key, gen, loop, i = sk[2:].rsplit("#", 3)
    return key, int(gen[1:]), loop, -1 if i == "~" else int(i)


def once_sk(key: str, name: str, generation: int = 0) -> str:
    return f"O#{key}#g{generation}#{name}"


def event_sk(name: str) -> str:
    return f"V#{name}"


#: invocations a node item keeps in its ``history`` window; older ones are ``H#`` items
HISTORY_WINDOW = 8


def history_sk(key: str, n: int) -> str:
    return f"H#{key}#{n:08d}"


def history_prefix(key: str | None = None) -> str:
    """All evicted invocations of the run, or (with ``key``) those of one node (filter by key:
    ``H#m#`` also matches the items of map ``m``)."""
    return "H#" if key is None else f"H#{key}#"


def split_history_sk(sk: str) -> tuple[str, int]:
    """``H#<node key>#<n>`` -> (node key, n)."""
    key, _, n = sk[2:].rpartition("#")
    return key, int(n)


def crash_sk(at_ms: int, node: str, kind: str, nonce: str) -> str:
    return f"C#{at_ms:015d}#{node}#{kind}#{nonce}"


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
    #: the last HISTORY_WINDOW invocations (the item's window); :func:`full_history` has them all
    history: tuple[Invocation, ...] = field(default_factory=tuple)
    #: invocations ever recorded (window included); the first ``history_count - len(history)`` are H# items
    history_count: int = 0
    #: bumped by a redrive that discards the node's partial progress (``ctx.each`` items, ``ctx.once`` results)
    generation: int = 0
    #: how many redrives reset this node (the lifecycle events of each episode get their own ids)
    redriven: int = 0
    #: ``ctx.once`` effects started again because an earlier attempt never checkpointed them
    effect_reruns: int = 0
    iteration: int = 0  # the loop iteration of this node (part of its key, see :func:`node_key`)
    route: str | None = None  # the successor a routing step chose (a node id or END); None: the chain's
    #: AWS requests made for this node, by counter (:mod:`stepchain.requests`)
    requests: dict[str, int] = field(default_factory=dict)
    #: the run's durable state after this node (or, for a waiting node, the state it waits with)
    state_ref: str | None = None
    #: a fork's copy of a checkpoint of run ``copied_from`` (stepchain.store.fork)
    copied_from: str | None = None
    #: its invocation ran the successor inline, holding it until then (stepchain.engine.fusion)
    chain_until_ms: int | None = None
    #: it ran inline after its predecessor (claimed by the predecessor's checkpoint, no handoff)
    fused: bool = False

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> NodeRecord:
        def opt_int(name: str) -> int | None:
            v = item.get(name)
            return None if v is None else int(v)

        # run_id, key, node and index are derivable from the item's keys (pk RUN#<id>, sk N#<key>)
        key = str(item["key"]) if "key" in item else str(item["sk"])[2:]
        node, iteration, idx = parse_node_key(key)
        return cls(
            run_id=str(item["run_id"]) if "run_id" in item else str(item["pk"])[4:],
            key=key,
            node=node,
            index=idx,
            status=NodeStatus(item["status"]),
            input_ref=item.get("input"),
            output_ref=item.get("output"),
            state_ref=item.get("state"),
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
            history_count=int(item.get("hist_n", len(item.get("history", [])))),
            generation=int(item.get("gen", 0)),
            redriven=int(item.get("redriven", 0)),
            effect_reruns=int(item.get("effect_reruns", 0)),
            iteration=iteration,
            route=item.get("route"),
            requests=stored(item),
            copied_from=item.get("copied_from"),
            chain_until_ms=opt_int("chain_until"),
            fused=bool(item.get("fused", False)),
        )

    @property
    def history_complete(self) -> bool:
        """True when the window holds every invocation (no ``H#`` items to read)."""
        return self.history_count <= len(self.history)


@dataclass(frozen=True)
class HistoryPush:
    """A node's history after one more invocation: the new window, the new count, and the
    invocations leaving the window (by number), to be written as ``H#`` items first."""

    window: tuple[Invocation, ...]
    count: int
    evicted: tuple[tuple[int, Invocation], ...]


def push_history(prior: NodeRecord, inv: Invocation, window: int = HISTORY_WINDOW) -> HistoryPush:
    hist = (*prior.history, inv)
    count = max(prior.history_count, len(prior.history)) + 1
    first = count - len(hist)  # the number of hist[0]
    cut = max(0, len(hist) - window)
    return HistoryPush(hist[cut:], count, tuple((first + i, hist[i]) for i in range(cut)))


def full_history(rec: NodeRecord, evicted: dict[int, Invocation]) -> tuple[Invocation, ...]:
    """Every invocation of the node, oldest first: its ``H#`` items (by number) then its window."""
    first = rec.history_count - len(rec.history)
    return tuple(evicted[n] for n in range(first) if n in evicted) + rec.history


@dataclass(frozen=True, order=True)
class CrashEvent:
    """A point where a worker died (or lost its handoff) and the run resumed from a checkpoint."""

    at_ms: int
    node: str
    kind: str  # "takeover" (died mid-step) | "lost_handoff" (died after the checkpoint) | "swept" (sweeper)

    def to_dict(self) -> dict[str, Any]:
        return {"at_ms": self.at_ms, "node": self.node, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CrashEvent:
        return cls(int(d["at_ms"]), str(d["node"]), str(d["kind"]))


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
    #: only the crash events of RUN items written before crash events became C# items
    #: (``CheckpointStore.list_crash_events`` returns all of them)
    crash_events: tuple[CrashEvent, ...] = ()
    redrives: int = 0
    #: a child run's parent: ``<parent run id>/<node key>/<branch>`` (engine/nodes/children.py)
    parent: str | None = None
    #: the caller who started the run (API Gateway identity); None: before ownership, or a harness
    owner: str | None = None
    #: a budgeted run's budget and what its steps spent (nano-dollars, stepchain.engine.budget);
    #: ``paused``: "budget" while it waits in its budget wait
    budget_nano: int | None = None
    spent_nano: int = 0
    paused: str | None = None
    #: a fork's origin: ``{"run_id", "node", "iteration"}`` (stepchain.engine.fork)
    forked_from: dict[str, Any] | None = None

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
            crash_events=tuple(CrashEvent.from_dict(c) for c in item.get("crashes", [])),
            redrives=int(item.get("redrives", 0)),
            parent=item.get("parent"),
            owner=item.get("owner"),
            budget_nano=None if item.get("budget_nano") is None else int(item["budget_nano"]),
            spent_nano=int(item.get("spent_nano", 0)),
            paused=item.get("paused"),
            forked_from=item.get("forked_from"),
        )
