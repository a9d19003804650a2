"""The checkpoint-store port.

The engine's durable state goes through this small interface. Each method is ONE atomic
operation in the store (a conditional write, a transaction, a query), so the DynamoDB adapter
maps each onto a single API call and the in-memory adapter onto one locked dict update.
Both adapters pass the same contract suite (``tests/functional/test_store_contract.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stepchain.store.records import (
    CrashEvent,
    EachRecord,
    Invocation,
    NodeRecord,
    NodeStatus,
    OnceStart,
    RunRecord,
    RunStatus,
    full_history,
)

ACTIVE_RUN = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)


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


class CheckpointStore(ABC):
    """Port: durable run state. See the module docstring for the item layout."""

    #: seconds a finished run's items are kept (TTL); None keeps them forever
    retention_s: int | None = None

    def expires_at(self, now_ms: int) -> int | None:
        return None if self.retention_s is None else now_ms // 1000 + self.retention_s

    # -- runs --------------------------------------------------------------------------------
    @abstractmethod
    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create the run and its first node atomically.

        With an idempotency key: if the key was used before, return that run and ``False`` when
        the request hash matches, else raise :class:`~stepchain.exceptions.IdempotencyConflict`.
        """

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    def update_run(self, run_id: str, changes: RunChanges, *, expect: tuple[RunStatus, ...]) -> RunRecord | None:
        """Conditionally update the run; ``None`` when its status is not one of ``expect``."""

    @abstractmethod
    def list_runs(
        self,
        workflow: str,
        *,
        status: RunStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> RunPage:
        """The workflow's runs, newest first; with ``owner`` only that caller's (one index query)."""

    @abstractmethod
    def add_crash_event(self, run_id: str, at_ms: int, node: str, kind: str) -> None:
        """Record a crash event as its own ``C#`` item (one write; the RUN item does not grow)."""

    @abstractmethod
    def list_crash_events(self, run_id: str) -> list[CrashEvent]:
        """The run's ``C#`` crash events in time order (a RUN item written before crash events were
        items may hold older ones: ``RunRecord.crash_events``)."""

    @abstractmethod
    def list_active_runs(self, *, limit: int = 100, cursor: str | None = None) -> RunPage:
        """Runs of every workflow the sweeper must look at: PENDING/RUNNING/WAITING, and CANCELLED
        until their cancel finished (``RunChanges.settled``). A sparse index: reads no finished run."""

    # -- nodes -------------------------------------------------------------------------------
    @abstractmethod
    def get_node(self, run_id: str, key: str) -> NodeRecord | None: ...

    @abstractmethod
    def list_nodes(self, run_id: str, prefix: str = "") -> list[NodeRecord]:
        """Nodes of the run whose key starts with ``prefix`` (map items: ``"<node>#"``), by key."""

    @abstractmethod
    def put_node_if_absent(self, init: NodeInit, now_ms: int) -> bool: ...

    @abstractmethod
    def claim(
        self, run_id: str, key: str, *, node: str, index: int | None, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        """ONE conditional write: absent/PENDING/CONTINUING/RETRYING -> RUNNING under our lease.

        An absent node is created by its claim (its input is its predecessor's output). On
        conflict the current record comes back with the failure (no second read).
        """

    @abstractmethod
    def takeover(
        self, run_id: str, key: str, *, stale: NodeRecord, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        """Take a RUNNING node whose lease has expired (its worker died); counts a crash and an attempt."""

    @abstractmethod
    def extend_lease(self, run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
        """ONE conditional write: set the node's ``lease_until`` if it is RUNNING and ``owner`` holds
        it (a heartbeat). False when the lease was lost (taken over, finished, cancelled, absent)."""

    @abstractmethod
    def finish(
        self,
        run_id: str,
        key: str,
        changes: NodeChanges,
        *,
        owner: str | None = None,
        expect: tuple[NodeStatus, ...] = (NodeStatus.RUNNING,),
    ) -> FinishResult:
        """Update the node if it is in ``expect`` and, when given, owned by ``owner``: one
        conditional write (this is how a step's output is checkpointed)."""

    @abstractmethod
    def add_checkpoint_hit(self, run_id: str, key: str) -> None: ...

    @abstractmethod
    def list_history(self, run_id: str, key: str | None = None) -> dict[str, dict[int, Invocation]]:
        """The invocations moved out of node windows (``H#`` items), by node key and number; only
        node ``key``'s with a key. Join them with a record's window with ``records.full_history``."""

    def node_history(self, run_id: str, rec: NodeRecord) -> tuple[Invocation, ...]:
        """Every invocation of ``rec``: its window alone (no call) unless it has ``H#`` items."""
        if rec.history_complete:
            return rec.history
        return full_history(rec, self.list_history(run_id, rec.key).get(rec.key, {}))

    # -- ctx.each / ctx.once / buffered events -----------------------------------------------
    # ``loop`` / ``name`` is the operation id (see ``stepchain.define.steplocal``); ``generation`` the
    # node's progress generation (a discarding redrive starts a new one; old items expire by TTL).
    @abstractmethod
    def put_each(self, run_id: str, key: str, loop: str, rec: EachRecord, *, generation: int = 0) -> bool:
        """Checkpoint one item (or, ``rec.complete``, the loop's summary) unless it is there (one conditional write)."""

    @abstractmethod
    def last_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> EachRecord | None:
        """The loop's summary if it has one, else its checkpointed item with the highest index: ONE
        item read (a resume costs O(1)). ``list_each``/``list_each_all`` return items only."""

    @abstractmethod
    def list_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> list[EachRecord]: ...

    @abstractmethod
    def get_once(self, run_id: str, key: str, name: str, *, generation: int = 0) -> str | None:
        """The effect's checkpointed result (``None`` when absent or only started)."""

    @abstractmethod
    def start_once(
        self, run_id: str, key: str, name: str, *, owner: str, now_ms: int, generation: int = 0
    ) -> OnceStart:
        """ONE conditional write: put the in-progress marker if absent or still in progress.

        A checkpointed result comes back with the failure (no read); a replaced marker comes back
        as ``restarted`` (an earlier attempt started the effect and never checkpointed it).
        """

    @abstractmethod
    def put_once(self, run_id: str, key: str, name: str, value_ref: str, now_ms: int, *, generation: int = 0) -> str:
        """Store the effect's result unless one is there; return the stored one."""

    @abstractmethod
    def put_event(self, run_id: str, name: str, payload_ref: str, now_ms: int) -> bool: ...

    @abstractmethod
    def get_event(self, run_id: str, name: str) -> str | None: ...

    @abstractmethod
    def spend_token(self, run_id: str, token_id: str, now_ms: int, expires_at: int) -> bool:
        """Record an approval token as used (ONE conditional put); ``False`` if it was used before."""

    @abstractmethod
    def list_each_all(self, run_id: str) -> dict[str, list[EachRecord]]:
        """Every ``ctx.each`` checkpoint of the run, keyed by node key (for the ledger)."""
