"""The checkpoint store: the engine's durable state.

:class:`CheckpointStore` holds every operation the engine calls (claim, takeover, finish,
update_run, ...), written once above the storage primitives of :mod:`stepchain.store.port`
(get, put, conditional update, prefix query, transaction): the record <-> item codecs and the
change tables (:mod:`stepchain.store.items`) are shared, so an adapter is only those primitives.
Each operation is ONE primitive call (one DynamoDB request) unless its docstring says otherwise.
Both adapters pass the same contract suite (``tests/functional/test_store_contract.py``).
"""

from __future__ import annotations

import secrets
from typing import Any

from stepchain.exceptions import IdempotencyConflict, StoreConflict
from stepchain.store.access import idem_pk, owner_fields
from stepchain.store.budget import BudgetOps
from stepchain.store.changes import (  # re-exported: the store's operations take and give these
    ClaimKind as ClaimKind,
)
from stepchain.store.changes import (
    ClaimResult as ClaimResult,
)
from stepchain.store.changes import (
    FinishResult as FinishResult,
)
from stepchain.store.changes import (
    NewRun as NewRun,
)
from stepchain.store.changes import (
    NodeChanges as NodeChanges,
)
from stepchain.store.changes import (
    NodeInit as NodeInit,
)
from stepchain.store.changes import (
    RunChanges as RunChanges,
)
from stepchain.store.changes import (
    RunPage as RunPage,
)
from stepchain.store.fork import ForkOps
from stepchain.store.items import (
    ACTIVE,
    ACTIVE_PK,
    ACTIVE_RUN,
    ACTIVE_SK,
    active_sk,
    history_fields,
    node_update,
    run_update,
)
from stepchain.store.limits import LimitOps
from stepchain.store.port import ABSENT, EXISTS, Cond, Update
from stepchain.store.records import (
    CLAIMABLE,
    RUN_SK,
    CrashEvent,
    HistoryPush,
    Invocation,
    NodeRecord,
    NodeStatus,
    RunRecord,
    RunStatus,
    crash_sk,
    full_history,
    history_prefix,
    history_sk,
    node_sk,
    push_history,
    run_pk,
    split_history_sk,
)
from stepchain.store.steps import StepLocalStore

#: the owner suffix of an implied claim (``stepchain.engine.fusion.IMPLIED``: the store may not import the engine)
IMPLIED_OWNER = "+fused"


