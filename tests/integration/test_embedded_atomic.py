"""The embedded runtime's DynamoDB answers each request atomically, as DynamoDB does.

moto's threaded server puts the item an UpdateItem creates into the table before it applies the
update: a Query at that moment returned a node item with no ``status`` (the API's GET /runs/{id}
answered 500 while a worker claimed the run's next node; seen once in ``make test`` under load).
``stepchain.runtimes.local.EmbeddedAws`` serializes DynamoDB requests (not SQS's long polls)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from stepchain.runtimes.local import EmbeddedAws

KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
ATTRS = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]


def hammer(ddb: Any, seconds: float) -> tuple[int, int]:
    """Writers create node items with a conditional UpdateItem (as a claim does) while readers
    query the partition; returns (items read, items read without a status)."""
    stop = threading.Event()
    seen, bad = [0], [0]

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            ddb.update_item(
                TableName="t",
                Key={"pk": {"S": "RUN#r"}, "sk": {"S": f"N#w{w}-{i:06d}"}},
                UpdateExpression="SET #s = :s, #o = :o, #l = :l ADD #n :one",
                ConditionExpression="attribute_not_exists(pk) OR #s IN (:p)",
                ExpressionAttributeNames={"#s": "status", "#o": "owner", "#l": "lease_until", "#n": "invocations"},
                ExpressionAttributeValues={
                    ":s": {"S": "RUNNING"}, ":o": {"S": "w"}, ":l": {"N": "1"}, ":one": {"N": "1"},
                    ":p": {"S": "PENDING"},
                },
            )  # fmt: skip

    def reader() -> None:
        while not stop.is_set():
            items = ddb.query(
                TableName="t",
                KeyConditionExpression="pk = :p AND begins_with(sk, :n)",
                ExpressionAttributeValues={":p": {"S": "RUN#r"}, ":n": {"S": "N#"}},
                ScanIndexForward=False,
                Limit=20,
            )["Items"]
            seen[0] += len(items)
            bad[0] += sum(1 for it in items if "status" not in it)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return seen[0], bad[0]


@pytest.mark.slow
def test_a_query_never_sees_an_item_an_update_is_still_creating() -> None:
    with EmbeddedAws() as aws:
        ddb = aws.client("dynamodb")
        ddb.create_table(TableName="t", KeySchema=KEYS, AttributeDefinitions=ATTRS, BillingMode="PAY_PER_REQUEST")
        seen, bad = hammer(ddb, 4.0)
    assert seen > 100  # the readers did read, while items were being created
    assert bad == 0
