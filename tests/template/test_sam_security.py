"""Audit and blast radius in template.yaml (issue 11): API access logs, retained data, reserved concurrency
per step function, per-run limits, the cursor key as a generated secret, optional KMS on every log group."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.template.samshell import ALL_FUNCTIONS, STEP_FUNCTIONS
from tools.local_invoke import NO_VALUE, Resolver

from stepchain.api.decoding import MAX_BODY_BYTES
from stepchain.store.payloads import MAX_URL_TTL_S

WORKERS = (*STEP_FUNCTIONS, "ControlFunction")


@pytest.mark.parametrize("lid", ["CheckpointTable", "PayloadBucket"])
def test_table_and_bucket_survive_stack_deletion_and_replacement(resources: dict[str, Any], lid: str) -> None:
    assert resources[lid]["DeletionPolicy"] == "Retain"
    assert resources[lid]["UpdateReplacePolicy"] == "Retain"


def test_api_access_log_is_json_with_caller_request_status_and_route(
    resources: dict[str, Any], transformed: dict[str, Any]
) -> None:
    props = resources["StepchainApi"]["Properties"]
    setting = props["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line = json.loads(setting["Format"])  # one JSON object per request
    assert line["requestId"] == "$context.requestId"
    assert line["caller"] == "$context.identity.caller" and line["userArn"] == "$context.identity.userArn"
    assert line["apiKeyId"] == "$context.identity.apiKeyId"
    assert line["status"] == "$context.status" and line["resourcePath"] == "$context.resourcePath"
    assert line["httpMethod"] == "$context.httpMethod"
    assert all(re.fullmatch(r"\$context\.[A-Za-z.]+", v) for v in line.values())
    group = resources["ApiAccessLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # the stage SAM generates carries the setting, and the account's CloudWatch role is set first
    [stage] = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::ApiGateway::Stage"]
    assert stage["Properties"]["AccessLogSetting"] == setting
    assert resources["StepchainApi"]["DependsOn"] == "ApiGatewayAccount"
    account = resources["ApiGatewayAccount"]["Properties"]
    assert account["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}


def test_approval_tokens_never_reach_the_access_log(resources: dict[str, Any], transformed: dict[str, Any]) -> None:
    """Issue 16.3: the token travelled in the path of POST /approvals/{token}, and the access log records
    the path: a use refused before the token was spent (403/429 at API Gateway, a 5xx) left a live token
    in the log. Now no route has a path parameter but run ids, steps and event names, and the access-log
    line, rendered for an approval request, holds nothing of its headers or body."""
    body = transformed["Resources"]["StepchainApi"]["Properties"]["Body"]
    params = {p for path in body["paths"] for p in re.findall(r"\{(\w+)\}", path)}
    assert params == {"run_id", "step", "name"}, params
    events = resources["ApiFunction"]["Properties"]["Events"]
    assert events["Approve"]["Properties"]["Path"] == "/approvals"
    line = json.loads(resources["StepchainApi"]["Properties"]["AccessLogSetting"]["Format"])
    token = "eyJyIjoiMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXI"
    request = {  # what API Gateway substitutes for each $context variable of an approval request
        "$context.path": "/v1/approvals", "$context.resourcePath": "/approvals", "$context.httpMethod": "POST",
    }  # fmt: skip
    for value in line.values():
        assert not re.search(r"header|input|requestOverride|body|querystring|authorizer", value, re.I), value
    rendered = json.dumps({k: request.get(v, "-") for k, v in line.items()})
    assert token not in rendered and "approvals/" not in rendered


def test_every_log_group_has_retention_and_the_optional_kms_key(resources: dict[str, Any]) -> None:
    groups = {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert len(groups) == len(ALL_FUNCTIONS) + 4  # the functions, the 3 state machines, the API access log
    for lid, props in groups.items():
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}, lid
        assert props["KmsKeyId"] == {"Fn::If": ["HasLogsKmsKey", {"Ref": "LogsKmsKeyArn"}, {"Ref": "AWS::NoValue"}]}


@pytest.mark.parametrize(("value", "reserved"), [("", NO_VALUE), ("0", NO_VALUE), ("7", "7")])
def test_each_step_function_has_its_own_reserved_concurrency_parameter(
    template: dict[str, Any], value: str, reserved: Any
) -> None:
    for fn in WORKERS:
        param = fn.replace("Function", "ReservedConcurrency")
        declared = template["Parameters"][param]
        assert declared["Default"] == "" and re.fullmatch(declared["AllowedPattern"], value)
        prop = template["Resources"][fn]["Properties"]["ReservedConcurrentExecutions"]
        assert Resolver(template, {param: value}, "us-east-1", "s").resolve(prop) == reserved, fn
    assert template["Resources"]["SweeperFunction"]["Properties"]["ReservedConcurrentExecutions"] == 1
    assert "ReservedConcurrentExecutions" not in template["Resources"]["ApiFunction"]["Properties"]


def test_per_run_limits_and_url_lifetime_are_parameters_passed_as_environment(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["STEPCHAIN_MAX_MAP_ITEMS"] == {"Ref": "MaxMapItems"}
    assert env["STEPCHAIN_MAX_INPUT_BYTES"] == {"Ref": "MaxInputBytes"}
    assert params["MaxMapItems"]["Default"] >= 1
    assert params["MaxInputBytes"]["MaxValue"] == MAX_BODY_BYTES  # the API body limit bounds it anyway
    api_env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_env["STEPCHAIN_OUTPUT_URL_TTL_S"] == {"Ref": "OutputUrlTtlSeconds"}
    ttl = params["OutputUrlTtlSeconds"]
    assert ttl["Default"] <= 300 and ttl["MaxValue"] == MAX_URL_TTL_S


def test_the_cursor_key_is_a_generated_secret_never_an_environment_value(template: dict[str, Any]) -> None:
    secret = template["Resources"]["CursorKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    assert "SecretString" not in secret["Properties"]
    text = json.dumps(template)
    assert '"STEPCHAIN_CURSOR_KEY"' not in text  # the plain-value variable is for local runs only
    api_env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_env["STEPCHAIN_CURSOR_KEY_SECRET_ARN"] == {"Ref": "CursorKeySecret"}


def test_the_approval_key_is_a_generated_secret_readable_by_the_api_only(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    secret = template["Resources"]["ApprovalKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    assert "SecretString" not in secret["Properties"]
    assert '"STEPCHAIN_APPROVAL_KEY"' not in json.dumps(template)  # the plain-value variable is local only
    api_env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_env["STEPCHAIN_APPROVAL_KEY_SECRET_ARN"] == {"Ref": "ApprovalKeySecret"}
    readers = [
        (lid, s)
        for lid, r in transformed["Resources"].items()
        if r["Type"] == "AWS::IAM::Role"
        for p in r["Properties"].get("Policies", [])
        for s in p.get("PolicyDocument", {}).get("Statement", [])
        if isinstance(s, dict) and s.get("Resource") == {"Ref": "ApprovalKeySecret"}
    ]
    assert [(lid, s["Action"]) for lid, s in readers] == [("ApiFunctionRole", "secretsmanager:GetSecretValue")]


def test_run_ownership_is_on_by_default_with_an_owner_index(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["RunOwnership"]["Default"] == "on" and params["OperatorPrincipals"]["Default"] == ""
    api_env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_env["STEPCHAIN_OWNERSHIP"] == {"Ref": "RunOwnership"}
    assert api_env["STEPCHAIN_OPERATORS"] == {"Ref": "OperatorPrincipals"}
    gsis = {g["IndexName"]: g for g in template["Resources"]["CheckpointTable"]["Properties"]["GlobalSecondaryIndexes"]}
    assert [k["AttributeName"] for k in gsis["owner"]["KeySchema"]] == ["owner_pk", "gsi1sk"]
