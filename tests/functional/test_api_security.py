"""What the runs API hands out (issue 11): SigV4 output URLs with a short expiry, errors redacted of AWS
internals (the store and the log keep the full text), per-run limits, and the cursor key from Secrets
Manager. Same plumbing as test_api.py: API Gateway proxy events into ``handle_api_event``."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws
from tests.functional.test_api import call, fanout, start

from stepchain import StepContext, TerminalError, Workflow
from stepchain.api import security
from stepchain.api.cursors import cursor_mac as _cursor_mac
from stepchain.api.cursors import unb64 as _unb64
from stepchain.define.limits import RunLimits
from stepchain.exceptions import LimitExceeded, ValidationError
from stepchain.runtimes.aws import AwsClients
from stepchain.store.payloads import S3BlobStore
from stepchain.testing import Harness

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/stepchain-PlanFunctionRole-1A2B3C4D5E6F/stepchain-PlanFunction-Ab12"
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/stepchain-CheckpointTable-9Z8Y7X"
KEY_ID = "ASIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#: what botocore puts in a ClientError for a missing permission, plus the credentials a careless step logs
ACCESS_DENIED = (
    "An error occurred (AccessDeniedException) when calling the GetItem operation: User: "
    f"{ROLE_ARN} is not authorized to perform: dynamodb:GetItem on resource: {TABLE_ARN} because no "
    f"identity-based policy allows the dynamodb:GetItem action (account {ACCOUNT}, key {KEY_ID}, "
    f"secret_access_key={SECRET})"
)
LEAKS = (ACCOUNT, "arn:aws", KEY_ID, SECRET, "PlanFunctionRole", "CheckpointTable-9Z8Y7X")

denied = Workflow("denied")


@denied.step()
def fetch_secret(ctx: StepContext, _: Any) -> Any:
    raise TerminalError(ACCESS_DENIED)


@pytest.fixture(autouse=True)
def _fresh_cursor_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("STEPCHAIN_CURSOR_KEY", "STEPCHAIN_CURSOR_KEY_SECRET_ARN", "STEPCHAIN_OUTPUT_URL_TTL_S"):
        monkeypatch.delenv(name, raising=False)
    security.reset_cursor_key()
    yield
    security.reset_cursor_key()


# ---------------------------------------------------------------------------------- presigning
def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize(("ttl", "expected"), [(None, "300"), ("120", "120")])
def test_output_urls_are_sigv4_and_short_lived(monkeypatch: pytest.MonkeyPatch, ttl: str | None, expected: str) -> None:
    if ttl is not None:
        monkeypatch.setenv("STEPCHAIN_OUTPUT_URL_TTL_S", ttl)
    with Harness(fanout, backend="moto", inline_limit=64) as h:
        run_id = start(h, "fanout", 2).json["run_id"]
        h.run()
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/steps/total"):
            url = call(h, "get-run" if path.count("/") == 2 else "get-step", path=path).json["output_url"]
            q = query_of(url)
            assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"  # SigV4, not SigV2's AWSAccessKeyId/Signature
            assert q["X-Amz-Expires"] == expected
            assert "AWSAccessKeyId" not in q and "Signature" not in q


def test_the_lambda_s3_client_presigns_sigv4_itself() -> None:
    """AwsClients (what the deployed functions use) configures s3v4: no twin client is needed."""
    with mock_aws():
        blobs = S3BlobStore("bucket", AwsClients().get("s3"))
        url = blobs.presigned_url("k", 60)
        assert url is not None and query_of(url)["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert blobs._presigner is None  # the client itself signed


def test_presigned_urls_live_at_most_fifteen_minutes() -> None:
    with mock_aws():
        blobs = S3BlobStore("bucket", boto3.client("s3", region_name="us-east-1"))
        with pytest.raises(ValidationError):
            blobs.presigned_url("k", 901)
        with pytest.raises(ValidationError):
            blobs.presigned_url("k", 0)
        assert query_of(blobs.presigned_url("k", 900) or "")["X-Amz-Expires"] == "900"


# ----------------------------------------------------------------------------------- redaction
def test_step_errors_are_redacted_in_every_view_and_kept_whole_in_store_and_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Harness(denied, backend="memory") as h:
        run_id = start(h, "denied", None).json["run_id"]
        h.run()
        views = {
            "run": call(h, "get-run", path=f"/runs/{run_id}"),
            "step": call(h, "get-step", path=f"/runs/{run_id}/steps/fetch_secret"),
            "list": call(h, "list-runs", query={"workflow": "denied"}),
        }
        for name, reply in views.items():
            assert reply.status == 200, name
            for leak in LEAKS:
                assert leak not in reply.raw, (name, leak)
        run_error = views["run"].json["error"]
        assert run_error["type"] == "TerminalError" and run_error["node"] == "fetch_secret"
        assert run_error["message"].startswith("An error occurred (AccessDeniedException) when calling the GetItem")
        assert "<redacted:arn> is not authorized to perform: dynamodb:GetItem" in run_error["message"]
        assert "account <redacted:account>, key <redacted:key-id>" in run_error["message"]
        assert "secret_access_key=<redacted:secret>" in run_error["message"]
        assert views["step"].json["error"] == run_error
        assert views["list"].json["runs"][0]["error"] == run_error
        assert views["run"].json["nodes"][0]["error"] == run_error
        stored = h.store.get_run(run_id)
        assert stored is not None and stored.error is not None and stored.error["message"] == ACCESS_DENIED
    [failed] = [r for r in caplog.records if r.getMessage() == "step failed"]
    assert failed.__dict__["error"]["message"] == ACCESS_DENIED  # the worker's log line has it all


@pytest.mark.parametrize(
    "text",
    [
        "run 0195d2a4c0de0123456789ab failed",  # a run id: 24 hex
        "blob 'r/fetch/3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea.json' is missing",
        "HTTP 404 for https://example.com/articles/some-long-title-2024/index.html",
        "at 1764466380123 ms, 3 attempts, 12345678901 bytes and 1234567890123 ms",  # 11 and 13 digits
        "map 'summarize' has 5000 items; this deployment allows at most 1000 (STEPCHAIN_MAX_MAP_ITEMS)",
        "gave up after 3 attempts: ConnectionError: read timed out",
    ],
)
def test_redaction_leaves_ordinary_error_text_alone(text: str) -> None:
    assert security.redact(text) == text


@pytest.mark.parametrize(
    ("text", "marker"),
    [
        ("arn:aws-us-gov:iam::123456789012:role/x", "<redacted:arn>"),
        ("arn:aws:s3:::my-bucket/payloads/abc.json", "<redacted:arn>"),
        ("AKIAIOSFODNN7EXAMPLE", "<redacted:key-id>"),
        ("https://sqs.us-east-1.amazonaws.com/123456789012/q", "<redacted:account>"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abc", "<redacted:secret>"),
        ('{"api_key": "sk-live-abc"}', "<redacted:secret>"),
        ("token FwoGZXIvYXdzEJr//////////wEaDOl7XyZ2kEXAMPLE9sQzKBa", "<redacted:secret>"),
        ("X-Amz-Signature=40fce4d4144db0e37a11f3a70b15116daa07eabb", "<redacted:secret>"),
    ],
)
def test_redaction_catches(text: str, marker: str) -> None:
    out = security.redact(text)
    assert marker in out
    for secret in ("123456789012", "AKIAIOSFODNN7EXAMPLE", "eyJzdWIiOiIxMjMifQ", "sk-live", "FwoGZXIv", "40fce4"):
        assert secret not in out


# -------------------------------------------------------------------------------------- limits
def test_run_input_over_the_limit_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCHAIN_MAX_INPUT_BYTES", "100")
    with Harness(fanout, backend="memory") as h:
        big = start(h, "fanout", {"text": "x" * 200})
        assert big.status == 413 and big.code == "limit_exceeded"
        assert "at most 100" in big.json["error"]["message"]
        assert h.runs() == []  # nothing was started
        failed = start(h, "fanout", -1)  # fits; the split step fails it
        assert failed.status == 202
        h.run()
        run_id = failed.json["run_id"]
        path = f"/runs/{run_id}/redrive"
        too_big = call(h, "redrive-run", path=path, body={"input": list(range(100))})
        assert too_big.status == 413 and too_big.code == "limit_exceeded"
        assert h.status(run_id) == "FAILED"
        assert call(h, "redrive-run", path=path, body={"input": 2}).status == 202


def test_a_map_wider_than_the_limit_fails_the_run_before_fanning_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPCHAIN_MAX_MAP_ITEMS", "3")
    with Harness(fanout, backend="memory") as h:
        assert h.engine.limits == RunLimits(max_map_items=3)
        ok, wide = h.start("fanout", 3), h.start("fanout", 4)
        h.run()
        assert h.status(ok) == "SUCCEEDED" and h.output(ok)["sum"] == 5
        assert h.status(wide) == "FAILED"
        error = h.engine.get_run(wide).error
        assert error is not None and error["type"] == LimitExceeded.__name__ and "has 4 items" in error["message"]
        assert h.store.list_nodes(wide, "square#") == []  # no item was written
        view = call(h, "get-run", path=f"/runs/{wide}").json
        assert view["error"]["type"] == "LimitExceeded"
        # the failed node is the map: a redrive with a list within the limit runs it
        assert call(h, "redrive-run", path=f"/runs/{wide}/redrive", body={"input": [1, 2, 3]}).status == 202
        h.run()
        assert h.status(wide) == "SUCCEEDED" and h.output(wide)["sum"] == 14


def test_limits_from_env_reject_nonsense() -> None:
    assert RunLimits.from_env({}) == RunLimits()
    assert RunLimits.from_env({"STEPCHAIN_MAX_MAP_ITEMS": "10", "STEPCHAIN_MAX_INPUT_BYTES": " 5 "}) == RunLimits(10, 5)
    for bad in ("0", "-1", "ten"):
        with pytest.raises(ValidationError):
            RunLimits.from_env({"STEPCHAIN_MAX_MAP_ITEMS": bad})


# ---------------------------------------------------------------------------------- cursor key
def test_cursors_are_signed_with_the_secrets_manager_key_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with Harness(fanout, backend="moto") as h:
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        key = "k3yFromSecretsManager0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
        arn = sm.create_secret(Name="stepchain-cursor", SecretString=key)["ARN"]
        reads: list[str] = []
        sm.meta.events.register("before-call.secrets-manager.GetSecretValue", lambda **_: reads.append("get"))
        monkeypatch.setattr(security, "_secrets_client", lambda: sm)
        monkeypatch.setenv("STEPCHAIN_CURSOR_KEY_SECRET_ARN", arn)
        monkeypatch.setenv("STEPCHAIN_CURSOR_KEY", "the-environment-value-is-not-used")
        for i in range(3):
            h.start("fanout", i)
        pages = []
        cursor = None
        for _ in range(3):
            query = {"workflow": "fanout", "limit": "1", **({"cursor": cursor} if cursor else {})}
            page = call(h, "list-runs", query=query)
            assert page.status == 200
            pages.append(page.json["runs"][0]["run_id"])
            cursor = page.json["next_cursor"]
            if cursor:
                body, _, mac = cursor.partition(".")
                expected = hmac.new(key.encode(), _unb64(body), "sha256").digest()[:16]
                assert _unb64(mac) == expected == _cursor_mac(_unb64(body))
        assert len(set(pages)) == 3
        assert reads == ["get"]  # once per execution environment
        # a cursor signed with the local fallback key is one this deployment never issued
        security.reset_cursor_key()
        monkeypatch.delenv("STEPCHAIN_CURSOR_KEY_SECRET_ARN")
        monkeypatch.delenv("STEPCHAIN_CURSOR_KEY")
        forged = call(h, "list-runs", query={"workflow": "fanout", "limit": "1"}).json["next_cursor"]
        monkeypatch.setenv("STEPCHAIN_CURSOR_KEY_SECRET_ARN", arn)
        security.reset_cursor_key()
        rejected = call(h, "list-runs", query={"workflow": "fanout", "cursor": forged})
        assert rejected.status == 400 and rejected.code == "invalid_cursor"


def test_an_unreadable_cursor_secret_is_a_500_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with Harness(fanout, backend="moto") as h:
        h.start("fanout", 1)
        h.start("fanout", 2)
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        monkeypatch.setattr(security, "_secrets_client", lambda: sm)
        missing = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:nope"
        monkeypatch.setenv("STEPCHAIN_CURSOR_KEY_SECRET_ARN", missing)
        broken = call(h, "list-runs", query={"workflow": "fanout", "limit": "1"})
        assert broken.status == 500 and "123456789012" not in broken.raw
        arn = sm.create_secret(Name="nope", SecretString="s" * 40 + "0123456789")["ARN"]
        monkeypatch.setenv("STEPCHAIN_CURSOR_KEY_SECRET_ARN", arn)
        assert call(h, "list-runs", query={"workflow": "fanout", "limit": "1"}).status == 200


def test_no_response_model_has_an_unredacted_error_field() -> None:
    """Every ``error`` field of the response models is the redacting type (a new view cannot forget it)."""
    from stepchain.api import models

    for name in dir(models):
        model = getattr(models, name)
        if isinstance(model, type) and issubclass(model, models.BaseModel) and "error" in model.model_fields:
            field = model.model_fields["error"]
            if field.annotation is models.ErrorDetail:
                continue
            assert any(getattr(m, "func", None) is security.redact_error for m in field.metadata), name
    assert any(getattr(m, "func", None) is security.redact for m in models.ErrorDetail.model_fields["message"].metadata)
    assert json.loads(models.ErrorResponse(error={"code": "c", "message": f"x {ACCOUNT}"}).model_dump_json()) == {
        "error": {"code": "c", "message": "x <redacted:account>", "details": None}
    }
    assert re.fullmatch(r"<redacted:\w[\w-]*>", security.redact(ROLE_ARN))
