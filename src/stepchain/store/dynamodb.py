"""DynamoDB checkpoint store: one table, one partition per run, one API call per operation."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from stepchain.exceptions import IdempotencyConflict
from stepchain.requests import instrument
from stepchain.store.access import OWNER_GSI, OWNER_INDEX, OWNER_PK, idem_pk, owner_fields, owner_pk, token_sk
from stepchain.store.base import (
    ACTIVE_RUN,
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
from stepchain.store.items import classify_conflict, node_field_changes
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

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_ser = TypeSerializer()
_de = TypeDeserializer()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_plain(v) for v in value]
    return value


def to_av(value: Any) -> Any:
    return _ser.serialize(value)


def from_item(item: Any) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


def to_item(d: dict[str, Any]) -> dict[str, Any]:
    return {k: to_av(v) for k, v in d.items() if v is not None}


class _Update:
    """Builds one UpdateExpression with its names and values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.adds: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attr: str) -> str:
        self.names[f"#{attr}"] = attr
        return f"#{attr}"

    def value(self, tag: str, v: Any) -> str:
        self.values[f":{tag}"] = to_av(v)
        return f":{tag}"

    def set(self, attr: str, v: Any) -> None:
        self.sets.append(f"{self.name(attr)} = {self.value(attr, v)}")

    def set_expr(self, attr: str, expr: str) -> None:
        self.sets.append(f"{self.name(attr)} = {expr}")

    def add(self, attr: str, n: int) -> None:
        self.adds.append(f"{self.name(attr)} {self.value('inc_' + attr, n)}")

    def remove(self, attr: str) -> None:
        self.removes.append(self.name(attr))

    def history(self, push: HistoryPush) -> None:
        """SET the node's new history window as a value (no list_append: simpler to evaluate)."""
        self.set("history", [h.to_dict() for h in push.window])
        self.set("hist_n", push.count)

    def expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.adds:
            parts.append("ADD " + ", ".join(self.adds))
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        return " ".join(parts)

    def kwargs(self, condition: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"UpdateExpression": self.expression(), "ExpressionAttributeNames": self.names}
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        if condition:
            out["ConditionExpression"] = condition
        return out


def _node_update(c: NodeChanges, push: HistoryPush | None) -> _Update:
    u = _Update()
    fields = node_field_changes(c)
    for attr, v in fields.sets.items():
        u.set(attr, v)
    for attr, inc in fields.adds.items():
        u.add(attr, inc)
    for attr in fields.removes:
        u.remove(attr)
    if push is not None:
        u.history(push)
    return u


#: the sparse index of runs the sweeper looks at (``list_active_runs``): only active runs, and
#: cancelled ones until their cancel finished, carry its key attributes
ACTIVE_INDEX = "active"
ACTIVE_PK = "active_pk"
ACTIVE_SK = "active_sk"
ACTIVE = "ACTIVE"


def active_sk(now_ms: int, run_id: str) -> str:
    return f"{now_ms:015d}#{run_id}"


def _run_update(c: RunChanges, run_id: str) -> _Update:
    u = _Update()
    u.set("updated", c.now_ms)
    for attr, v in (
        ("status", None if c.status is None else c.status.value),
        ("current", c.current),
        ("output", c.output_ref),
        ("error", c.error),
    ):
        if v is not None:
            u.set(attr, v)
    if c.clear_error and c.error is None:
        u.remove("error")
    if c.ended:
        u.set("ended", c.now_ms)
    if c.add_redrive:
        u.add("redrives", 1)
    if c.settled or c.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        u.remove(ACTIVE_PK)  # leaves the sparse active-run index
        u.remove(ACTIVE_SK)
    elif c.status is not None and c.status in ACTIVE_RUN:  # (back) in the index, e.g. a redrive
        u.set(ACTIVE_PK, ACTIVE)
        u.set_expr(ACTIVE_SK, f"if_not_exists({u.name(ACTIVE_SK)}, {u.value(ACTIVE_SK, active_sk(c.now_ms, run_id))})")
    return u


def _status_in(u: _Update, statuses: tuple[Any, ...], tag: str) -> str:
    vals = ", ".join(u.value(f"{tag}{i}", s.value) for i, s in enumerate(statuses))
    return f"{u.name('status')} IN ({vals})"


