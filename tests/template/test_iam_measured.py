"""Least privilege, measured (issue 11): each function's IAM actions are exactly those its code calls.

Every code path of ``iam_paths.PATHS`` is driven on both transports (SQS, Step Functions) on moto, with
every boto3 operation (and every presigned URL) recorded per Lambda function (``iam_record``). The
operations become IAM actions (``Call.actions``: TransactWriteItems -> one single-item action per item,
SendMessageBatch -> SendMessage, a presigned GetObject -> s3:GetObject) and are compared with what each
role of the SAM-transformed template.yaml allows:

* an action the code uses that the role lacks fails (AccessDenied in production);
* an action the role allows that no recorded path uses fails, unless it is in ``AWS_SIDE`` (the caller is
  an AWS service acting with the role, not our code) or declared by the step itself (``policies=`` on a
  step: its own code's grants, e.g. the research agent's bedrock:InvokeModel with LlmProvider=bedrock).

Worker functions (one per group of steps) all run the same engine code; which of its calls they make
depends on the data (a large value takes the S3 claim-check) and on the node kinds they serve, not on
which function they are: their roles are compared with the union over every worker function measured.
The control, API and sweeper functions are compared each with its own measurement. Query on an index needs
the index's ARN: the indexes each function queried must be exactly the ones its role names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from tests.template.iam_paths import PATHS, deployed
from tests.template.iam_record import Call, CallRecorder, recording
from tests.template.test_sam_policies import as_list, role_statements

from stepchain.deploy.asl import CONTROL_FUNCTION

#: What an AWS service calls with a function's role, not our code (there is no boto3 call to record).
#: - sqs:* on the workers' and the control function's own queue: the Lambda event source mapping polls
#:   it (ReceiveMessage, DeleteMessage for the records the batch did not report failed, GetQueueAttributes
#:   when the mapping is created); tests/template/test_sam_policies.py checks it is their own queue only.
#: - the state machine's role: Step Functions invokes the task functions (lambda:InvokeFunction, checked
#:   below against the functions the executions invoked) and sets up its log delivery (logs:*Delivery*,
#:   *ResourcePolicy*, DescribeLogGroups: no resource-level permissions, Resource "*").
ESM_POLL = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
LOG_DELIVERY = {
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}  # fmt: skip
#: each workflow's state machine role (a call node's child run is started by the control function, not by
#: the parent's state machine: no states:StartExecution here)
STATE_MACHINE_ROLES = {
    "research-agent": "ResearchAgentStateMachineRole",
    "tool-agent": "ToolAgentStateMachineRole",
    "tool-lookup": "ToolLookupStateMachineRole",
}
AWS_SIDE = {
    **{role: {"lambda:InvokeFunction"} | LOG_DELIVERY for role in STATE_MACHINE_ROLES.values()},
    "ApiGatewayCloudWatchRole": set(),
}


class Measurement:
    def __init__(self) -> None:
        self.recorder = CallRecorder()
        self.workers: set[str] = set()
        self.child_workers: set[str] = set()
        self.invoked: dict[str, set[str]] = {}
        self.paths: dict[tuple[str, str], set[str]] = {}  # (transport, path) -> functions that made calls

    def calls(self, function: str | None = None) -> list[Call]:
        return [c for c in self.recorder.calls if function is None or c.function == function]

    def actions(self, functions: set[str]) -> set[str]:
        return {a for c in self.recorder.calls if c.function in functions for a in c.actions}

    def indexes(self, functions: set[str]) -> set[str]:
        return {c.resource.removeprefix("index/") for c in self.calls() if c.function in functions
                and c.resource.startswith("index/")}  # fmt: skip


@pytest.fixture(scope="module")
def measured() -> Iterator[Measurement]:
    m = Measurement()
    for transport in ("sqs", "sfn"):
        with recording() as rec, deployed(transport) as d:  # one deployment per transport: set-up is seconds
            for path in PATHS:
                if transport in path.transports:
                    first = len(rec.calls)
                    path.drive(d)
                    m.paths[(transport, path.name)] = {c.function for c in rec.calls[first:]}
        m.recorder.calls += rec.calls
        m.workers |= d.workers
        m.child_workers |= d.child_workers
        for wf, fns in d.invoked.items():
            m.invoked.setdefault(wf, set()).update(fns)
    yield m


def granted(transformed: dict[str, Any], role: str) -> set[str]:
    return {a for s in role_statements(transformed, role) for a in as_list(s["Action"])}


def declared_by_steps(transformed: dict[str, Any], role: str) -> set[str]:
    """Actions of the statements the workflow's steps declared (``policies=``), as samgen copied them."""
    return {
        a for s in role_statements(transformed, role) if s.get("Sid") not in SAMGEN_SIDS for a in as_list(s["Action"])
    }


