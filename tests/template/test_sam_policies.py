"""Least privilege and data protection, read from template.yaml and from what the SAM transform makes of it.

IAM: an Allow on Resource "*" is accepted only for actions that have no resource-level permissions in the
IAM service reference (cfn-lint ships it as Policies.json), e.g. states:SendTaskSuccess. Everything that
can be scoped to a table, bucket, queue, state machine or function must be.

ACTIONS below is the table of which function may call which action, derived by READING the code each function
runs; test_iam_measured.py checks the same roles against the calls RECORDED on every code path (iam_paths.py),
so a change of the code's calls fails there with the measured difference, and this table follows it:

* every DynamoDB call is in ``stepchain/store/dynamodb.py``: ``get_item`` (GetItem), ``put_item`` (PutItem),
  ``update_item`` (UpdateItem), ``query`` (Query; on the table, on index ``gsi1`` in ``list_runs`` and on index
  ``active`` in ``list_active_runs``) and ``transact_write_items`` in ``create_run``, which IAM authorizes as
  one PutItem per item (there is no IAM action TransactWriteItems). ``create_table`` is for tests only.
  Never called: Scan, DeleteItem, BatchGetItem, BatchWriteItem, ConditionCheckItem.
* S3 (``stepchain/store/payloads.py`` S3BlobStore): ``put_object`` when a value is encoded (``PayloadCodec.encode``:
  step outputs, map items, large run inputs, event payloads, redrive inputs), ``get_object`` when one is
  decoded, and ``generate_presigned_url("get_object")``, which makes no call but needs GetObject for the URL
  to work. Never called: DeleteObject, ListBucket, any ACL / lifecycle / bucket configuration.
* the step workers (``step_handler``: ``engine.process`` and ``stepchain/define/context.py``) claim, finish and
  read nodes, write once/each/crash items, query a run's partition, encode and decode payloads; with SQS they
  send the next activation (``handoff/sqs.py``: send_message, send_message_batch = sqs:SendMessage) and their
  event source mapping receives, deletes and reads attributes of their own queue. They never start, stop or
  signal executions: the state machine drives itself (``handoff/stepfunctions.py`` ``_send`` is a no-op).
* ControlFunction serves waits, wait deadlines and ``fail`` tasks (``aws/sfn_worker.py``, ``engine._wait``,
  ``_wait_deadline``, ``fail_node``) and call nodes (``engine/nodes/children.py``): checkpoint items and
  SendTaskSuccess (``send_task_success``), StartExecution of child runs and, cancelling one, StopExecution
  and a Query of its partition (``finish_cancel``); it never encodes or decodes a payload, so no S3 (measured).
* ApiFunction (``api/app.py`` -> ``engine.start``, ``get_run``, ``store.list_runs`` (gsi1), ``describe``,
  ``deliver_event``, ``cancel``, ``redrive``): checkpoint items, gsi1, payload objects, StartExecution
  (start, redrive), StopExecution (cancel), SendTaskSuccess (an event completing a wait), SendMessage (SQS),
  and GetSecretValue for the cursor and approval-token keys (``api/security.py``, ``api/tokens.py``); a
  caller's own runs are listed from index ``owner`` (``store/access.py``). Never: DescribeExecution, RedriveExecution.
* SweeperFunction (``sweeper.py``: ``list_active_runs`` on index ``active``, ``handoff.recover``
  (DescribeExecution, StartExecution or SendMessage), ``finish_cancel`` (StopExecution), ``finish_event``
  (SendTaskSuccess), ``fail_node``): no S3.
* the state machine invokes the six worker functions and delivers its logs.
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
#: the account-wide role API Gateway writes access logs with
APIGW_LOGS_POLICY = {
    "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
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


TABLE = {"Fn::GetAtt": ["CheckpointTable", "Arn"]}
PAYLOAD_OBJECTS = {"Fn::Sub": "${PayloadBucket.Arn}/payloads/*"}
CHECKPOINTS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}
PAYLOADS = {"s3:GetObject", "s3:PutObject"}
POLL = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
STEP = CHECKPOINTS | PAYLOADS | POLL | {"sqs:SendMessage"}
LLM_STEP = STEP | {"bedrock:InvokeModel"}  # only with LlmProvider=bedrock (checked below)
LOG_DELIVERY = {
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}  # fmt: skip
#: the app has a call node (the tool agent's delegate, a child run of tool-lookup; samgen_children.py):
#: ChildRunsPolicy: ControlFunction serves the call node, so it starts the child run (StartExecution on the
#: tool-lookup state machine only) and cancels it if the parent was cancelled meanwhile (StopExecution;
#: ``RunService.finish_cancel`` lists the child's nodes: Query on the table); no payloads (a call node's join
#: passes the child's output reference on; only a parallel node's join decodes and encodes outputs).
#: EndChildRunsPolicy: the worker of tool-lookup's steps ends the child run and, on Step Functions, joins
#: the parent node and completes its task token (SendTaskSuccess). No other worker starts, stops or joins
#: a child run (measured in test_iam_measured.py).
CHILD_RUNS = {"states:StartExecution", "states:StopExecution", "dynamodb:Query"}
ENDS_CHILD_RUNS = {"states:SendTaskSuccess"}
#: role -> every action its statements allow (inline and our own managed policies; AWS managed ones apart)
ACTIONS = {
    "PlanFunctionRole": STEP,
    "FetchFunctionRole": STEP,
    "SummarizeFunctionRole": LLM_STEP,
    "CrossrefFunctionRole": LLM_STEP,
    "DraftFunctionRole": LLM_STEP,
    "ToolAgentFunctionRole": STEP,  # the tool agent's steps (functions/tool_agent): no Bedrock
    "ToolLookupFunctionRole": STEP | ENDS_CHILD_RUNS,  # its delegate's steps: they end the child run
    "ControlFunctionRole": CHECKPOINTS | POLL | {"sqs:SendMessage", "states:SendTaskSuccess"} | CHILD_RUNS,
    "ApiFunctionRole": CHECKPOINTS
    | PAYLOADS
    | {"sqs:SendMessage", "states:StartExecution", "states:StopExecution", "states:SendTaskSuccess"}
    | {"secretsmanager:GetSecretValue"},
    "SweeperFunctionRole": CHECKPOINTS
    | {"sqs:SendMessage", "states:StartExecution", "states:DescribeExecution", "states:StopExecution"}
    | {"states:SendTaskSuccess"},
    "ResearchAgentStateMachineRole": {"lambda:InvokeFunction"} | LOG_DELIVERY,
    "ToolAgentStateMachineRole": {"lambda:InvokeFunction"} | LOG_DELIVERY,
    "ToolLookupStateMachineRole": {"lambda:InvokeFunction"} | LOG_DELIVERY,
    "ApiGatewayCloudWatchRole": set(),  # only the AWS managed AmazonAPIGatewayPushToCloudWatchLogs
}
#: role -> the table indexes it may query (no other index, and no other action on an index)
INDEXES = {"ApiFunctionRole": {"gsi1", "owner"}, "SweeperFunctionRole": {"active"}}


def role_statements(cfn: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every statement of a role: its inline policies (both sides of a Fn::If) and the managed policies of
    this template it attaches by Ref."""
    res = cfn["Resources"]
    props = res[role]["Properties"]
    out = [s for item in props.get("Policies", []) for p in branches(item) for s in p["PolicyDocument"]["Statement"]]
    for arn in props.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:
            out += res[arn["Ref"]]["Properties"]["PolicyDocument"]["Statement"]
    return out


