"""In-memory checkpoint store: the same contract as DynamoDB, for tests and the embedded runtime.

How a change becomes stored fields is in :mod:`stepchain.store.items`."""

from __future__ import annotations

import copy
import secrets
import threading
from typing import Any

from stepchain.exceptions import IdempotencyConflict
from stepchain.store.access import idem_pk, owner_fields, token_sk
from stepchain.store.base import (
    CheckpointStore,
    ClaimKind,
    ClaimResult,
    FinishResult,
    NewRun,
    NodeChanges,
    NodeInit,
    RunChanges,
    RunPage,
)
from stepchain.store.items import (
    apply_node_changes,
    apply_run_changes,
    classify_conflict,
    needs_sweeping,
    set_history,
)
from stepchain.store.records import (
    CLAIMABLE,
    RUN_SK,
    CrashEvent,
    EachRecord,
    HistoryPush,
    Invocation,
    NodeRecord,
    NodeStatus,
    OnceStart,
    OnceState,
    RunRecord,
    RunStatus,
    crash_sk,
    each_done_sk,
    each_prefix,
    each_sk,
    event_sk,
    history_prefix,
    history_sk,
    node_sk,
    once_sk,
    parse_each_sk,
    push_history,
    run_pk,
    split_history_sk,
)


class MemoryStore(CheckpointStore):
    """A dict behind a lock. Every method is atomic, like one DynamoDB call."""

    def __init__(self, retention_s: int | None = None) -> None:
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.retention_s = retention_s
        self.calls = 0

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        self.calls += 1
        item = self._items.get((pk, sk))
        return None if item is None else copy.deepcopy(item)

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        with self._lock:
            self.calls += 1
            idem_key = (idem_pk(new.workflow, new.idempotency_key or "", new.owner), "IDEM")
            if new.idempotency_key is not None:
                idem = self._items.get(idem_key)
                if idem is not None:
                    if idem["request_hash"] != new.request_hash:
                        raise IdempotencyConflict(
                            f"idempotency key {new.idempotency_key!r} was used with a different request"
                        )
                    return RunRecord.from_item(self._items[(run_pk(idem["run_id"]), RUN_SK)]), False
                self._items[idem_key] = {
                    "run_id": new.run_id,
                    "request_hash": new.request_hash,
                }
            exp = self.expires_at(new.now_ms)
            run = {
                "run_id": new.run_id,
                "workflow": new.workflow,
                "version": new.version,
                "status": RunStatus.RUNNING.value,
                "input": new.input_ref,
                "created": new.now_ms,
                "updated": new.now_ms,
                "current": new.first.key,
                **owner_fields(new.owner, new.workflow),
                **new.extra,
            }
            if new.idempotency_key is not None:
                run["idempotency_key"] = new.idempotency_key
            self._items[(run_pk(new.run_id), RUN_SK)] = run
            self._items[(run_pk(new.run_id), node_sk(new.first.key))] = new.first.item(new.now_ms, exp)
            return RunRecord.from_item(run), True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            item = self._get(run_pk(run_id), RUN_SK)
            return None if item is None else RunRecord.from_item(item)

    def update_run(self, run_id: str, changes: RunChanges, *, expect: tuple[RunStatus, ...]) -> RunRecord | None:
        with self._lock:
            self.calls += 1
            item = self._items.get((run_pk(run_id), RUN_SK))
            if item is None or RunStatus(item["status"]) not in expect:
                return None
            apply_run_changes(item, changes)
            return RunRecord.from_item(copy.deepcopy(item))

    def list_runs(
        self,
        workflow: str,
        *,
        status: RunStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> RunPage:
        with self._lock:
            self.calls += 1
            runs = [
                RunRecord.from_item(copy.deepcopy(v))
                for (pk, sk), v in self._items.items()
                if sk == RUN_SK and v["workflow"] == workflow and (owner is None or v.get("owner") == owner)
            ]
        runs.sort(key=lambda r: (r.created_ms, r.run_id), reverse=True)
        if cursor is not None:
            created, run_id = cursor.split(":", 1)
            runs = [r for r in runs if (r.created_ms, r.run_id) < (int(created), run_id)]
        if status is not None:
            runs = [r for r in runs if r.status is status]
        page = runs[:limit]
        more = len(runs) > limit
        return RunPage(page, f"{page[-1].created_ms}:{page[-1].run_id}" if more and page else None)

    def list_active_runs(self, *, limit: int = 100, cursor: str | None = None) -> RunPage:
        with self._lock:
            self.calls += 1
            items = [v for (_, sk), v in self._items.items() if sk == RUN_SK and needs_sweeping(v)]
            runs = sorted((RunRecord.from_item(copy.deepcopy(v)) for v in items), key=lambda r: r.run_id)
        if cursor is not None:
            runs = [r for r in runs if r.run_id > cursor]
        page = runs[:limit]
        return RunPage(page, page[-1].run_id if len(runs) > limit and page else None)

    def add_crash_event(self, run_id: str, at_ms: int, node: str, kind: str) -> None:
        with self._lock:
            self.calls += 1
            sk = crash_sk(at_ms, node, kind, secrets.token_hex(4))
            self._items[(run_pk(run_id), sk)] = {"at_ms": at_ms, "node": node, "kind": kind}

    def list_crash_events(self, run_id: str) -> list[CrashEvent]:
        with self._lock:
            self.calls += 1
            pk = run_pk(run_id)
            return sorted(CrashEvent.from_dict(v) for (p, sk), v in self._items.items() if p == pk and sk[:2] == "C#")

    def _evict(self, run_id: str, key: str, push: HistoryPush) -> None:
        for n, inv in push.evicted:
            self._items[(run_pk(run_id), history_sk(key, n))] = inv.to_dict()

    def list_history(self, run_id: str, key: str | None = None) -> dict[str, dict[int, Invocation]]:
        with self._lock:
            self.calls += 1
            pk, prefix = run_pk(run_id), history_prefix(key)
            out: dict[str, dict[int, Invocation]] = {}
            for (p, sk), v in sorted(self._items.items()):
                if p == pk and sk.startswith(prefix):
                    k, n = split_history_sk(sk)
                    if key is None or k == key:
                        out.setdefault(k, {})[n] = Invocation.from_dict(v)
            return out

    # -- nodes ---------------------------------------------------------------------------------
    def get_node(self, run_id: str, key: str) -> NodeRecord | None:
        with self._lock:
            item = self._get(run_pk(run_id), node_sk(key))
            return None if item is None else NodeRecord.from_item(item)

    def list_nodes(self, run_id: str, prefix: str = "") -> list[NodeRecord]:
        with self._lock:
            self.calls += 1
            pk, start = run_pk(run_id), node_sk(prefix)
            items = sorted(
                (sk, copy.deepcopy(v)) for (p, sk), v in self._items.items() if p == pk and sk.startswith(start)
            )
        return [NodeRecord.from_item(v) for _, v in items]

    def put_node_if_absent(self, init: NodeInit, now_ms: int) -> bool:
        with self._lock:
            self.calls += 1
            k = (run_pk(init.run_id), node_sk(init.key))
            if k in self._items:
                return False
            self._items[k] = init.item(now_ms, self.expires_at(now_ms))
            return True

    def claim(
        self, run_id: str, key: str, *, node: str, index: int | None, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        with self._lock:
            self.calls += 1
            k = (run_pk(run_id), node_sk(key))
            item = self._items.get(k)
            if item is not None and NodeStatus(item["status"]) not in CLAIMABLE:
                return classify_conflict(copy.deepcopy(item))
            if item is None:
                item = {"run_id": run_id, "key": key, "node": node, "attempts": 1, "created": now_ms}
                if index is not None:
                    item["index"] = index
                exp = self.expires_at(now_ms)
                if exp is not None:
                    item["expires_at"] = exp
                self._items[k] = item
            item.update(status=NodeStatus.RUNNING.value, owner=owner, lease_until=lease_until_ms, cur_started=now_ms)
            item.setdefault("started", now_ms)
            item["invocations"] = item.get("invocations", 0) + 1
            return ClaimResult(ClaimKind.CLAIMED, NodeRecord.from_item(copy.deepcopy(item)))

    def takeover(
        self, run_id: str, key: str, *, stale: NodeRecord, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        with self._lock:
            self.calls += 1
            item = self._items.get((run_pk(run_id), node_sk(key)))
            if (
                item is None
                or item["status"] != NodeStatus.RUNNING.value
                or item.get("owner") != stale.owner
                or int(item.get("lease_until", 0)) >= now_ms
            ):
                return classify_conflict(copy.deepcopy(item) if item else None)
            started = stale.current_started_ms or stale.started_ms or now_ms
            push = push_history(stale, Invocation(started, stale.lease_until_ms, "crashed"))
            self._evict(run_id, key, push)
            set_history(item, push)
            item.update(owner=owner, lease_until=lease_until_ms, cur_started=now_ms)
            for name in ("invocations", "attempts", "crashes"):
                item[name] = item.get(name, 0) + 1
            return ClaimResult(ClaimKind.CLAIMED, NodeRecord.from_item(copy.deepcopy(item)))

    def extend_lease(self, run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
        with self._lock:
            self.calls += 1
            item = self._items.get((run_pk(run_id), node_sk(key)))
            if item is None or item["status"] != NodeStatus.RUNNING.value or item.get("owner") != owner:
                return False
            item["lease_until"] = lease_until_ms
            return True

    def finish(
        self,
        run_id: str,
        key: str,
        changes: NodeChanges,
        *,
        owner: str | None = None,
        expect: tuple[NodeStatus, ...] = (NodeStatus.RUNNING,),
    ) -> FinishResult:
        with self._lock:
            self.calls += 1
            item = self._items.get((run_pk(run_id), node_sk(key)))
            if item is None or NodeStatus(item["status"]) not in expect:
                return FinishResult.LOST
            if owner is not None and item.get("owner") != owner:
                return FinishResult.LOST
            if changes.invocation is not None:
                prior = changes.prior or NodeRecord.from_item({"sk": node_sk(key), "pk": run_pk(run_id), **item})
                push = push_history(prior, changes.invocation)
                self._evict(run_id, key, push)
                set_history(item, push)
            apply_node_changes(item, changes)
            return FinishResult.OK

    def add_checkpoint_hit(self, run_id: str, key: str) -> None:
        with self._lock:
            self.calls += 1
            item = self._items.get((run_pk(run_id), node_sk(key)))
            if item is not None:
                item["checkpoint_hits"] = item.get("checkpoint_hits", 0) + 1

    # -- each / once / events ------------------------------------------------------------------
    def put_each(self, run_id: str, key: str, loop: str, rec: EachRecord, *, generation: int = 0) -> bool:
        with self._lock:
            self.calls += 1
            sk = each_done_sk(key, loop, generation) if rec.complete else each_sk(key, loop, rec.index, generation)
            k = (run_pk(run_id), sk)
            if k in self._items:
                return False
            self._items[k] = rec.to_item()
            exp = self.expires_at(rec.ended_ms)
            if exp is not None:
                self._items[k]["expires_at"] = exp
            return True

    def _each(self, run_id: str, prefix: str) -> list[tuple[str, EachRecord]]:
        pk = run_pk(run_id)
        out = []
        for (p, sk), v in self._items.items():
            if p == pk and sk.startswith(prefix):
                _, gen, loop, _ = parse_each_sk(sk)
                out.append((sk, EachRecord.from_item(v, loop, gen)))
        return sorted(out)

    def last_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> EachRecord | None:
        with self._lock:
            self.calls += 1
            found = self._each(run_id, each_prefix(key, loop, generation))
            return found[-1][1] if found else None

    def list_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> list[EachRecord]:
        with self._lock:
            self.calls += 1
            return [r for _, r in self._each(run_id, each_prefix(key, loop, generation)) if not r.complete]

    def list_each_all(self, run_id: str) -> dict[str, list[EachRecord]]:
        with self._lock:
            self.calls += 1
            out: dict[str, list[EachRecord]] = {}
            for sk, rec in self._each(run_id, "E#"):
                if not rec.complete:
                    out.setdefault(parse_each_sk(sk)[0], []).append(rec)
            return out

    def get_once(self, run_id: str, key: str, name: str, *, generation: int = 0) -> str | None:
        with self._lock:
            item = self._get(run_pk(run_id), once_sk(key, name, generation))
            return None if item is None or "value" not in item else str(item["value"])

    def start_once(
        self, run_id: str, key: str, name: str, *, owner: str, now_ms: int, generation: int = 0
    ) -> OnceStart:
        with self._lock:
            self.calls += 1
            k = (run_pk(run_id), once_sk(key, name, generation))
            old = self._items.get(k)
            if old is not None and "value" in old:
                return OnceStart(done_ref=str(old["value"]))
            self._items[k] = {"state": OnceState.STARTED.value, "owner": owner, "at": now_ms}
            exp = self.expires_at(now_ms)
            if exp is not None:
                self._items[k]["expires_at"] = exp
            if old is None:
                return OnceStart()
            return OnceStart(restarted=True, previous_owner=old.get("owner"))

    def put_once(self, run_id: str, key: str, name: str, value_ref: str, now_ms: int, *, generation: int = 0) -> str:
        with self._lock:
            self.calls += 1
            k = (run_pk(run_id), once_sk(key, name, generation))
            old = self._items.get(k)
            if old is not None and "value" in old:
                return str(old["value"])
            self._items[k] = {"state": OnceState.DONE.value, "value": value_ref, "at": now_ms}
            exp = self.expires_at(now_ms)
            if exp is not None:
                self._items[k]["expires_at"] = exp
            return value_ref

    def put_event(self, run_id: str, name: str, payload_ref: str, now_ms: int) -> bool:
        with self._lock:
            self.calls += 1
            k = (run_pk(run_id), event_sk(name))
            if k in self._items:
                return False
            self._items[k] = {"value": payload_ref, "at": now_ms}
            return True

    def get_event(self, run_id: str, name: str) -> str | None:
        with self._lock:
            item = self._get(run_pk(run_id), event_sk(name))
            return None if item is None else str(item["value"])

    def spend_token(self, run_id: str, token_id: str, now_ms: int, expires_at: int) -> bool:
        with self._lock:
            self.calls += 1
            k = (run_pk(run_id), token_sk(token_id))
            if k in self._items:
                return False
            self._items[k] = {"at": now_ms, "expires_at": expires_at}
            return True
