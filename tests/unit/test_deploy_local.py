"""`stepchain deploy-local`'s packaging (the part that runs before CloudFormation): parameters, deterministic
content-hashed artifacts, and the built template rewritten to S3 locations. The deployment itself runs in
tests/e2e/test_e2e_scaffold.py against LocalStack."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stepchain.deploy.deploy_local import Artifacts, apply_sets, package, parse_params, zip_tree
from stepchain.deploy.deploy_stack import _fixed_log_group_names, check_update, stable_api_deployments
from stepchain.exceptions import DeployError


def test_params_are_key_value_words() -> None:
    assert parse_params("Transport=sqs ApiAuth=apikey") == {"Transport": "sqs", "ApiAuth": "apikey"}
    assert parse_params("Name='a b'") == {"Name": "a b"}
    assert parse_params("") == {}
    with pytest.raises(DeployError, match="not KEY=VALUE"):
        parse_params("Transport")


def test_zip_digest_follows_content_not_time(tmp_path: Path) -> None:
    fn = tmp_path / "Fn"
    (fn / "pkg").mkdir(parents=True)
    (fn / "app.py").write_text("x = 1\n")
    (fn / "pkg" / "m.py").write_text("y = 2\n")
    digest, body = zip_tree(fn)
    os.utime(fn / "app.py", (1, 1))
    assert zip_tree(fn) == (digest, body)  # same bytes: an unchanged function is not uploaded again
    (fn / "app.py").write_text("x = 2\n")
    assert zip_tree(fn)[0] != digest  # changed code, new key: CloudFormation updates the function


def test_package_points_the_built_template_at_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("ApiFunction", "StepchainLayer"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.py").write_text(name)
    (tmp_path / "sm.asl.json").write_text("{}")
    template: dict[str, Any] = {
        "Globals": {"Function": {"CodeUri": "app/"}},
        "Resources": {
            "ApiFunction": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "ApiFunction"}},
            "StepchainLayer": {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": "StepchainLayer"}},
            "Machine": {"Type": "AWS::Serverless::StateMachine", "Properties": {"DefinitionUri": "sm.asl.json"}},
            "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
        },
    }
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
        artifacts = Artifacts(s3, "artifacts")
        artifacts.ensure_bucket("us-east-1")
        artifacts.ensure_bucket("us-east-1")  # idempotent
        package(template, tmp_path, artifacts)
        res = template["Resources"]
        code, layer = res["ApiFunction"]["Properties"]["CodeUri"], res["StepchainLayer"]["Properties"]["ContentUri"]
        definition = res["Machine"]["Properties"]["DefinitionUri"]
        assert code["Bucket"] == layer["Bucket"] == definition["Bucket"] == "artifacts"
        assert code["Key"].startswith("stepchain/ApiFunction-") and code["Key"].endswith(".zip")
        assert s3.get_object(Bucket="artifacts", Key=definition["Key"])["Body"].read() == b"{}"
        assert "CodeUri" not in template["Globals"]["Function"]  # every built function has its own
        with pytest.raises(DeployError, match="run `make build` first"):
            artifacts.directory(tmp_path / "missing")


def _sam_api_template() -> dict[str, Any]:
    """The shape samtranslator gives an API: a hash-named deployment, a stage that refers to it."""
    return {
        "Resources": {
            "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {}},
            "ApiDeployment0123abcd": {
                "Type": "AWS::ApiGateway::Deployment",
                "Properties": {"Description": "RestApi deployment id: 0123abcd", "RestApiId": {"Ref": "Api"}},
            },
            "ApiStage": {
                "Type": "AWS::ApiGateway::Stage",
                "Properties": {"DeploymentId": {"Ref": "ApiDeployment0123abcd"}, "RestApiId": {"Ref": "Api"}},
                "DependsOn": ["ApiDeployment0123abcd"],
            },
            "Other": {"Type": "X", "Properties": {"Text": {"Fn::Sub": "id ${ApiDeployment0123abcd} of ${Api}"}}},
        },
        "Outputs": {"Deployment": {"Value": {"Ref": "ApiDeployment0123abcd"}}},
    }


def test_api_deployment_gets_a_stable_name_so_an_update_never_touches_the_stage() -> None:
    # LocalStack cannot update an AWS::ApiGateway::Stage: a new deployment hash made every update that changed
    # the API roll back (stage and outputs lost). Two different API definitions now give the same stage.
    first, second = _sam_api_template(), json.loads(json.dumps(_sam_api_template()).replace("0123abcd", "99ff"))
    assert stable_api_deployments(first) == {"ApiDeployment": "ApiDeployment0123abcd"}
    stable_api_deployments(second)
    assert first == second
    res = first["Resources"]
    assert "Description" not in res["ApiDeployment"]["Properties"]
    assert res["ApiStage"]["Properties"]["DeploymentId"] == {"Ref": "ApiDeployment"}
    assert res["ApiStage"]["DependsOn"] == ["ApiDeployment"]
    assert res["Other"]["Properties"]["Text"] == {"Fn::Sub": "id ${ApiDeployment} of ${Api}"}
    assert first["Outputs"]["Deployment"]["Value"] == {"Ref": "ApiDeployment"}


class _Events:
    def __init__(self, events: list[dict[str, str]]) -> None:
        self.events = events

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:
        return {"StackEvents": self.events}


def test_an_update_that_rolled_back_is_an_error_even_if_the_stack_says_update_complete() -> None:
    # what LocalStack reported for the transport change: UPDATE_COMPLETE after a rollback
    events = [
        {"EventId": "9", "LogicalResourceId": "s", "ResourceStatus": "UPDATE_COMPLETE"},
        {"EventId": "8", "LogicalResourceId": "s", "ResourceStatus": "ROLLBACK_COMPLETE"},
        {
            "EventId": "7",
            "LogicalResourceId": "ApiStage",
            "ResourceStatus": "UPDATE_FAILED",
            "ResourceStatusReason": "Stage already exists",
        },
        {"EventId": "6", "LogicalResourceId": "s", "ResourceStatus": "UPDATE_IN_PROGRESS"},
        {"EventId": "5", "LogicalResourceId": "Old", "ResourceStatus": "CREATE_FAILED"},  # before this update
    ]
    with pytest.raises(DeployError, match=r"(?s)rolled back.*ApiStage: Stage already exists.*destroy-local"):
        check_update(_Events(events), "s", since_event_id="5")
    check_update(_Events([{"EventId": "2", "ResourceStatus": "UPDATE_COMPLETE"}, *events[4:]]), "s", "5")


def test_fixed_log_group_names_of_a_stack_are_found_for_cleanup() -> None:
    template = {
        "Resources": {
            "Access": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": {"Fn::Sub": "/aws/x/${AWS::StackName}-a"}},
            },
            "Fn": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": {"Fn::Sub": "/aws/lambda/${Fn}"}}},
            "Plain": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "fixed"}},
        }
    }
    assert _fixed_log_group_names(template, "st") == ["/aws/x/st-a", "fixed"]


def test_set_overrides_a_property_of_the_deployed_template() -> None:
    template: dict[str, Any] = {"Resources": {"Fn": {"Type": "AWS::Serverless::Function", "Properties": {}}}}
    apply_sets(template, ["Fn.Timeout=10", "Fn.Environment.Variables.N=15"])
    assert template["Resources"]["Fn"]["Properties"] == {"Timeout": 10, "Environment": {"Variables": {"N": "15"}}}
    with pytest.raises(DeployError, match="no resource"):
        apply_sets(template, ["Missing.Timeout=1"])


def test_a_localstack_iam_stack_runs_without_ownership_unless_told() -> None:
    """LocalStack puts no caller identity in an IAM request, and ownership answers such a request 401: an
    ApiAuth=iam stack on LocalStack gets RunOwnership=off unless the parameters name it (issue 16)."""
    from stepchain.deploy.deploy_local import local_parameters

    declared = {"RunOwnership": {}, "ApiAuth": {}}
    assert local_parameters({}, declared) == {"RunOwnership": "off"}
    assert local_parameters({"ApiAuth": "apikey"}, declared) == {"ApiAuth": "apikey"}
    assert local_parameters({"RunOwnership": "on"}, declared) == {"RunOwnership": "on"}
    assert local_parameters({}, {}) == {}  # a template without ownership


def test_the_local_api_key_is_made_once_then_reused() -> None:
    from stepchain.deploy.deploy_local import local_api_key

    class FakeApiGateway:
        def __init__(self) -> None:
            self.keys: list[dict[str, str]] = []
            self.plan_keys: list[tuple[str, str]] = []

        def get_api_keys(self, nameQuery: str, includeValues: bool) -> dict[str, Any]:
            return {"items": [k for k in self.keys if k["name"].startswith(nameQuery)]}

        def create_api_key(self, name: str, enabled: bool) -> dict[str, str]:
            key = {"name": name, "id": f"id{len(self.keys)}", "value": f"value{len(self.keys)}"}
            self.keys.append(key)
            return key

        def create_usage_plan_key(self, usagePlanId: str, keyId: str, keyType: str) -> None:
            self.plan_keys.append((usagePlanId, keyId))

    apigw = FakeApiGateway()
    assert local_api_key(apigw, "s", "plan") == "value0"
    assert local_api_key(apigw, "s", "plan") == "value0"
    assert local_api_key(apigw, "s2", "plan") == "value1"
    assert apigw.plan_keys == [("plan", "id0"), ("plan", "id1")]
