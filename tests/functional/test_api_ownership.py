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
from stepchain.api.identity import ConfigurationError, Identity, identity_of
from stepchain.api.ownership import LOCAL_IDENTITY, caller_of, is_operator
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
    monkeypatch.setenv("STEPCHAIN_OPERATORS", f" {OPERATOR_ROLE}, apikey:key-ops ")
    monkeypatch.setenv("STEPCHAIN_CURSOR_KEY", "k" * 32)  # ownership on: no public constant key
    monkeypatch.setenv("STEPCHAIN_APPROVAL_KEY", "a" * 32)
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
        ("GET", f"{base}/stream", None),
        ("POST", f"{base}/events/approval", {"ok": True}),
        ("POST", f"{base}/approvals", {"event": "approval"}),
        ("POST", f"{base}/redrive", {}),
        ("POST", f"{base}/fork", {"node": "prepare"}),
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
    assert owners == {a: "iam:" + ALICE["userArn"], b: "iam:" + BOB["userArn"]}


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


def test_requests_without_identity_are_refused_never_a_shared_bucket(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16.7: what an emulator that does not authenticate (LocalStack under IAM) sends: no identity at
    all. Before: one shared caller `anonymous` that read every other anonymous run. Now 401 on every route."""
    theirs = start(h, ALICE)
    h.run()
    anywhere = [("POST", "/runs", {"workflow": "review", "input": 1}), ("GET", "/runs", None)]
    for method, path, body in anywhere + run_routes(theirs):
        status, answer = call(h, method, path, None, body)
        assert (status, answer["error"]["code"]) == (401, "unauthenticated"), (method, path)
    assert h.status(theirs) == "WAITING"


def test_ownership_fails_closed_when_unset(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.5: without STEPCHAIN_OWNERSHIP the mode was `local`, where every caller is an operator."""
    monkeypatch.delenv("STEPCHAIN_OWNERSHIP")
    mine = start(h, ALICE)
    assert call(h, "GET", f"/runs/{mine}", BOB)[0] == 404
    assert call(h, "GET", "/runs", None)[0] == 401
    assert caller_of({"requestContext": {"identity": ALICE}}, {}).owner == "iam:" + ALICE["userArn"]
    monkeypatch.setenv("STEPCHAIN_OWNERSHIP", "local")  # the explicit local mode: the old behaviour
    assert call(h, "GET", f"/runs/{mine}", BOB)[0] == 200


def test_two_sessions_of_one_role_are_two_callers_unless_shared(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.1: everyone behind one SSO permission set assumed the same role; each session is its own
    caller. LocalStack (community) never fills requestContext.identity.userArn (its API Gateway parse
    handler sets it to None), so this is shown here, at the handler, and not in the e2e tier."""
    role = f"arn:aws:sts::{ACCT}:assumed-role/AWSReservedSSO_Dev_0123456789abcdef"
    ann, ben = {"userArn": f"{role}/ann@example.com"}, {"userArn": f"{role}/ben@example.com"}
    run_id = start(h, ann, key="k1")
    assert call(h, "GET", f"/runs/{run_id}", ben)[0] == 404
    assert call(h, "POST", f"/runs/{run_id}/cancel", ben)[0] == 404
    assert start(h, ben, key="k1") != run_id  # idempotency keys per session too
    assert [r["run_id"] for r in call(h, "GET", "/runs", ben)[1]["runs"]] != [run_id]
    assert call(h, "GET", f"/runs/{run_id}", ann)[0] == 200
    monkeypatch.setenv("STEPCHAIN_ASSUMED_ROLE_CALLER", "role")  # the documented opt-in: the role shares
    shared = start(h, ann)
    assert call(h, "GET", f"/runs/{shared}", ben)[0] == 200
    assert h.engine.store.get_run(shared).owner == f"sts-role:{role}"  # type: ignore[union-attr]


def test_cognito_identities_behind_one_role_are_separate_callers(h: Harness) -> None:
    """Issue 16.1: a Cognito identity pool gives every app user a session of ONE role (same session name)."""
    session = f"arn:aws:sts::{ACCT}:assumed-role/app-authenticated/CognitoIdentityCredentials"
    user1 = {"userArn": session, "cognitoIdentityId": "us-east-1:11111111-aaaa-4bbb-8ccc-000000000001"}
    user2 = {"userArn": session, "cognitoIdentityId": "us-east-1:11111111-aaaa-4bbb-8ccc-000000000002"}
    run_id = start(h, user1)
    for method, path, body in run_routes(run_id):
        assert call(h, method, path, user2, body)[0] == 404, (method, path)
    assert call(h, "GET", f"/runs/{run_id}", user1)[0] == 200
    assert h.engine.store.get_run(run_id).owner == "cognito:" + user1["cognitoIdentityId"]  # type: ignore[union-attr]


def test_identity_sources_do_not_share_a_namespace(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.6: a Lambda authorizer's principalId equal to an IAM ARN, `anonymous` or `local`, or
    shaped like an assumed-role session of the operator role, is none of those callers."""
    alice_run = start(h, ALICE)
    for principal in (ALICE["userArn"], "anonymous", "local", OPERATOR["userArn"], f"iam:{ALICE['userArn']}"):
        auth = {"principalId": principal}
        assert call(h, "GET", f"/runs/{alice_run}", {}, authorizer=auth)[0] == 404, principal
        assert call(h, "GET", "/runs", {}, authorizer=auth)[1]["runs"] == [], principal
    forged = {"claims": {"sub": f"arn:aws:sts::{ACCT}:assumed-role/stepchain-operators/x"}}
    assert call(h, "GET", f"/runs/{alice_run}", {}, authorizer=forged)[0] == 404
    assert call(h, "GET", f"/runs/{alice_run}", {"apiKeyId": ALICE["userArn"]})[0] == 404


def test_identity_resolution_and_operator_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    session = {"requestContext": {"identity": OPERATOR}}
    assert identity_of(session) == Identity("sts-session", OPERATOR["userArn"])
    role = f"arn:aws:sts::{ACCT}:assumed-role/stepchain-operators"
    assert identity_of(session, {"STEPCHAIN_ASSUMED_ROLE_CALLER": "role"}) == Identity("sts-role", role)
    assert str(identity_of({"requestContext": {"identity": {"apiKeyId": "k1", "userArn": None}}})) == "apikey:k1"
    assert str(identity_of({"requestContext": {"authorizer": {"claims": {"sub": "s"}}, "identity": ALICE}})) == "jwt:s"
    assert identity_of({"requestContext": {"identity": {}}}) is None
    env = {"STEPCHAIN_OPERATORS": f"{OPERATOR_ROLE},apikey:k1,iam:arn:aws:iam::{ACCT}:user/root-ops"}
    assert is_operator(f"sts-session:{role}/anyone", env) and is_operator(f"sts-role:{role}", env)
    assert not is_operator(f"sts-session:arn:aws:sts::{ACCT}:assumed-role/stepchain-operators-2/x", env)
    assert not is_operator("sts-session:arn:aws:sts::999999999999:assumed-role/stepchain-operators/x", env)
    assert not is_operator(f"authorizer:{role}/anyone", env)  # an authorizer principal never folds into a role
    assert is_operator("apikey:k1", env) and not is_operator("apikey:k2", env) and not is_operator("authorizer:k1", env)
    assert is_operator(f"iam:arn:aws:iam::{ACCT}:user/root-ops", env)
    with pytest.raises(ConfigurationError, match="names no source"):
        is_operator("apikey:k1", {"STEPCHAIN_OPERATORS": "k1"})  # bare: which source? refused
    # local: the fixed local identity, an operator, whatever the event says; off: no owner at all
    local = caller_of(session, {"STEPCHAIN_OWNERSHIP": "local"})
    assert local.owner == LOCAL_IDENTITY and local.operator
    assert caller_of(session, {"STEPCHAIN_OWNERSHIP": "off"}).owner is None


def test_the_api_refuses_to_serve_without_signing_keys(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.4: without the secrets' variables, tokens and cursors were signed with a constant from the
    source, and a token forged with it was accepted (202, delivered)."""
    run_id = start(h, ALICE)
    h.run()
    public = b"stepchain-approval-local-v1"
    forged = mint_token(run_id, "approval", h.engine.clock.now_ms() + 60_000, key=public)[0]
    assert approve(h, forged, {"ok": True})[0] == 403  # a configured key: the constant signs nothing
    monkeypatch.delenv("STEPCHAIN_APPROVAL_KEY")
    with pytest.raises(ConfigurationError, match="no approval signing key"):
        approve(h, forged, {"ok": True})
    monkeypatch.setenv("STEPCHAIN_APPROVAL_KEY", "short")  # a weak key is no key either
    with pytest.raises(ConfigurationError):
        call(h, "GET", "/runs", ALICE)
    monkeypatch.setenv("STEPCHAIN_APPROVAL_KEY", "a" * 32)
    monkeypatch.delenv("STEPCHAIN_CURSOR_KEY")
    with pytest.raises(ConfigurationError, match="no cursor signing key"):
        call(h, "GET", "/runs", ALICE)
    assert h.status(run_id) == "WAITING"


def test_not_yours_and_missing_cost_the_same_store_reads(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.9: a 404 for someone else's run cost one store read, a missing run two."""
    run_id = start(h, ALICE)
    h.run()
    store = h.engine.store
    reads: list[str] = []
    real_get = store.get_run

    def counted(rid: str) -> Any:
        reads.append(rid)
        return real_get(rid)

    monkeypatch.setattr(store, "get_run", counted)
    for method, path, body in run_routes(run_id):
        costs = []
        for rid in (run_id, MISSING_RUN):
            reads.clear()
            status, _ = call(h, method, path.replace(run_id, rid), BOB, body)
            assert status == 404
            costs.append(len(reads))
        assert costs[0] == costs[1] == 1, (method, path, costs)


# ------------------------------------------------------------------------------- approvals
def mint(h: Harness, run_id: str, who: dict[str, Any], **body: Any) -> tuple[int, Any]:
    return call(h, "POST", f"/runs/{run_id}/approvals", who, {"event": "approval", **body})


def approve(h: Harness, token: str, payload: Any) -> tuple[int, Any]:
    """Use an approval token: in the Approval-Token header (issue 16.3: never in a URL)."""
    return call(h, "POST", "/approvals", APPROVER, payload, headers={"Approval-Token": token})


def test_an_approval_token_works_once_for_an_approver_without_run_access(h: Harness) -> None:
    run_id = start(h, ALICE)
    h.run()
    status, minted = mint(h, run_id, ALICE, ttl_s=600)
    assert status == 201 and minted["approve"] == "/v1/approvals"
    assert minted["expires_ms"] == h.engine.clock.now_ms() + 600_000
    status, body = approve(h, minted["token"], {"approved": True})
    assert (status, body) == (202, {"run_id": run_id, "event": "approval", "iteration": 0, "status": "delivered"})
    h.run()
    assert h.status(run_id) == "SUCCEEDED"
    assert h.output(run_id) == {"published": {"approved": True}}
    # the approver could approve, but cannot read the run
    assert call(h, "GET", f"/runs/{run_id}", APPROVER)[0] == 404
    # replayed: 409, and nothing changes
    status, body = approve(h, minted["token"], {"approved": False})
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
        status, err = approve(h, bad, {"ok": True})
        assert (status, err["error"]["code"]) == (403, "invalid_token")
    status, err = approve(h, "not-a-token", {"ok": True})
    assert status == 400 and err["error"]["code"] == "invalid_parameter"
    h.clock.advance(60_000)  # expired
    status, err = approve(h, token, {"ok": True})
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
    assert approve(h, minted["token"], "yes")[0] == 202
    assert approve(h, minted["token"], "yes")[0] == 409
    h.run()
    assert h.output(run_id) == {"published": "yes"}


def test_approval_tokens_never_reach_the_function_logs(
    h: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16.3: a use that fails before the token is spent (here a 5xx: the store fails) must not leave
    the token in a log; neither does a use that succeeds, nor minting. The token is a header, never a path."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    caplog.set_level("DEBUG")
    run_id = start(h, ALICE)
    h.run()
    _, minted = mint(h, run_id, ALICE)
    token = minted["token"]
    assert token not in minted["approve"]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store is down")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(h.engine.store, "spend_token", broken)
        assert approve(h, token, {"ok": 1})[0] == 500
    assert approve(h, token, {"ok": 1})[0] == 202  # it was not spent: the retry works
    out = capsys.readouterr()
    logged = out.out + out.err + caplog.text
    assert "the store is down" in logged  # the failure was logged...
    for part in (token, *token.split(".")):  # ...and nothing of the token
        assert part not in logged
