"""The request meter (stepchain.requests): what a node write takes, and how units are estimated."""

from __future__ import annotations

import json

import boto3

from stepchain.requests import _item_sizes, _record, instrument, metering, take_for_node_write


def test_a_node_write_takes_the_counts_so_far_plus_itself_and_the_meter_restarts() -> None:
    assert take_for_node_write("SUCCEEDED") == {}  # outside an activation nothing is counted
    with metering({"sfn_transition": 1, "lambda_invoke": 1}):
        _record("dynamodb", "UpdateItem", [100], 0)  # the claim
        _record("dynamodb", "GetItem", [], 5000)  # 2 read units (4 KB each, strongly consistent)
        first = take_for_node_write("RETRYING")  # a retry: the wake Pass and the Wait follow the Task
        assert first == {
            "sfn_transition": 3,
            "lambda_invoke": 1,
            "ddb_write": 2,
            "ddb_wru": 2,
            "ddb_read": 1,
            "ddb_rru": 2,
        }
        _record("dynamodb", "UpdateItem", [3000], 0)  # the write that carried them: 3 KB -> 2 more units
        _record("s3", "PutObject", [], 0)
        assert take_for_node_write("SUCCEEDED") == {"ddb_wru": 2 + 1, "ddb_write": 1, "s3_put": 1}
    assert take_for_node_write("SUCCEEDED") == {}


def test_transactions_cost_two_units_per_item_and_sends_are_the_receivers() -> None:
    body = json.dumps({"TransactItems": [{"Put": {"Item": {"a": {"S": "x" * 1500}}}}, {"Update": {"Key": {}}}]})
    sizes = _item_sizes(body)
    assert len(sizes) == 2 and sizes[0] > 1500
    with metering() as meter:
        _record("dynamodb", "TransactWriteItems", sizes, 0)
        _record("sqs", "SendMessageBatch", [], 0)
        _record("sqs", "ChangeMessageVisibility", [], 0)
        assert dict(meter.counts) == {"ddb_write": 1, "ddb_wru": 2 * (2 + 1), "sqs_other": 1}


def test_instrument_is_idempotent_and_ignores_objects_that_are_not_clients() -> None:
    from stepchain.store.dynamodb import create_table
    from stepchain.testing import moto_aws

    with moto_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "t")
        assert instrument(instrument(client)) is client  # twice: still one count per call
        with metering() as meter:
            client.get_item(TableName="t", Key={"pk": {"S": "a"}, "sk": {"S": "b"}})
            assert dict(meter.counts) == {"ddb_read": 1, "ddb_rru": 1}
    sentinel = object()
    assert instrument(sentinel) is sentinel and instrument(None) is None
