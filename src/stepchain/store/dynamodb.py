"""DynamoDB checkpoint store: one table, one partition per run, one API call per primitive.

Only the port's primitives live here (:mod:`stepchain.store.port`): a :class:`Cond` becomes a
ConditionExpression, an :class:`Update` an UpdateExpression; every operation and change table is
:class:`~stepchain.store.base.CheckpointStore`'s, shared with the in-memory adapter."""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from stepchain.requests import instrument
from stepchain.store.access import OWNER_GSI, OWNER_INDEX, OWNER_PK, owner_pk
from stepchain.store.base import CheckpointStore, RunPage
from stepchain.store.items import ACTIVE, ACTIVE_INDEX, ACTIVE_PK, ACTIVE_SK
from stepchain.store.port import Cond, TxUpdate, TxWrite, Update
from stepchain.store.records import RunRecord, RunStatus

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


class _Expr:
    """One request's expressions (update and condition) with their names and values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attr: str) -> str:
        self.names[f"#{attr}"] = attr
        return f"#{attr}"

    def value(self, tag: str, v: Any) -> str:
        self.values[f":{tag}"] = to_av(v)
        return f":{tag}"

    def update(self, u: Update) -> str:
        sets = [f"{self.name(a)} = {self.value(a, v)}" for a, v in u.sets.items()]
        sets += [
            f"{self.name(a)} = if_not_exists({self.name(a)}, {self.value('init_' + a, v)})" for a, v in u.inits.items()
        ]
        adds = [f"{self.name(a)} {self.value('inc_' + a, n)}" for a, n in u.adds.items()]
        parts = [("SET", sets), ("ADD", adds), ("REMOVE", [self.name(a) for a in u.removes])]
        return " ".join(f"{verb} {', '.join(terms)}" for verb, terms in parts if terms)

    def clause(self, clause: tuple[str, str, Any], tag: str) -> str:
        attr, op, v = clause
        if op == "any":
            return "(" + " OR ".join(self.clause(sub, f"{tag}_{j}") for j, sub in enumerate(v)) + ")"
        if op == "missing":
            return f"attribute_not_exists({self.name(attr)})"
        if op == "in":
            return f"{self.name(attr)} IN ({', '.join(self.value(f'{tag}_{j}', x) for j, x in enumerate(v))})"
        return f"{self.name(attr)} {op} {self.value(tag, v)}"

    def condition(self, c: Cond) -> str:
        body = " AND ".join(self.clause(clause, f"c{i}") for i, clause in enumerate(c.clauses))
        if c.absent is None:
            return body
        head, join = ("attribute_not_exists(pk)", " OR ") if c.absent else ("attribute_exists(pk)", " AND ")
        return head + (join + body if body else "")

    def kwargs(self, update: Update | None, cond: Cond | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if update is not None:
            out["UpdateExpression"] = self.update(update)
        if cond is not None and (expr := self.condition(cond)):
            out["ConditionExpression"] = expr
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


#: a transaction cancelled by a concurrent one (``TransactionConflict``) is tried again this often
TRANSACTION_CONFLICT_RETRIES = 4


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

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        resp = self.client.get_item(TableName=self.table, Key=_key(pk, sk), ConsistentRead=True)
        item = resp.get("Item")
        return None if item is None else from_item(item)

    def _put(
        self, item: dict[str, Any], cond: Cond | None = None, *, return_old: bool = False, old_on_failure: bool = False
    ) -> tuple[bool, dict[str, Any] | None]:
        kwargs = _Expr().kwargs(None, cond)
        if return_old:
            kwargs["ReturnValues"] = "ALL_OLD"
        if old_on_failure:
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            resp = self.client.put_item(TableName=self.table, Item=to_item(item), **kwargs)
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            return False, _old(exc.response)
        return True, _attributes(resp)

    def _update(
        self,
        pk: str,
        sk: str,
        update: Update,
        cond: Cond | None = None,
        *,
        return_new: bool = False,
        old_on_failure: bool = False,
    ) -> tuple[bool, dict[str, Any] | None]:
        kwargs = _Expr().kwargs(update, cond)
        if return_new:
            kwargs["ReturnValues"] = "ALL_NEW"
        if old_on_failure:
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            resp = self.client.update_item(TableName=self.table, Key=_key(pk, sk), **kwargs)
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            return False, _old(exc.response)
        return True, _attributes(resp)

    def _query(
        self, pk: str, prefix: str, *, newest_first: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        if after is not None:  # the prefix's range from ``after`` (BETWEEN is inclusive: one more, dropped below)
            kwargs["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :a AND :b"
            values = {":pk": {"S": pk}, ":a": {"S": max(after, prefix)}, ":b": {"S": prefix + "\U0010ffff"}}
            kwargs["ExpressionAttributeValues"] = values
        if newest_first:
            kwargs["ScanIndexForward"] = False
        want = None if limit is None else limit + (after is not None)
        if want is not None:
            kwargs["Limit"] = want
        out: list[dict[str, Any]] = []
        while True:
            resp = self.client.query(**kwargs)
            out.extend(from_item(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp or (want is not None and len(out) >= want):
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        if after is not None:
            out = [i for i in out if str(i["sk"]) > after]
        return out[:limit]

    def _transact(self, writes: Sequence[TxWrite]) -> tuple[int, dict[str, Any] | None] | None:
        items: list[Any] = []
        for w in writes:
            if isinstance(w, TxUpdate):
                upd = {"TableName": self.table, "Key": _key(w.pk, w.sk), **_Expr().kwargs(w.update, w.cond)}
                items.append({"Update": {**upd, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}})
            else:
                put = {"TableName": self.table, "Item": to_item(w[0]), **_Expr().kwargs(None, w[1])}
                items.append({"Put": {**put, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}})
        for attempt in range(TRANSACTION_CONFLICT_RETRIES + 1):
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons", [])
                for i, reason in enumerate(reasons):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        return i, from_item(reason["Item"]) if "Item" in reason else None
                # a concurrent transaction on one of the items (two stream writers racing for the
                # same sequence number): this one wrote nothing, so trying again is safe
                conflict = any(r.get("Code") == "TransactionConflict" for r in reasons)
                if not conflict or attempt == TRANSACTION_CONFLICT_RETRIES:
                    raise
                time.sleep(0.01 * (attempt + 1) * (1 + random.random()))
            else:
                return None
        return None  # not reached: the last attempt returns or raises

    # -- index queries (each adapter has its own cursor) --------------------------------------------
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


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _old(response: Any) -> dict[str, Any] | None:
    """The item a failed condition returned (``ReturnValuesOnConditionCheckFailure=ALL_OLD``)."""
    old = response.get("Item")
    return None if old is None else from_item(old)


def _attributes(response: Any) -> dict[str, Any] | None:
    attrs = response.get("Attributes")
    return None if attrs is None else from_item(attrs)


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
