"""`stepchain deploy-local`'s packaging (the part that runs before CloudFormation): parameters, deterministic
content-hashed artifacts, and the built template rewritten to S3 locations. The deployment itself runs in
tests/e2e/test_e2e_scaffold.py against LocalStack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stepchain.deploy.deploy_local import Artifacts, package, parse_params, zip_tree
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
