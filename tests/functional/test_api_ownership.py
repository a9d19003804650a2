"""Issue 11.1 / 11.2: run ownership and approval tokens, through the real API handler with API Gateway
REST proxy events (events/api-*.json) whose ``requestContext`` carries the caller's identity: an IAM
user (``identity.userArn``), an assumed-role session, an API key (``identity.apiKeyId``) or a Cognito
authorizer (``authorizer.claims.sub``). Ownership is ``on`` here, as the template deploys it."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lambda_context import ApiLambdaContext

from stepchain import StepContext, TerminalError, Workflow
from stepchain.api import handle_api_event
from stepchain.api.ownership import LOCAL_IDENTITY, caller_of, identity_of, is_operator
from stepchain.api.tokens import mint_token
from stepchain.testing import Harness

EVENTS = Path(__file__).resolve().parents[2] / "events"
MISSING_RUN = "0" * 24
ACCT = "123456789012"
ALICE = {"userArn": f"arn:aws:iam::{ACCT}:user/alice"}
BOB = {"userArn": f"arn:aws:iam::{ACCT}:user/bob"}
APPROVER = {"userArn": f"arn:aws:iam::{ACCT}:user/approver"}
#: a session of the operator role named in STEPCHAIN_OPERATORS by its IAM role ARN (with a path)
OPERATOR = {"userArn": f"arn:aws:sts::{ACCT}:assumed-role/stepchain-operators/jane@example.com"}
OPERATOR_ROLE = f"arn:aws:iam::{ACCT}:role/platform/stepchain-operators"

review = Workflow("review")


@review.step()
def prepare(ctx: StepContext, doc: Any) -> Any:
    if doc == "fail":
        raise TerminalError("asked to fail")
    return {"doc": doc}


review.wait_for_event("approval", timeout_s=86400)


@review.step()
def publish(ctx: StepContext, decision: Any) -> Any:
    return {"published": decision}


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("STEPCHAIN_OWNERSHIP", "on")
    monkeypatch.setenv("STEPCHAIN_OPERATORS", f" {OPERATOR_ROLE}, key-ops ")
    with Harness(review, backend="memory") as harness:
        yield harness


def call(
    h: Harness,
    method: str,
    path: str,
    who: dict[str, Any] | None,
    body: Any = None,
    *,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    authorizer: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """Serve one REST proxy event for ``method path`` as caller ``who`` (identity fields)."""
    event = json.loads((EVENTS / "api-get-run.json").read_text())
    event.update(httpMethod=method, path=path, resource=path, body=None if body is None else json.dumps(body))
    ctx = event["requestContext"]
    ctx.update(httpMethod=method, path="/v1" + path)
    ctx["identity"] = {**{k: None for k in ("userArn", "caller", "user", "accessKey", "apiKeyId")}, **(who or {})}
    if authorizer is not None:
        ctx["authorizer"] = authorizer
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    event["headers"], event["multiValueHeaders"] = hdrs, {k: [v] for k, v in hdrs.items()}
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = None if query is None else {k: [v] for k, v in query.items()}
    out = handle_api_event(h.engine, copy.deepcopy(event), ApiLambdaContext())
    return out["statusCode"], json.loads(out["body"])


def start(h: Harness, who: dict[str, Any], doc: Any = "d", key: str | None = None) -> str:
    status, body = call(h, "POST", "/runs", who, {"workflow": "review", "input": doc}, headers=_key(key))
    assert status in (200, 202), body
    return str(body["run_id"])


def _key(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Idempotency-Key": key}


def run_routes(run_id: str) -> list[tuple[str, str, Any]]:
    """Every route that acts on one run (method, path, body)."""
    base = f"/runs/{run_id}"
    return [
        ("GET", base, None),
        ("GET", f"{base}/steps/prepare", None),
        ("POST", f"{base}/events/approval", {"ok": True}),
        ("POST", f"{base}/approvals", {"event": "approval"}),
        ("POST", f"{base}/redrive", {}),
        ("POST", f"{base}/cancel", None),
    ]


def not_found_body(h: Harness, run_id: str) -> Any:
    """What a caller gets for a run id that does not exist, with ``run_id`` in it."""
    status, body = call(h, "GET", f"/runs/{MISSING_RUN}", ALICE)
    assert status == 404
    return json.loads(json.dumps(body).replace(MISSING_RUN, run_id))


# ------------------------------------------------------------------------------- ownership
def test_another_caller_gets_the_404_of_a_missing_run_on_every_run_route(h: Harness) -> None:
    waiting = start(h, ALICE)
    failed = start(h, ALICE, "fail")
    h.run()
    assert (h.status(waiting), h.status(failed)) == ("WAITING", "FAILED")
    for run_id in (waiting, failed):
        for method, path, body in run_routes(run_id):
            status, answer = call(h, method, path, BOB, body)
            assert (status, answer) == (404, not_found_body(h, run_id)), (method, path)
    status, page = call(h, "GET", "/runs", BOB)
    assert status == 200 and page["runs"] == []
    assert (h.status(waiting), h.status(failed)) == ("WAITING", "FAILED")  # nothing B did took effect
    # the owner can do all of it
    status, page = call(h, "GET", "/runs", ALICE)
    assert status == 200 and {r["run_id"] for r in page["runs"]} == {waiting, failed}
    assert call(h, "GET", f"/runs/{waiting}", ALICE)[0] == 200
    assert call(h, "GET", f"/runs/{waiting}/steps/prepare", ALICE)[0] == 200
    assert call(h, "POST", f"/runs/{failed}/redrive", ALICE, {})[0] == 202
    assert call(h, "POST", f"/runs/{waiting}/events/approval", ALICE, {"ok": 1})[0] == 202
    h.run()
    assert h.status(waiting) == "SUCCEEDED"
    assert call(h, "POST", f"/runs/{failed}/cancel", ALICE)[0] in (200, 409)


def test_an_operator_role_session_sees_and_steers_every_run(h: Harness) -> None:
    a, b = start(h, ALICE), start(h, BOB)
    legacy = h.start("review", "old")  # a run without an owner (before ownership): operators only
    h.run()
    status, page = call(h, "GET", "/runs", OPERATOR)
    assert status == 200 and {r["run_id"] for r in page["runs"]} == {a, b, legacy}
    for run_id in (a, b, legacy):
        assert call(h, "GET", f"/runs/{run_id}", OPERATOR)[0] == 200
        assert call(h, "GET", f"/runs/{run_id}", ALICE)[0] == (200 if run_id == a else 404)
    assert call(h, "POST", f"/runs/{b}/cancel", OPERATOR)[0] == 200
    assert h.status(b) == "CANCELLED"
    # an operator named by API key id
    assert call(h, "GET", f"/runs/{legacy}", {"apiKeyId": "key-ops"})[0] == 200


def test_idempotency_keys_are_scoped_per_caller(h: Harness) -> None:
    a = start(h, ALICE, "x", key="order-7")
    b = start(h, BOB, "y", key="order-7")  # B's same key: B's own run, no 409, nothing of A's
    assert a != b
    assert start(h, ALICE, "x", key="order-7") == a and start(h, BOB, "y", key="order-7") == b
    status, body = call(h, "POST", "/runs", BOB, {"workflow": "review", "input": "x"}, headers=_key("order-7"))
    assert status == 409 and a not in json.dumps(body)
    owners = {r: h.engine.store.get_run(r).owner for r in (a, b)}  # type: ignore[union-attr]
    assert owners == {a: ALICE["userArn"], b: BOB["userArn"]}


def test_api_key_and_cognito_identities_own_runs(h: Harness) -> None:
    key_run = start(h, {"apiKeyId": "key-team-a"})
    assert call(h, "GET", f"/runs/{key_run}", {"apiKeyId": "key-team-b"})[0] == 404
    assert call(h, "GET", f"/runs/{key_run}", {"apiKeyId": "key-team-a"})[0] == 200
    sub = {"claims": {"sub": "3f1c-user-1"}}
    status, body = call(h, "POST", "/runs", {}, {"workflow": "review", "input": 1}, authorizer=sub)
    assert status == 202
    other = {"claims": {"sub": "3f1c-user-2"}}
    assert call(h, "GET", f"/runs/{body['run_id']}", {}, authorizer=other)[0] == 404
    assert call(h, "GET", f"/runs/{body['run_id']}", {}, authorizer=sub)[0] == 200


def test_requests_without_identity_are_one_anonymous_caller_who_is_never_an_operator(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an emulator that does not authenticate (LocalStack under IAM) sends: no identity at all."""
    monkeypatch.setenv("STEPCHAIN_OPERATORS", "anonymous")  # even named, anonymous is no operator
    mine, theirs = start(h, {}), start(h, ALICE)
    status, page = call(h, "GET", "/runs", None)
    assert status == 200 and [r["run_id"] for r in page["runs"]] == [mine]
    assert call(h, "GET", f"/runs/{theirs}", None)[0] == 404
    assert call(h, "GET", f"/runs/{mine}", ALICE)[0] == 404


