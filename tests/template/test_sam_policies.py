"""Least privilege and data protection, read from template.yaml and from what the SAM transform makes of it.

IAM: an Allow on Resource "*" is accepted only for actions that have no resource-level permissions in the
IAM service reference (cfn-lint ships it as Policies.json), e.g. states:SendTaskSuccess. Everything that
can be scoped to a table, bucket, queue, state machine or function must be.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from importlib import resources as importlib_resources
from typing import Any

import pytest

# What SAM attaches on its own (Tracing: Active, the basic execution role). Anything else - notably
# AWSLambdaSQSQueueExecutionRole, which SAM's `Events: SQS` adds with receive/delete on every queue - fails.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


@pytest.fixture(scope="module")
def iam_actions() -> dict[str, dict[str, Any]]:
    spec = importlib_resources.files("cfnlint.data.AdditionalSpecs").joinpath("Policies.json")
    return {svc: data.get("Actions", {}) for svc, data in json.loads(spec.read_text()).items()}


def branches(value: Any) -> Iterator[Any]:
    """Both sides of a Fn::If (minus AWS::NoValue), recursively; any other value as is."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        for side in value["Fn::If"][1:]:
            yield from branches(side)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def statements(cfn: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for lid, res in cfn["Resources"].items():
        props = res.get("Properties", {})
        docs = []
        if res["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for item in props.get("Policies", []) for p in branches(item)]
        elif res["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            docs = [props["PolicyDocument"]]
        for doc in docs:
            for stmt in doc["Statement"]:
                yield lid, stmt


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def scopable(action: str, iam_actions: dict[str, dict[str, Any]]) -> bool:
    """True if any action matching `action` (wildcards allowed) supports resource-level permissions."""
    service, _, name = action.lower().partition(":")
    matching = fnmatch.filter(iam_actions.get(service, {}), name)
    assert matching, f"{action} is not a known IAM action"
    return any(iam_actions[service][m].get("Resources") for m in matching)


def test_no_scopable_action_is_granted_on_every_resource(
    transformed: dict[str, Any], iam_actions: dict[str, dict[str, Any]]
) -> None:
    offenders = []
    for lid, stmt in statements(transformed):
        if stmt["Effect"] == "Allow" and "*" in as_list(stmt["Resource"]):
            offenders += [(lid, a) for a in as_list(stmt["Action"]) if scopable(a, iam_actions)]
    assert not offenders


def test_no_action_wildcards_in_our_own_statements(transformed: dict[str, Any]) -> None:
    for lid, stmt in statements(transformed):
        if stmt["Effect"] == "Allow" and stmt.get("Sid"):  # ours carry a Sid; SAM's policy templates do not
            assert not [a for a in as_list(stmt["Action"]) if "*" in a], (lid, stmt)


def test_only_expected_aws_managed_policies_are_attached(transformed: dict[str, Any]) -> None:
    for lid, res in transformed["Resources"].items():
        if res["Type"] == "AWS::IAM::Role":
            arns = {a for a in res["Properties"].get("ManagedPolicyArns", []) if isinstance(a, str)}
            assert arns <= ALLOWED_MANAGED_POLICIES, (lid, arns - ALLOWED_MANAGED_POLICIES)


def test_bedrock_is_granted_only_to_the_llm_steps_and_only_in_bedrock_mode(transformed: dict[str, Any]) -> None:
    granted = {}
    for lid, res in transformed["Resources"].items():
        if res["Type"] == "AWS::IAM::Role":
            for item in res["Properties"].get("Policies", []):
                for doc in branches(item):
                    for stmt in doc["PolicyDocument"]["Statement"]:
                        if any(a.startswith("bedrock:") for a in as_list(stmt["Action"])):
                            granted[lid] = item
    assert set(granted) == {"SummarizeFunctionRole", "CrossrefFunctionRole", "DraftFunctionRole"}
    assert all(item["Fn::If"][0] == "UseBedrock" for item in granted.values())


def test_table_is_encrypted_with_point_in_time_recovery_and_ttl(resources: dict[str, Any]) -> None:
    tables = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert tables
    for props in tables:
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_buckets_are_encrypted_private_owner_enforced_and_tls_only(resources: dict[str, Any]) -> None:
    buckets = [lid for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"]
    assert buckets
    for lid in buckets:
        props = resources[lid]["Properties"]
        rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert all(r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for r in rules)
        assert all(props["PublicAccessBlockConfiguration"][k] is True for k in (
            "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))  # fmt: skip
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        [expire] = props["LifecycleConfiguration"]["Rules"]
        assert expire["Status"] == "Enabled" and expire["ExpirationInDays"] == {"Ref": "RetentionDays"}
        policies = [r["Properties"] for r in resources.values()
                    if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": lid}]  # fmt: skip
        denies = [s for p in policies for s in p["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies), lid


def test_queues_are_encrypted(resources: dict[str, Any]) -> None:
    queues = {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    assert len(queues) == 7
    for lid, props in queues.items():
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, lid