class CheckpointStore(StepLocalStore, BudgetOps, ForkOps, LimitOps):
    """Durable run state above the port's primitives (adapters: ``memory``, ``dynamodb``)."""

    # -- runs --------------------------------------------------------------------------------
    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create the run and its first node atomically (one transaction).

        With an idempotency key: if the key was used before, return that run and ``False`` when
        the request hash matches, else raise :class:`~stepchain.exceptions.IdempotencyConflict`.
        """
        exp = self.expires_at(new.now_ms)
        pk = run_pk(new.run_id)
        run: dict[str, Any] = {
            "pk": pk,
            "sk": RUN_SK,
            "run_id": new.run_id,
            "workflow": new.workflow,
            "version": new.version,
            "status": RunStatus.RUNNING.value,
            "input": new.input_ref,
            "created": new.now_ms,
            "updated": new.now_ms,
            "current": new.first.key,
            "gsi1pk": f"WF#{new.workflow}",
            "gsi1sk": f"{new.now_ms:015d}#{new.run_id}",
            ACTIVE_PK: ACTIVE,
            ACTIVE_SK: active_sk(new.now_ms, new.run_id),
            "idempotency_key": new.idempotency_key,
            "expires_at": exp,
            **owner_fields(new.owner, new.workflow),
            **new.extra,
        }
        first = {"pk": pk, "sk": node_sk(new.first.key), **new.first.item(new.now_ms, exp)}
        puts: list[tuple[dict[str, Any], Cond]] = [(run, ABSENT), (first, ABSENT)]
        idem_key = idem_pk(new.workflow, new.idempotency_key or "", new.owner)
        if new.idempotency_key is not None:
            idem = {"pk": idem_key, "sk": "IDEM", "run_id": new.run_id, "request_hash": new.request_hash}
            puts.insert(0, ({**idem, "expires_at": exp}, ABSENT))
        failed = self._transact(puts)
        if failed is None:
            return RunRecord.from_item({k: v for k, v in run.items() if v is not None}), True
        if new.idempotency_key is None or failed[0] != 0:
            raise StoreConflict(f"run {new.run_id!r} exists")
        old = failed[1] or self._get(idem_key, "IDEM")
        if old is None or old.get("request_hash") != new.request_hash:
            raise IdempotencyConflict(f"idempotency key {new.idempotency_key!r} was used with a different request")
        existing = self.get_run(str(old["run_id"]))
        assert existing is not None
        return existing, False

    def get_run(self, run_id: str) -> RunRecord | None:
        item = self._get(run_pk(run_id), RUN_SK)
        return None if item is None else RunRecord.from_item(item)

    def update_run(self, run_id: str, changes: RunChanges, *, expect: tuple[RunStatus, ...]) -> RunRecord | None:
        """Conditionally update the run; ``None`` when its status is not one of ``expect``."""
        cond = _status_in(expect, absent=False)
        done, item = self._update(run_pk(run_id), RUN_SK, run_update(changes, run_id), cond, return_new=True)
        return RunRecord.from_item(item) if done and item is not None else None

    def add_crash_event(self, run_id: str, at_ms: int, node: str, kind: str) -> None:
        """Record a crash event as its own ``C#`` item (one write; the RUN item does not grow)."""
        sk = crash_sk(at_ms, node, kind, secrets.token_hex(4))
        item = {"pk": run_pk(run_id), "sk": sk, "at_ms": at_ms, "node": node, "kind": kind}
        self._put({**item, "expires_at": self.expires_at(at_ms)})

    def list_crash_events(self, run_id: str) -> list[CrashEvent]:
        """The run's ``C#`` crash events in time order (a RUN item written before crash events were
        items may hold older ones: ``RunRecord.crash_events``)."""
        return sorted(CrashEvent.from_dict(i) for i in self._query(run_pk(run_id), "C#"))

    # -- nodes -------------------------------------------------------------------------------
    def get_node(self, run_id: str, key: str) -> NodeRecord | None:
        item = self._get(run_pk(run_id), node_sk(key))
        return None if item is None else NodeRecord.from_item(item)

    def list_nodes(self, run_id: str, prefix: str = "") -> list[NodeRecord]:
        """Nodes of the run whose key starts with ``prefix`` (map items: ``"<node>#"``), by key."""
        return [NodeRecord.from_item(i) for i in self._query(run_pk(run_id), node_sk(prefix))]

    def put_node_if_absent(self, init: NodeInit, now_ms: int) -> bool:
        item = {"pk": run_pk(init.run_id), "sk": node_sk(init.key), **init.item(now_ms, self.expires_at(now_ms))}
        return self._put(item, ABSENT)[0]

    def claim(
        self, run_id: str, key: str, *, node: str, index: int | None, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        """ONE conditional write: absent/PENDING/CONTINUING/RETRYING -> RUNNING under our lease.

        A RETRYING node is claimed only once its ``wake_at`` has come (its retry delay is over), so
        an early duplicate or re-issue cannot start the next attempt before it (a step its budget
        holds has no ``wake_at``: any activation may re-check it). An absent node is created by
        its claim (its input is its predecessor's output). On conflict the current record comes
        back with the failure (no second read).
        """
        u = Update(
            sets={
                "status": NodeStatus.RUNNING.value,
                "owner": owner,
                "lease_until": lease_until_ms,
                "cur_started": now_ms,
            },
            adds={"invocations": 1},
        )
        # run_id, key, node and index derive from pk/sk: a claim that creates the node only
        # initialises what cannot be derived.
        for name, value in (("started", now_ms), ("attempts", 1), ("expires_at", self.expires_at(now_ms))):
            if value is not None:
                u.inits[name] = value
        due = (("status", "in", _NOT_DELAYED), ("wake_at", "missing", None), ("wake_at", "<", now_ms + 1))
        cond = Cond(absent=True, clauses=(*_status_in(CLAIMABLE, absent=True).clauses, ("", "any", due)))
        return self._claim(run_id, key, u, cond)

    def takeover(
        self, run_id: str, key: str, *, stale: NodeRecord, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        """Take a RUNNING node whose lease has expired (its worker died); counts a crash and an attempt."""
        started = stale.current_started_ms or stale.started_ms or now_ms
        push = push_history(stale, Invocation(started, stale.lease_until_ms, "crashed"))
        self._evict(run_id, key, push)
        u = Update(
            sets={"owner": owner, "lease_until": lease_until_ms, "cur_started": now_ms, **history_fields(push)},
            adds={"invocations": 1, "attempts": 1, "crashes": 1},
        )
        clauses = (("status", "=", NodeStatus.RUNNING.value), ("owner", "=", stale.owner), ("lease_until", "<", now_ms))
        return self._claim(run_id, key, u, Cond(clauses=clauses))

    def _claim(self, run_id: str, key: str, u: Update, cond: Cond) -> ClaimResult:
        done, item = self._update(run_pk(run_id), node_sk(key), u, cond, return_new=True, old_on_failure=True)
        if done and item is not None:
            return ClaimResult(ClaimKind.CLAIMED, NodeRecord.from_item(item))
        if item is None:
            return ClaimResult(ClaimKind.GONE, None)
        rec = NodeRecord.from_item(item)
        if rec.status is NodeStatus.SUCCEEDED:
            return ClaimResult(ClaimKind.DONE, rec)
        if rec.status in (NodeStatus.FAILED, NodeStatus.CANCELLED):
            return ClaimResult(ClaimKind.GONE, rec)
        return ClaimResult(ClaimKind.BUSY, rec)

    def extend_lease(self, run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
        """ONE conditional write: set the node's ``lease_until`` if it is RUNNING and ``owner`` holds
        it (a heartbeat). False when the lease was lost (taken over, finished, cancelled, absent)."""
        cond = Cond(clauses=(("status", "=", NodeStatus.RUNNING.value), ("owner", "=", owner)))
        return self._update(run_pk(run_id), node_sk(key), Update(sets={"lease_until": lease_until_ms}), cond)[0]

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
        push = None
        if changes.invocation is not None:
            prior = changes.prior or self.get_node(run_id, key)  # the engine always passes prior
            if prior is None:
                return FinishResult.LOST
            push = push_history(prior, changes.invocation)
            self._evict(run_id, key, push)
        cond = _status_in(expect, absent=False)
        update = node_update(changes, push)
        if owner is not None and owner.endswith(IMPLIED_OWNER):
            # an implied claim (a fused step, stepchain.engine.fusion): this write creates the node (a
            # put-if-absent of the whole item), unless another worker claimed it meanwhile (its
            # takeover fences this one out). An implied claim is never stored, so "absent" is all.
            _implied_inits(update, changes.prior, changes.now_ms, self.expires_at(changes.now_ms))
            item: dict[str, Any] = {"pk": run_pk(run_id), "sk": node_sk(key)}
            update.apply(item)
            return FinishResult.OK if self._put(item, ABSENT)[0] else FinishResult.LOST
        if owner is not None:
            cond = Cond(absent=False, clauses=(*cond.clauses, ("owner", "=", owner)))
        done, _ = self._update(run_pk(run_id), node_sk(key), update, cond)
        return FinishResult.OK if done else FinishResult.LOST

    def _evict(self, run_id: str, key: str, push: HistoryPush) -> None:
        """Write the invocations leaving the window BEFORE the node update that drops them: a crash
        in between leaves an H# item still inside the window (ignored by readers, rewritten with the
        same content by the next eviction), never a lost invocation."""
        for n, inv in push.evicted:
            sk = history_sk(key, n)
            self._put({"pk": run_pk(run_id), "sk": sk, **inv.to_dict(), "expires_at": self.expires_at(inv.started_ms)})

    def add_checkpoint_hit(self, run_id: str, key: str) -> None:
        # no such node: nothing to count
        self._update(run_pk(run_id), node_sk(key), Update(adds={"checkpoint_hits": 1}), EXISTS)

    def list_history(self, run_id: str, key: str | None = None) -> dict[str, dict[int, Invocation]]:
        """The invocations moved out of node windows (``H#`` items), by node key and number; only
        node ``key``'s with a key. Join them with a record's window with ``records.full_history``."""
        out: dict[str, dict[int, Invocation]] = {}
        for item in self._query(run_pk(run_id), history_prefix(key)):
            k, n = split_history_sk(str(item["sk"]))
            if key is None or k == key:
                out.setdefault(k, {})[n] = Invocation.from_dict(item)
        return out

    def node_history(self, run_id: str, rec: NodeRecord) -> tuple[Invocation, ...]:
        """Every invocation of ``rec``: its window alone (no call) unless it has ``H#`` items."""
        if rec.history_complete:
            return rec.history
        return full_history(rec, self.list_history(run_id, rec.key).get(rec.key, {}))


def _implied_inits(update: Update, prior: NodeRecord | None, now_ms: int, expires_at: int | None) -> None:
    """What a claim would have written, for a node whose first write is its checkpoint (``prior``:
    the record the implied claim made in memory)."""
    inits: dict[str, Any] = {
        "created": prior.created_ms if prior else now_ms,
        "started": prior.started_ms if prior else now_ms,
        "cur_started": prior.current_started_ms if prior else now_ms,
        "invocations": prior.invocations if prior else 1,
        "attempts": prior.attempts if prior else 1,
        "fused": True,
        "expires_at": expires_at,
    }
    taken = set(update.sets) | set(update.adds) | set(update.removes)
    update.inits.update({k: v for k, v in inits.items() if v is not None and k not in taken})


#: claimable statuses that carry no delay (a RETRYING node's ``wake_at`` is when its retry is due)
_NOT_DELAYED = tuple(s.value for s in CLAIMABLE if s is not NodeStatus.RETRYING)


def _status_in(statuses: tuple[NodeStatus, ...] | tuple[RunStatus, ...], *, absent: bool) -> Cond:
    return Cond(absent=absent, clauses=(("status", "in", tuple(s.value for s in statuses)),))


__all__ = [
    "ACTIVE_RUN",
    "CheckpointStore",
    "ClaimKind",
    "ClaimResult",
    "FinishResult",
    "NewRun",
    "NodeChanges",
    "NodeInit",
    "RunChanges",
    "RunPage",
]