#: statement ids that stepchain's own template (sam_base.yaml, samgen.py) writes; any other is the user's
SAMGEN_SIDS = {
    "CheckpointItems", "PayloadObjects", "SendToStepQueues", "PollOwnQueue", "CompleteTaskTokens", "ListRunsIndex",
    "StartRunExecutions", "StopRunExecutions", "ReadCursorKey", "SweepCheckpoints", "ActiveRunsIndex",
    "ResumeRunExecutions", "InspectRunExecutions", "ReadApprovalKey",
    # samgen_children.py
    "StartChildRuns", "StopChildRuns", "CancelChildNodes", "CompleteParentTokens", "ChildPayloads",
}  # fmt: skip


def function_roles(transformed: dict[str, Any]) -> dict[str, str]:
    """role logical id -> the function it belongs to (SAM names a function's role <Function>Role)."""
    res = transformed["Resources"]
    return {
        r["Properties"]["Role"]["Fn::GetAtt"][0]: lid
        for lid, r in res.items()
        if r["Type"] == "AWS::Lambda::Function" and isinstance(r["Properties"].get("Role"), dict)
    }


#: what a worker calls only when it ends a child run (it joins the parent node and, on Step Functions,
#: completes the parent task's token): expected of the workers serving a child workflow's steps only
ENDING_A_CHILD = {"states:SendTaskSuccess"}


def expected(m: Measurement, function: str) -> set[str]:
    if function in m.workers:  # the engine's calls, whichever steps the function serves
        engine = m.actions(m.workers) - ENDING_A_CHILD
        ending = m.actions(m.child_workers) & ENDING_A_CHILD if function in m.child_workers else set()
        return engine | ending | ESM_POLL
    if function == CONTROL_FUNCTION:
        return m.actions({function}) | ESM_POLL
    return m.actions({function})


def test_only_the_workers_serving_a_child_workflow_end_child_runs(measured: Measurement) -> None:
    assert measured.child_workers == {"ToolLookupFunction"}
    assert measured.actions(measured.child_workers) >= ENDING_A_CHILD  # measured: the premise holds
    assert not measured.actions(measured.workers - measured.child_workers) & ENDING_A_CHILD


def test_every_path_made_calls_as_the_functions_it_exercises(measured: Measurement) -> None:
    """The recording works: each path's calls are attributed, API and workers alike."""
    for (transport, name), functions in measured.paths.items():
        assert "ApiFunction" in functions, (transport, name)
        assert functions & measured.workers, (transport, name, functions)
    swept = {fn for (_, name), fns in measured.paths.items() if name.startswith("sweeper") for fn in fns}
    assert "SweeperFunction" in swept
    assert any(c.presign and c.function == "ApiFunction" for c in measured.calls())


def test_each_role_allows_exactly_the_actions_its_function_was_measured_to_use(
    measured: Measurement, transformed: dict[str, Any]
) -> None:
    roles = function_roles(transformed)
    assert set(roles.values()) - measured.workers == {CONTROL_FUNCTION, "ApiFunction", "SweeperFunction"}
    problems = {}
    for role, function in sorted(roles.items()):
        have, need = granted(transformed, role), expected(measured, function)
        missing = need - have  # the code would get AccessDenied
        unused = have - need - declared_by_steps(transformed, role)  # granted, never called
        if missing or unused:
            problems[role] = {"missing": sorted(missing), "unused": sorted(unused)}
    assert not problems, problems


def test_roles_that_no_function_has_are_aws_side_only(transformed: dict[str, Any]) -> None:
    res = transformed["Resources"]
    others = {lid for lid, r in res.items() if r["Type"] == "AWS::IAM::Role"} - set(function_roles(transformed))
    assert others == set(AWS_SIDE)
    for role, allowed in AWS_SIDE.items():
        assert granted(transformed, role) == allowed, role


def test_each_state_machine_may_invoke_exactly_the_functions_its_executions_invoked(
    measured: Measurement, transformed: dict[str, Any]
) -> None:
    for workflow, role in STATE_MACHINE_ROLES.items():
        [stmt] = [s for s in role_statements(transformed, role) if s.get("Sid") == "InvokeStepFunctions"]
        allowed = {r["Fn::GetAtt"][0] for r in as_list(stmt["Resource"])}
        assert allowed == measured.invoked[workflow], workflow


def test_index_queries_are_granted_exactly_on_the_indexes_queried(
    measured: Measurement, transformed: dict[str, Any]
) -> None:
    for role, function in function_roles(transformed).items():
        scope = measured.workers if function in measured.workers else {function}
        named = {
            r["Fn::Sub"].rsplit("/", 1)[1]
            for s in role_statements(transformed, role)
            for r in as_list(s["Resource"])
            if isinstance(r, dict) and "/index/" in str(r.get("Fn::Sub", ""))
        }
        assert named == measured.indexes(scope), role