def test_identity_resolution_and_operator_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    session = {"requestContext": {"identity": OPERATOR}}
    assert identity_of(session) == f"arn:aws:sts::{ACCT}:assumed-role/stepchain-operators"
    assert identity_of({"requestContext": {"identity": {"apiKeyId": "k1", "userArn": None}}}) == "k1"
    assert identity_of({"requestContext": {"authorizer": {"claims": {"sub": "s"}}, "identity": ALICE}}) == "s"
    assert identity_of({"requestContext": {"identity": {}}}) is None
    env = {"STEPCHAIN_OPERATORS": f"{OPERATOR_ROLE},k1"}
    assert is_operator(f"arn:aws:sts::{ACCT}:assumed-role/stepchain-operators", env)
    assert not is_operator(f"arn:aws:sts::{ACCT}:assumed-role/stepchain-operators-2", env)
    assert not is_operator("arn:aws:sts::999999999999:assumed-role/stepchain-operators", env)
    assert is_operator("k1", env) and not is_operator("k2", env)
    # unset: the fixed local identity, an operator, whatever the event says; off: no owner at all
    assert caller_of(session, {}).owner == LOCAL_IDENTITY and caller_of(session, {}).operator
    assert caller_of(session, {"STEPCHAIN_OWNERSHIP": "off"}).owner is None