class DynamoDBStore(CheckpointStore):
    """The production adapter. ``client`` is injected (or created lazily on first use)."""

    def __init__(
        self, table: str, client: DynamoDBClient | None = None, *, retention_s: int | None = 30 * 86400
    ) -> None:
        self.table = table
        self._client = instrument(client)  # counts requests per run (stepchain.requests)
        self.retention_s = retention_s

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            import boto3

            self._client = instrument(boto3.client("dynamodb"))
        return self._client

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    def _get_item(self, pk: str, sk: str) -> dict[str, Any] | None:
        resp = self.client.get_item(TableName=self.table, Key=self._key(pk, sk), ConsistentRead=True)
        item = resp.get("Item")
        return None if item is None else from_item(item)

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
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
        writes: list[Any] = [
            {"Put": {"TableName": self.table, "Item": to_item(run), "ConditionExpression": "attribute_not_exists(pk)"}},
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item(first),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        idem_key = idem_pk(new.workflow, new.idempotency_key or "", new.owner)
        if new.idempotency_key is not None:
            idem = {
                "pk": idem_key,
                "sk": "IDEM",
                "run_id": new.run_id,
                "request_hash": new.request_hash,
                "expires_at": exp,
            }
            writes.insert(
                0,
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": to_item(idem),
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            )
        try:
            self.client.transact_write_items(TransactItems=writes)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            if new.idempotency_key is None or not reasons or reasons[0].get("Code") != "ConditionalCheckFailed":
                raise
            old = from_item(reasons[0]["Item"]) if "Item" in reasons[0] else self._get_item(idem_key, "IDEM")
            if old is None or old.get("request_hash") != new.request_hash:
                raise IdempotencyConflict(
                    f"idempotency key {new.idempotency_key!r} was used with a different request"
                ) from None
            existing = self.get_run(str(old["run_id"]))
            assert existing is not None
            return existing, False
        return RunRecord.from_item(run), True

    def get_run(self, run_id: str) -> RunRecord | None:
        item = self._get_item(run_pk(run_id), RUN_SK)
        return None if item is None else RunRecord.from_item(item)

    def update_run(self, run_id: str, changes: RunChanges, *, expect: tuple[RunStatus, ...]) -> RunRecord | None:
        u = _run_update(changes, run_id)
        cond = _status_in(u, expect, "expect")
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(run_pk(run_id), RUN_SK),
                ReturnValues="ALL_NEW",
                **u.kwargs(f"attribute_exists(pk) AND {cond}"),
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return RunRecord.from_item(from_item(resp["Attributes"]))

    def list_runs(
        self,
        workflow: str,
        *,
        status: RunStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> RunPage:
        hash_key = (
            ("gsi1", "gsi1pk", f"WF#{workflow}")
            if owner is None
            else (OWNER_INDEX, OWNER_PK, owner_pk(owner, workflow))
        )
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": hash_key[0],
            "KeyConditionExpression": f"{hash_key[1]} = :wf",
            "ExpressionAttributeValues": {":wf": {"S": hash_key[2]}},
            "ScanIndexForward": False,
        }
        if status is not None:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status.value}
        if cursor:
            kwargs["ExclusiveStartKey"] = _start_key(cursor, workflow, hash_key[1:])
        runs: list[RunRecord] = []
        last: dict[str, Any] | None = None
        # A filter may leave pages short: keep reading (bounded) until the page is full.
        for _ in range(20):
            kwargs["Limit"] = limit - len(runs)
            resp = self.client.query(**kwargs)
            for item in resp.get("Items", []):
                runs.append(RunRecord.from_item(from_item(item)))
            last = resp.get("LastEvaluatedKey")
            if last is None or len(runs) >= limit:
                break
            kwargs["ExclusiveStartKey"] = last
        next_cursor = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
        return RunPage(runs, next_cursor)

    def list_active_runs(self, *, limit: int = 100, cursor: str | None = None) -> RunPage:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": ACTIVE_INDEX,
            "KeyConditionExpression": "#a = :a",
            "ExpressionAttributeNames": {"#a": ACTIVE_PK},
            "ExpressionAttributeValues": {":a": {"S": ACTIVE}},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        resp = self.client.query(**kwargs)
        runs = [RunRecord.from_item(from_item(item)) for item in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        return RunPage(runs, base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None)

    def add_crash_event(self, run_id: str, at_ms: int, node: str, kind: str) -> None:
        sk = crash_sk(at_ms, node, kind, secrets.token_hex(4))
        item = {"pk": run_pk(run_id), "sk": sk, "at_ms": at_ms, "node": node, "kind": kind}
        self.client.put_item(TableName=self.table, Item=to_item({**item, "expires_at": self.expires_at(at_ms)}))

    def list_crash_events(self, run_id: str) -> list[CrashEvent]:
        return sorted(CrashEvent.from_dict(i) for i in self._query_prefix(run_id, "C#"))

    # -- nodes ---------------------------------------------------------------------------------
    def get_node(self, run_id: str, key: str) -> NodeRecord | None:
        item = self._get_item(run_pk(run_id), node_sk(key))
        return None if item is None else NodeRecord.from_item(item)

    def _query_prefix(self, run_id: str, prefix: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": run_pk(run_id)}, ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        out: list[dict[str, Any]] = []
        while True:
            resp = self.client.query(**kwargs)
            out.extend(from_item(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def list_nodes(self, run_id: str, prefix: str = "") -> list[NodeRecord]:
        return [NodeRecord.from_item(i) for i in self._query_prefix(run_id, node_sk(prefix))]

    def _put_if_absent(self, item: dict[str, Any]) -> bool:
        try:
            self.client.put_item(
                TableName=self.table, Item=to_item(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def put_node_if_absent(self, init: NodeInit, now_ms: int) -> bool:
        pk = run_pk(init.run_id)
        return self._put_if_absent({"pk": pk, "sk": node_sk(init.key), **init.item(now_ms, self.expires_at(now_ms))})

    def _conditional_claim(self, run_id: str, key: str, u: _Update, condition: str) -> ClaimResult:
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(run_pk(run_id), node_sk(key)),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **u.kwargs(condition),
            )
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item")
            return classify_conflict(None if old is None else from_item(old))
        return ClaimResult(ClaimKind.CLAIMED, NodeRecord.from_item(from_item(resp["Attributes"])))

    def claim(
        self, run_id: str, key: str, *, node: str, index: int | None, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        u = _Update()
        u.set("status", NodeStatus.RUNNING.value)
        u.set("owner", owner)
        u.set("lease_until", lease_until_ms)
        u.set("cur_started", now_ms)
        # run_id, key, node and index derive from pk/sk: a claim that creates the node only
        # initialises what cannot be derived.
        for attr, v in (("started", now_ms), ("attempts", 1), ("expires_at", self.expires_at(now_ms))):
            if v is not None:
                u.set_expr(attr, f"if_not_exists({u.name(attr)}, {u.value('init_' + attr, v)})")
        u.add("invocations", 1)
        cond = f"attribute_not_exists(pk) OR {_status_in(u, CLAIMABLE, 'ok')}"
        return self._conditional_claim(run_id, key, u, cond)

    def takeover(
        self, run_id: str, key: str, *, stale: NodeRecord, owner: str, now_ms: int, lease_until_ms: int
    ) -> ClaimResult:
        u = _Update()
        u.set("owner", owner)
        u.set("lease_until", lease_until_ms)
        u.set("cur_started", now_ms)
        started = stale.current_started_ms or stale.started_ms or now_ms
        push = push_history(stale, Invocation(started, stale.lease_until_ms, "crashed"))
        self._evict(run_id, key, push)
        u.history(push)
        for attr in ("invocations", "attempts", "crashes"):
            u.add(attr, 1)
        cond = (
            f"{u.name('status')} = {u.value('running', NodeStatus.RUNNING.value)} AND "
            f"{u.name('owner')} = {u.value('stale', stale.owner)} AND "
            f"{u.name('lease_until')} < {u.value('now', now_ms)}"
        )
        return self._conditional_claim(run_id, key, u, cond)

    def extend_lease(self, run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
        u = _Update()
        u.set("lease_until", lease_until_ms)
        cond = (
            f"{u.name('status')} = {u.value('running', NodeStatus.RUNNING.value)} AND "
            f"{u.name('owner')} = {u.value('owner', owner)}"
        )
        try:
            self.client.update_item(TableName=self.table, Key=self._key(run_pk(run_id), node_sk(key)), **u.kwargs(cond))
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
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
        push = None
        if changes.invocation is not None:
            prior = changes.prior or self.get_node(run_id, key)  # the engine always passes prior
            if prior is None:
                return FinishResult.LOST
            push = push_history(prior, changes.invocation)
            self._evict(run_id, key, push)
        u = _node_update(changes, push)
        cond = f"attribute_exists(pk) AND {_status_in(u, expect, 'expect')}"
        if owner is not None:
            cond += f" AND {u.name('owner')} = {u.value('owner', owner)}"
        try:
            self.client.update_item(TableName=self.table, Key=self._key(run_pk(run_id), node_sk(key)), **u.kwargs(cond))
        except self.client.exceptions.ConditionalCheckFailedException:
            return FinishResult.LOST
        return FinishResult.OK

    def _evict(self, run_id: str, key: str, push: HistoryPush) -> None:
        """Write the invocations leaving the window BEFORE the node update that drops them: a crash
        in between leaves an H# item still inside the window (ignored by readers, rewritten with the
        same content by the next eviction), never a lost invocation."""
        pk = run_pk(run_id)
        for n, inv in push.evicted:
            item = {"pk": pk, "sk": history_sk(key, n), **inv.to_dict(), "expires_at": self.expires_at(inv.started_ms)}
            self.client.put_item(TableName=self.table, Item=to_item(item))

    def list_history(self, run_id: str, key: str | None = None) -> dict[str, dict[int, Invocation]]:
        out: dict[str, dict[int, Invocation]] = {}
        for item in self._query_prefix(run_id, history_prefix(key)):
            k, n = split_history_sk(str(item["sk"]))
            if key is None or k == key:
                out.setdefault(k, {})[n] = Invocation.from_dict(item)
        return out

    def add_checkpoint_hit(self, run_id: str, key: str) -> None:
        u = _Update()
        u.add("checkpoint_hits", 1)
        try:
            self.client.update_item(
                TableName=self.table, Key=self._key(run_pk(run_id), node_sk(key)), **u.kwargs("attribute_exists(pk)")
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return  # no such node (as in MemoryStore): nothing to count

    # -- each / once / events ------------------------------------------------------------------
    def put_each(self, run_id: str, key: str, loop: str, rec: EachRecord, *, generation: int = 0) -> bool:
        return self._put_if_absent(
            {
                "pk": run_pk(run_id),
                "sk": each_done_sk(key, loop, generation)
                if rec.complete
                else each_sk(key, loop, rec.index, generation),
                **rec.to_item(),
                "expires_at": self.expires_at(rec.ended_ms),
            }
        )

    @staticmethod
    def _each_record(item: dict[str, Any]) -> EachRecord:
        _, gen, loop, _ = parse_each_sk(str(item["sk"]))
        return EachRecord.from_item(item, loop, gen)

    def last_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> EachRecord | None:
        resp = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": run_pk(run_id)}, ":p": {"S": each_prefix(key, loop, generation)}},
            ConsistentRead=True,
            ScanIndexForward=False,
            Limit=1,
        )
        items = resp.get("Items", [])
        return self._each_record(from_item(items[0])) if items else None

    def list_each(self, run_id: str, key: str, loop: str, *, generation: int = 0) -> list[EachRecord]:
        recs = [self._each_record(i) for i in self._query_prefix(run_id, each_prefix(key, loop, generation))]
        return [r for r in recs if not r.complete]

    def list_each_all(self, run_id: str) -> dict[str, list[EachRecord]]:
        out: dict[str, list[EachRecord]] = {}
        for item in self._query_prefix(run_id, "E#"):
            rec = self._each_record(item)
            if not rec.complete:
                out.setdefault(parse_each_sk(str(item["sk"]))[0], []).append(rec)
        return out

    def get_once(self, run_id: str, key: str, name: str, *, generation: int = 0) -> str | None:
        item = self._get_item(run_pk(run_id), once_sk(key, name, generation))
        return None if item is None or "value" not in item else str(item["value"])

    def _put_once_item(self, item: dict[str, Any], *, return_old: bool) -> tuple[bool, dict[str, Any] | None]:
        """Put unless a result is there (absent or a marker: ok). Returns (written, the old item)."""
        try:
            resp = self.client.put_item(
                TableName=self.table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(pk) OR #state = :started",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":started": {"S": OnceState.STARTED.value}},
                ReturnValues="ALL_OLD" if return_old else "NONE",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item")  # the result comes back with the failure: no second read
            return False, None if old is None else from_item(old)
        old = resp.get("Attributes")
        return True, None if old is None else from_item(old)

    def start_once(
        self, run_id: str, key: str, name: str, *, owner: str, now_ms: int, generation: int = 0
    ) -> OnceStart:
        item = {
            "pk": run_pk(run_id),
            "sk": once_sk(key, name, generation),
            "state": OnceState.STARTED.value,
            "owner": owner,
            "at": now_ms,
            "expires_at": self.expires_at(now_ms),
        }
        written, old = self._put_once_item(item, return_old=True)
        if not written:
            if old is None:  # no item came back (should not happen): read the result
                return OnceStart(done_ref=self.get_once(run_id, key, name, generation=generation))
            return OnceStart(done_ref=str(old["value"]))
        if old is None:
            return OnceStart()
        return OnceStart(restarted=True, previous_owner=old.get("owner"))

    def put_once(self, run_id: str, key: str, name: str, value_ref: str, now_ms: int, *, generation: int = 0) -> str:
        item = {
            "pk": run_pk(run_id),
            "sk": once_sk(key, name, generation),
            "state": OnceState.DONE.value,
            "value": value_ref,
            "at": now_ms,
            "expires_at": self.expires_at(now_ms),
        }
        written, old = self._put_once_item(item, return_old=False)
        if written:
            return value_ref
        if old is not None:
            return str(old["value"])
        stored = self.get_once(run_id, key, name, generation=generation)
        return value_ref if stored is None else stored

    def put_event(self, run_id: str, name: str, payload_ref: str, now_ms: int) -> bool:
        return self._put_if_absent(
            {
                "pk": run_pk(run_id),
                "sk": event_sk(name),
                "value": payload_ref,
                "at": now_ms,
                "expires_at": self.expires_at(now_ms),
            }
        )

    def get_event(self, run_id: str, name: str) -> str | None:
        item = self._get_item(run_pk(run_id), event_sk(name))
        return None if item is None else str(item["value"])

    def spend_token(self, run_id: str, token_id: str, now_ms: int, expires_at: int) -> bool:
        return self._put_if_absent(
            {"pk": run_pk(run_id), "sk": token_sk(token_id), "at": now_ms, "expires_at": expires_at}
        )


def create_table(client: DynamoDBClient, table: str) -> None:
    """Create the checkpoint table with the same schema as template.yaml (tests, local runtime)."""
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": "S"}
            for n in ("pk", "sk", "gsi1pk", "gsi1sk", ACTIVE_PK, ACTIVE_SK, OWNER_PK)
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": ACTIVE_INDEX,
                "KeySchema": [
                    {"AttributeName": ACTIVE_PK, "KeyType": "HASH"},
                    {"AttributeName": ACTIVE_SK, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            OWNER_GSI,
        ],
        SSESpecification={"Enabled": True},
    )
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def _start_key(cursor: str, workflow: str, hash_key: tuple[str, str] | None = None) -> dict[str, Any]:
    """A :meth:`DynamoDBStore.list_runs` cursor back to its ExclusiveStartKey. ValueError unless it
    has exactly the shape this store returns (string / number key attributes of this workflow's index,
    and of this caller's part of the ``owner`` index: another caller's cursor is refused)."""
    attr, value = hash_key or ("gsi1pk", f"WF#{workflow}")
    try:
        key: Any = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, RecursionError, binascii.Error):
        raise ValueError("malformed cursor") from None
    ok = (
        isinstance(key, dict)
        and key.keys() <= {"pk", "sk", "gsi1sk", attr}
        and "pk" in key
        and all(isinstance(v, dict) and len(v) == 1 and isinstance(v.get("S", v.get("N")), str) for v in key.values())
        and key.get(attr, {"S": value}) == {"S": value}
    )
    if not ok:
        raise ValueError("malformed cursor")
    return dict(key)