def test_step_workers_touch_run_partitions_only_as_their_policy_conditions_say(
    measured: Measurement, transformed: dict[str, Any]
) -> None:
    """Issue 16.10: a step function (StepWorkerPolicy) reads and writes only RUN#<run id> partitions and,
    for a step with limits (issue 19), LIMIT#<name>#<key> ones (never an IDEM# idempotency record of the
    API): measured here, and what the policy's dynamodb:LeadingKeys condition allows. It does not
    separate one run from another (see README, step-side boundary)."""
    step_calls = [c for c in measured.calls() if c.service == "dynamodb" and c.function in measured.workers]
    assert step_calls and all(c.resource == "table" for c in step_calls)
    assert {k.split("#", 1)[0] for c in step_calls for k in c.keys} <= {"RUN", "LIMIT"}
    assert all(c.keys for c in step_calls), [c for c in step_calls if not c.keys][:3]
    [statement] = [
        s
        for s in transformed["Resources"]["StepWorkerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if s["Sid"] == "CheckpointItems"
    ]
    assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["RUN#*", "LIMIT#*"]}}


def test_objects_are_read_and_written_under_payloads_only(measured: Measurement) -> None:
    prefixes = {c.resource for c in measured.calls() if c.service == "s3"}
    assert prefixes == {"payloads/*"}  # what PayloadObjects grants (Resource ${PayloadBucket.Arn}/payloads/*)


def test_operations_map_to_the_iam_actions_that_authorize_them() -> None:
    transact = Call("f", "dynamodb", "TransactWriteItems", "table", parts=("Put", "Update", "ConditionCheck"))
    assert transact.actions == {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"}
    assert Call("f", "sqs", "SendMessageBatch").actions == {"sqs:SendMessage"}
    assert Call("f", "sqs", "ChangeMessageVisibilityBatch").actions == {"sqs:ChangeMessageVisibility"}
    assert Call("f", "s3", "GetObject", "payloads/*", presign=True).actions == {"s3:GetObject"}
    assert Call("f", "states", "SendTaskSuccess").actions == {"states:SendTaskSuccess"}


def test_the_recorder_sees_calls_and_presigned_urls_only_inside_a_function() -> None:
    import boto3
    from tests.template.iam_record import acting_as

    from stepchain.testing import moto_aws

    with recording() as rec, moto_aws():
        ddb = boto3.client("dynamodb")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bkt-iam")  # the harness's own set-up: not recorded
        with acting_as("F"):
            s3.put_object(Bucket="bkt-iam", Key="payloads/x", Body=b"1")
            s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "payloads/x"})
            with contextlib.suppress(ddb.exceptions.ResourceNotFoundException):  # made: it needs the permission
                ddb.query(TableName="t", IndexName="gsi1", KeyConditionExpression="a = :a",
                          ExpressionAttributeValues={":a": {"S": "1"}})  # fmt: skip
    assert [(c.function, c.service, c.operation, c.resource, c.presign) for c in rec.calls] == [
        ("F", "s3", "PutObject", "payloads/*", False),
        ("F", "s3", "GetObject", "payloads/*", True),
        ("F", "dynamodb", "Query", "index/gsi1", False),
    ]


def test_a_deployed_function_logs_its_calls_when_asked() -> None:
    """STEPCHAIN_RECORD_CALLS=1 (what the LocalStack e2e run sets): one log line per call and presign."""
    from unittest import mock

    import boto3
    from botocore.handlers import BUILTIN_HANDLERS

    from stepchain.runtimes.aws import calls
    from stepchain.testing import moto_aws

    assert not calls.install_from_env({})
    try:
        with moto_aws(), mock.patch.object(calls, "logger") as logger:
            assert calls.install_from_env({calls.ENV: "1"}) and calls.install_from_env({calls.ENV: "1"})
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="bkt-iam")
            s3.generate_presigned_url("get_object", Params={"Bucket": "bkt-iam", "Key": "payloads/x"})
            ddb = boto3.client("dynamodb")
            with contextlib.suppress(ddb.exceptions.ResourceNotFoundException):
                ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "1"}}}}])
    finally:
        BUILTIN_HANDLERS.remove((calls.EVENT, calls.log_call))
    assert {c.args for c in logger.info.call_args_list} == {("aws call",)}
    seen = [(c.kwargs["extra"]["aws_call"], c.kwargs["extra"]["presign"], c.kwargs["extra"].get("parts"))
            for c in logger.info.call_args_list]  # fmt: skip
    assert seen == [("s3:CreateBucket", False, None), ("s3:GetObject", True, None),
                    ("dynamodb:TransactWriteItems", False, ["Put"])]  # fmt: skip