# ------------------------------------------------------------------------------- approvals
def mint(h: Harness, run_id: str, who: dict[str, Any], **body: Any) -> tuple[int, Any]:
    return call(h, "POST", f"/runs/{run_id}/approvals", who, {"event": "approval", **body})


def test_an_approval_token_works_once_for_an_approver_without_run_access(h: Harness) -> None:
    run_id = start(h, ALICE)
    h.run()
    status, minted = mint(h, run_id, ALICE, ttl_s=600)
    assert status == 201 and minted["approve"] == f"/v1/approvals/{minted['token']}"
    assert minted["expires_ms"] == h.engine.clock.now_ms() + 600_000
    status, body = call(h, "POST", f"/approvals/{minted['token']}", APPROVER, {"approved": True})
    assert (status, body) == (202, {"run_id": run_id, "event": "approval", "iteration": 0, "status": "delivered"})
    h.run()
    assert h.status(run_id) == "SUCCEEDED"
    assert h.output(run_id) == {"published": {"approved": True}}
    # the approver could approve, but cannot read the run
    assert call(h, "GET", f"/runs/{run_id}", APPROVER)[0] == 404
    # replayed: 409, and nothing changes
    status, body = call(h, "POST", f"/approvals/{minted['token']}", APPROVER, {"approved": False})
    assert status == 409 and body["error"]["code"] == "token_used"
    assert h.output(run_id) == {"published": {"approved": True}}


def test_expired_tampered_foreign_and_other_run_tokens_are_rejected(h: Harness) -> None:
    run_a, run_b = start(h, ALICE), start(h, ALICE)
    h.run()
    _, minted = mint(h, run_a, ALICE, ttl_s=60)
    token = minted["token"]
    # another run: the run id inside the token swapped for run B's, the signature kept
    body, mac = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**doc, "r": run_b}).encode()).decode().rstrip("=")
    flipped = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    foreign = mint_token(run_a, "approval", h.engine.clock.now_ms() + 60_000, key=b"another-deployment-key" * 2)[0]
    for bad in (f"{forged}.{mac}", flipped, foreign):
        status, err = call(h, "POST", f"/approvals/{bad}", APPROVER, {"ok": True})
        assert (status, err["error"]["code"]) == (403, "invalid_token")
    status, err = call(h, "POST", "/approvals/not-a-token", APPROVER, {"ok": True})
    assert status == 400 and err["error"]["code"] == "invalid_parameter"
    h.clock.advance(60_000)  # expired
    status, err = call(h, "POST", f"/approvals/{token}", APPROVER, {"ok": True})
    assert (status, err["error"]["code"]) == (410, "token_expired")
    assert (h.status(run_a), h.status(run_b)) == ("WAITING", "WAITING")


def test_minting_needs_the_run_and_an_event_it_waits_for(h: Harness) -> None:
    run_id = start(h, ALICE)
    h.run()
    assert mint(h, run_id, BOB)[0] == 404  # not B's run
    status, err = mint(h, run_id, ALICE, event="payment")
    assert (status, err["error"]["code"]) == (404, "event_not_found")
    assert mint(h, run_id, ALICE, ttl_s=0)[0] == 422
    assert mint(h, run_id, OPERATOR)[0] == 201
    call(h, "POST", f"/runs/{run_id}/cancel", ALICE)
    status, err = mint(h, run_id, ALICE)
    assert status == 409


def test_a_use_that_died_after_spending_the_token_can_be_retried(h: Harness) -> None:
    """The token was recorded as used but the event was never stored (the API died in between):
    the retry delivers it; the event item stays the single-effect guard, so a second retry is 409."""
    run_id = start(h, ALICE)
    h.run()
    _, minted = mint(h, run_id, ALICE)
    doc = json.loads(base64.urlsafe_b64decode(minted["token"].split(".")[0] + "=="))
    assert h.engine.store.spend_token(run_id, doc["n"], h.engine.clock.now_ms(), 0)
    assert call(h, "POST", f"/approvals/{minted['token']}", APPROVER, "yes")[0] == 202
    assert call(h, "POST", f"/approvals/{minted['token']}", APPROVER, "yes")[0] == 409
    h.run()
    assert h.output(run_id) == {"published": "yes"}
