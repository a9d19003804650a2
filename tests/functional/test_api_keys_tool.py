"""tools/api_keys.py (``make api-key NAME=...``): each team gets its own key in the stack's one usage plan."""

from __future__ import annotations

import boto3
import pytest
from tools.api_keys import add_api_key

from stepchain.testing import moto_aws


def test_each_team_gets_its_own_key_in_the_usage_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto_aws():
        apigw = boto3.client("apigateway", region_name="us-east-1")
        plan = apigw.create_usage_plan(name="stack-usage-plan")["id"]
        a = add_api_key(apigw, plan, "stack-team-a")
        b = add_api_key(apigw, plan, "stack-team-b")
        assert a["id"] != b["id"] and a["value"] != b["value"] and a["name"] == "stack-team-a"
        keys = {k["id"]: k["name"] for k in apigw.get_usage_plan_keys(usagePlanId=plan)["items"]}
        assert keys == {a["id"]: "stack-team-a", b["id"]: "stack-team-b"}
