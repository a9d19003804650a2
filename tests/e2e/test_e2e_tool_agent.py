"""The tool agent deployed on LocalStack (template.yaml through CloudFormation), driven through API Gateway,
on both transports: ``Transport=stepfunctions`` (SigV4) and ``Transport=sqs`` (API key).

One run per stack: the agent loops (async ``think`` -> ``act`` -> ``think`` ...), its first model call of
iteration 1 is rate limited (a ``RetryableError`` with ``retry_after_s``, ``TOOL_AGENT_RETRY_AFTER_S``), its
first fact comes from a child run of ``tool-lookup``, and the e-mail waits for the ``approval`` event this
test delivers over HTTP. Poll loops are bounded; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.deployed import Api, Stack, deploy_stacks
from tools.api_keys import add_api_key

pytestmark = pytest.mark.e2e

QUESTION = "By what percent did trips per station grow from 2024 to 2025? Email the answer to ops@northvale.example"
ANSWER = "The growth of trips per station from 2024 to 2025: 9.53%."
RETRY_AFTER_S = 3
RUN_TIMEOUT_S = 180.0
SETS = (f"ToolAgentFunction.Environment.Variables.TOOL_AGENT_RETRY_AFTER_S={RETRY_AFTER_S}",)
STACKS = {
    "sc-tool-sfn": ({"Transport": "stepfunctions", "ApiAuth": "iam"}, SETS),
    "sc-tool-sqs": ({"Transport": "sqs", "ApiAuth": "apikey"}, SETS),
}


@pytest.fixture(scope="session")
def tool_stacks(localstack_endpoint: str) -> dict[str, Stack]:
    t0 = time.monotonic()
    deployed = deploy_stacks(localstack_endpoint, STACKS)
    print(f"\n[e2e] build + deploy of {len(deployed)} tool-agent stacks: {time.monotonic() - t0:.1f}s")
    return deployed


@pytest.fixture(params=["stepfunctions", "sqs"])
def stack(request: pytest.FixtureRequest, tool_stacks: dict[str, Stack]) -> Iterator[Stack]:
    t0 = time.monotonic()
    yield tool_stacks["sc-tool-sfn" if request.param == "stepfunctions" else "sc-tool-sqs"]
    print(f"\n[e2e] {request.node.name}: {time.monotonic() - t0:.1f}s")


def keys(doc: dict[str, Any]) -> dict[str, str]:
    return {n["key"]: n["status"] for n in doc["nodes"]}


def test_tool_agent_loops_asks_for_approval_delegates_and_answers(stack: Stack) -> None:
    api = stack.api()
    started = api.json("POST", "/runs", {"workflow": "tool-agent", "input": {"question": QUESTION}}, expect=(202,))
    run_id = str(started["run_id"])

    # the model wants to send an e-mail: the run waits for a human, in loop iteration 4
    waiting = api.wait_status(run_id, ["WAITING"], timeout_s=RUN_TIMEOUT_S)
    assert waiting["current"] == "approve~00004", waiting["current"]
    assert waiting["waiting_for"] == {"event": "approval", "iteration": 4}, waiting["waiting_for"]
    before = keys(waiting)
    assert before["delegate"] == "SUCCEEDED"  # the child run of tool-lookup answered the first fact
    assert all(before[k] == "SUCCEEDED" for k in ("think", "act", "think~00001", "act~00003"))

    # the approval is inside the loop: it names the iteration the run view reports (a retry is then idempotent)
    it = waiting["waiting_for"]["iteration"]
    ack = api.event(run_id, "approval", {"approved": True, "by": "e2e"}, iteration=it)
    assert ack["status"] in ("delivered", "buffered") and ack["iteration"] == it
    again = api.event(run_id, "approval", {"approved": True, "by": "e2e"}, iteration=it)  # a client retry
    assert again["status"] == "delivered" and again["iteration"] == it
    done = api.wait_status(run_id, ["SUCCEEDED"], timeout_s=RUN_TIMEOUT_S)
    assert done["error"] is None

    statuses = keys(done)
    assert statuses["send~00004"] == "SUCCEEDED" and statuses["think~00005"] == "SUCCEEDED"
    assert all(s == "SUCCEEDED" for s in statuses.values()), statuses
    assert done["totals"]["crashes"] == 0

    # the rate-limited model call of iteration 1: retried after the Retry-After the model gave
    think1 = next(n for n in done["nodes"] if n["key"] == "think~00001")
    assert think1["attempts"] == 2
    first, second = think1["history"][:2]
    assert first["outcome"] == "retrying" and second["outcome"] == "succeeded"
    assert second["started_ms"] - first["ended_ms"] >= RETRY_AFTER_S * 1000 - 50

    # the answer is the last think's output (goto END), which is the run's
    final = api.step(run_id, "think~00005")
    out = final["output"]
    assert out["answer"].startswith(ANSWER), out["answer"]
    assert out["emailed"]["status"] == "sent" and out["emailed"]["to"] == "ops@northvale.example"
    assert [s["tool"] for s in out["steps"]] == ["search", "search", "search", "calculator", "send_email"]

    # the delegate is a run of its own (the child), listed under its workflow
    children = api.json("GET", "/runs?workflow=tool-lookup&limit=50")
    assert any(r["status"] == "SUCCEEDED" for r in children["runs"]), children


def test_the_research_agent_runs_beside_it_on_the_same_stack(stack: Stack) -> None:
    """template.yaml deploys both agents behind one API (functions/app.py registers every workflow)."""
    api = stack.api()
    body = {"workflow": "research-agent", "input": {"question": "How much did battery pack prices fall in 2024?",
                                                    "max_sources": 2}}  # fmt: skip
    run_id = str(api.json("POST", "/runs", body, expect=(202,))["run_id"])
    waiting = api.wait_status(run_id, ["WAITING"], timeout_s=RUN_TIMEOUT_S)
    assert waiting["current"] == "approval"
    api.event(run_id, "approval", {"approved": True, "reviewer": "e2e"})
    done = api.wait_status(run_id, ["SUCCEEDED"], timeout_s=RUN_TIMEOUT_S)
    assert keys(done) == dict.fromkeys(["plan", "fetch", "summarize", "crossref", "approval", "draft"], "SUCCEEDED")


def test_two_api_keys_are_two_callers_and_the_token_travels_in_a_header(tool_stacks: dict[str, Stack]) -> None:
    """Issue 16 on the deployed API-key stack: the template ships no shared key (each consumer has its own:
    the deployment's `<stack>-local` key and one `make api-key` adds); a second key is another caller (404 on
    the first's run, not in its list); a request without a key never reaches the function; the approval
    token goes in the Approval-Token header (never in a path, which the access log records) and works once.
    Two sessions of one IAM role cannot be shown on LocalStack: its API Gateway never fills
    requestContext.identity.userArn (tests/functional/test_api_ownership.py shows them at the handler)."""
    stack = tool_stacks["sc-tool-sqs"]
    assert "ApiKeyId" not in stack.outputs  # no shared key in the template
    owner = stack.api()
    other_key = add_api_key(stack.client("apigateway"), stack.outputs["ApiUsagePlanId"], f"b-{uuid.uuid4().hex[:6]}")
    other = Api(stack.outputs["ApiUrl"], "apikey", other_key["value"])
    keyless = Api(stack.outputs["ApiUrl"], "apikey", "not-a-key-of-this-plan")
    run_id = str(
        owner.json("POST", "/runs", {"workflow": "tool-agent", "input": {"question": QUESTION}}, expect=(202,))[
            "run_id"
        ]
    )
    waiting = owner.wait_status(run_id, ["WAITING"], timeout_s=RUN_TIMEOUT_S)
    assert other.call("GET", f"/runs/{run_id}").status_code == 404
    assert run_id not in {r["run_id"] for r in other.json("GET", "/runs?workflow=tool-agent&limit=100")["runs"]}
    assert keyless.call("GET", f"/runs/{run_id}").status_code == 403  # API Gateway: no valid key, no call
    it = waiting["waiting_for"]["iteration"]
    minted = owner.json("POST", f"/runs/{run_id}/approvals", {"event": "approval", "iteration": it}, expect=(201,))
    assert minted["approve"].endswith("/approvals") and minted["token"] not in minted["approve"]
    token = {"Approval-Token": minted["token"]}
    ack = other.json("POST", "/approvals", {"approved": True, "by": "b"}, expect=(202,), headers=token)
    assert ack["run_id"] == run_id and ack["iteration"] == it
    assert other.call("POST", "/approvals", {"approved": False}, headers=token).status_code == 409
    assert owner.wait_status(run_id, ["SUCCEEDED"], timeout_s=RUN_TIMEOUT_S)["error"] is None
    assert other.call("GET", f"/runs/{run_id}").status_code == 404  # approving gave no read access