def test_each_role_allows_exactly_the_actions_its_code_calls(transformed: dict[str, Any]) -> None:
    roles = {lid for lid, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == set(ACTIONS)
    for role, expected in ACTIONS.items():
        stmts = role_statements(transformed, role)
        assert all(s["Effect"] == "Allow" for s in stmts), role
        allowed = {a for s in stmts for a in as_list(s["Action"])}
        assert allowed == expected, (role, sorted(allowed - expected), sorted(expected - allowed))


def test_data_plane_actions_are_on_the_table_its_indexes_and_payload_objects_only(
    transformed: dict[str, Any],
) -> None:
    for role in ACTIONS:
        indexes: set[str] = set()
        for stmt in role_statements(transformed, role):
            actions = as_list(stmt["Action"])
            resources = as_list(stmt["Resource"])
            if any(a.startswith("dynamodb:") for a in actions):
                for r in resources:
                    if r == TABLE:
                        continue
                    sub = r["Fn::Sub"]
                    assert sub.startswith("${CheckpointTable.Arn}/index/") and actions == ["dynamodb:Query"], role
                    indexes.add(sub.rsplit("/", 1)[1])
            if any(a.startswith("s3:") for a in actions):
                assert resources == [PAYLOAD_OBJECTS], role  # objects under payloads/, not the bucket or bucket/*
        assert indexes == INDEXES.get(role, set()), role


def test_sqs_receive_is_on_the_functions_own_queue(transformed: dict[str, Any]) -> None:
    for role in ACTIONS:
        for stmt in role_statements(transformed, role):
            if set(as_list(stmt["Action"])) & POLL:
                queue = role.replace("FunctionRole", "Queue")
                assert stmt["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}, role


def test_the_cursor_key_secret_is_readable_by_the_api_only(transformed: dict[str, Any]) -> None:
    readers = {
        role
        for role in ACTIONS
        for s in role_statements(transformed, role)
        if "secretsmanager:GetSecretValue" in as_list(s["Action"])
    }
    assert readers == {"ApiFunctionRole"}
    [stmt] = [s for s in role_statements(transformed, "ApiFunctionRole") if s.get("Sid") == "ReadCursorKey"]
    assert stmt["Resource"] == {"Ref": "CursorKeySecret"}


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
            arns = res["Properties"].get("ManagedPolicyArns", [])
            if lid == "ApiGatewayCloudWatchRole":
                assert arns == [APIGW_LOGS_POLICY]
                continue
            ours = [a for a in arns if not isinstance(a, str)]
            assert all(set(a) == {"Ref"} for a in ours), (lid, ours)  # this template's managed policies
            aws = {a for a in arns if isinstance(a, str)}
            assert aws <= ALLOWED_MANAGED_POLICIES, (lid, aws - ALLOWED_MANAGED_POLICIES)


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
    assert len(queues) == 9  # a queue per step function (7) and the control function, the dead-letter queue
    for lid, props in queues.items():
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, lid
