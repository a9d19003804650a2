"""``POST /runs/{id}/fork`` through the real API handler on moto (DynamoDB, S3): the new run, its
``forked_from`` in ``GET /runs/{id}``, the Idempotency-Key, the 4xx answers (each before anything is
written), the owner of a fork, and the OpenAPI document."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.fork_flows import agent, drive, notes
from tests.lambda_context import ApiLambdaContext

from stepchain.api import handle_api_event, openapi_json
from stepchain.testing import Harness

EVENTS = Path(__file__).resolve().parents[2] / "events"
ACCT = "123456789012"
ALICE = {"userArn": f"arn:aws:iam::{ACCT}:user/alice"}
BOB = {"userArn": f"arn:aws:iam::{ACCT}:user/bob"}


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("STEPCHAIN_OWNERSHIP", "on")
    monkeypatch.setenv("STEPCHAIN_CURSOR_KEY", "k" * 32)
    monkeypatch.setenv("STEPCHAIN_APPROVAL_KEY", "a" * 32)
    with Harness(agent, backend="moto") as harness:
        yield harness


def call(
    h: Harness, method: str, path: str, who: dict[str, Any], body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    event = json.loads((EVENTS / "api-fork-run.json").read_text())
    event.update(httpMethod=method, path=path, resource=path, body=None if body is None else json.dumps(body))
    ctx = event["requestContext"]
    ctx.update(httpMethod=method, path="/v1" + path)
    ctx["identity"] = {**{k: None for k in ("userArn", "caller", "user", "accessKey", "apiKeyId")}, **who}
    hdrs = {"Content-Type": "application/json", **({} if key is None else {"Idempotency-Key": key})}
    event["headers"], event["multiValueHeaders"] = hdrs, {k: [v] for k, v in hdrs.items()}
    out = handle_api_event(h.engine, copy.deepcopy(event), ApiLambdaContext())
    return out["statusCode"], json.loads(out["body"])


def source(h: Harness) -> str:
    status, body = call(h, "POST", "/runs", ALICE, {"workflow": "fork-agent", "input": "t"})
    assert status == 202, body
    assert drive(h, body["run_id"]) == "SUCCEEDED"
    return str(body["run_id"])


def test_fork_at_iteration_2_with_an_edited_state(h: Harness) -> None:
    src = source(h)
    body = {"node": "think", "iteration": 2, "state": {"tone": "formal"}}
    status, handle = call(h, "POST", f"/runs/{src}/fork", ALICE, body, key="f-1")
    assert status == 202 and handle["links"]["fork"].endswith(f"/runs/{handle['run_id']}/fork")
    fid = handle["run_id"]
    assert call(h, "POST", f"/runs/{src}/fork", ALICE, body, key="f-1") == (200, handle)  # a retry: the same run
    assert call(h, "POST", f"/runs/{src}/fork", ALICE, {**body, "iteration": 1}, key="f-1")[0] == 409
    assert drive(h, fid) == "SUCCEEDED"
    status, detail = call(h, "GET", f"/runs/{fid}", ALICE)
    assert status == 200 and detail["forked_from"] == {"run_id": src, "node": "think", "iteration": 2}
    assert detail["output"]["notes"] == notes("t", ["plain", "plain", "formal", "formal"])
    assert {n["key"]: n["copied_from"] for n in detail["nodes"]}["review~00001"] == src
    assert call(h, "GET", f"/runs/{src}", ALICE)[1]["forked_from"] is None
    assert h.engine.store.get_run(fid).owner == "iam:" + ALICE["userArn"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"node": "nope"}, 404, "step_not_found"),
        ({"node": "think", "iteration": 9}, 409, "invalid_run_state"),
        ({"node": "think", "iteration": 1, "state": {"turns": "many"}}, 400, "validation_error"),
        ({"node": "think", "iteration": 1, "state": {"mood": "x"}}, 400, "validation_error"),
        ({"node": "plan", "state": {"tone": "x"}}, 409, "state_not_declared"),
        ({"node": "think#00001"}, 422, "validation_error"),
        ({"node": "think", "iteration": -1}, 422, "validation_error"),
        ({"node": "think", "extra": 1}, 422, "validation_error"),
        ({}, 422, "validation_error"),
    ],
)
def test_bad_forks_are_4xx_and_write_nothing(h: Harness, body: dict[str, Any], status: int, code: str) -> None:
    src = source(h)
    before = h.runs()
    got, answer = call(h, "POST", f"/runs/{src}/fork", ALICE, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert h.runs() == before


def test_a_node_that_never_ran_is_409_and_another_callers_run_404(h: Harness) -> None:
    status, body = call(h, "POST", "/runs", ALICE, {"workflow": "fork-agent", "input": "w"})
    assert status == 202
    h.run(body["run_id"])  # waiting in iteration 0: review never ran
    got, answer = call(h, "POST", f"/runs/{body['run_id']}/fork", ALICE, {"node": "review"})
    assert got == 409 and "never ran" in answer["error"]["message"]
    got, answer = call(h, "POST", f"/runs/{body['run_id']}/fork", BOB, {"node": "think"})
    assert (got, answer["error"]["code"]) == (404, "run_not_found")
    got, answer = call(h, "POST", f"/runs/{'0' * 24}/fork", ALICE, {"node": "think"})
    assert (got, answer["error"]["code"]) == (404, "run_not_found")


def test_the_document_has_the_fork_route() -> None:
    doc = json.loads(openapi_json())
    op = doc["paths"]["/runs/{run_id}/fork"]["post"]
    assert op["operationId"] == "forkRun" and {"200", "202", "400", "404", "409", "422"} <= set(op["responses"])
    assert "forked_from" in doc["components"]["schemas"]["RunDetail"]["properties"]
