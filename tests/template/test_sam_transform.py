"""The SAM transform accepts the template, and the REST API it produces is authenticated on every route."""

from __future__ import annotations

from typing import Any

ROUTES = {
    ("/runs", "post"), ("/runs", "get"), ("/runs/{run_id}", "get"), ("/runs/{run_id}/steps/{step}", "get"),
    ("/runs/{run_id}/events/{name}", "post"), ("/runs/{run_id}/cancel", "post"),
    ("/runs/{run_id}/redrive", "post"), ("/runs/{run_id}/budget", "post"), ("/openapi.json", "get"),
    ("/runs/{run_id}/approvals", "post"), ("/approvals", "post"), ("/runs/{run_id}/stream", "get"),
}  # fmt: skip
AUTH = {"Fn::If": ["UseApiKey", [{"api_key": []}], [{"sigv4": []}]]}


def test_transform_produces_plain_cloudformation(transformed: dict[str, Any]) -> None:
    types = {r["Type"] for r in transformed["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::Serverless::")}
    assert "Transform" not in transformed
    count = {t: sum(r["Type"] == t for r in transformed["Resources"].values()) for t in types}
    assert count["AWS::Lambda::Function"] == 10
    assert count["AWS::Lambda::LayerVersion"] == 1
    assert count["AWS::StepFunctions::StateMachine"] == 3  # research-agent, tool-agent, tool-lookup
    assert count["AWS::Lambda::EventSourceMapping"] == 8
    assert count["AWS::SQS::Queue"] == 9
    assert count["AWS::Logs::LogGroup"] == 14  # 10 functions, the 3 state machines, API access logs
    # the sweeper's schedule: an EventBridge rule that may invoke only the sweeper
    [rule] = [r["Properties"] for r in transformed["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["ScheduleExpression"] == "rate(1 minute)" and rule.get("State", "ENABLED") == "ENABLED"
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["SweeperFunction", "Arn"]}]


def test_api_events_match_the_routes(resources: dict[str, Any]) -> None:
    events = resources["ApiFunction"]["Properties"]["Events"].values()
    assert {(e["Properties"]["Path"], e["Properties"]["Method"]) for e in events} == ROUTES
    assert all(e["Type"] == "Api" and e["Properties"]["RestApiId"] == {"Ref": "StepchainApi"} for e in events)


def test_every_route_is_a_lambda_proxy_that_requires_auth(transformed: dict[str, Any]) -> None:
    body = transformed["Resources"]["StepchainApi"]["Properties"]["Body"]
    routes = {(path, method): op for path, item in body["paths"].items() for method, op in item.items()}
    # a route added as an event but not to DefinitionBody would be merged in without `security`
    assert set(routes) == ROUTES
    for route, op in routes.items():
        assert op["security"] == AUTH, route
        integration = op["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy" and "ApiFunction.Arn" in integration["uri"]["Fn::Sub"], route
    assert body["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert body["securityDefinitions"]["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}


def test_api_key_mode_adds_a_usage_plan_and_no_shared_key(transformed: dict[str, Any]) -> None:
    """Issue 16.2: ownership keys on the API key id, so one key for everyone made everyone one caller: the
    template creates the plan only; each consumer gets its own key (`make api-key`, tools/api_keys.py)."""
    res = transformed["Resources"]
    assert res["ApiUsagePlan"]["Condition"] == "UseApiKey"
    assert not [
        lid for lid, r in res.items() if r["Type"] in ("AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlanKey")
    ]
    assert "ApiKeyId" not in transformed.get("Outputs", {})
    plan = res["ApiUsagePlan"]["Properties"]
    assert plan["Throttle"] and plan["Quota"]
    assert plan["ApiStages"] == [{"ApiId": {"Ref": "StepchainApi"}, "Stage": {"Ref": "StepchainApiStage"}}]


def test_api_stage_and_deployment(transformed: dict[str, Any]) -> None:
    res = transformed["Resources"]
    stage = res["StepchainApiStage"]["Properties"]
    assert stage["StageName"] == {"Ref": "StageName"} and stage["TracingEnabled"] is True
    assert any(r["Type"] == "AWS::ApiGateway::Deployment" for r in res.values())
