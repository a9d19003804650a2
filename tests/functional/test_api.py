"""The runs API end to end in process: API Gateway REST proxy events (from events/api-*.json) through
``handle_api_event`` into an engine on the in-memory store (moto for the S3 presigned-URL case)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lambda_context import ApiLambdaContext

from stepchain import Registry, StepContext, TerminalError, Workflow
from stepchain.api import MAX_BODY_BYTES, handle_api_event, openapi_json
from stepchain.api import app as api_app
from stepchain.api.cursors import encode_cursor
from stepchain.api.decoding import MAX_DEPTH
from stepchain.api.models import NodeViewModel, RunDetail, RunTotals
from stepchain.observe.ledger import NodeView, RunView
from stepchain.testing import Harness

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
RUN_ID = re.compile(r"^[0-9a-f]{24}$")
MISSING_RUN = "0" * 24

# ------------------------------------------------------------------------------ workflows
approval = Workflow("approval")


@approval.step()
def prepare(ctx: StepContext, doc: Any) -> Any:
    return {"doc": doc}


approval.wait_for_event("approve", timeout_s=3600)


@approval.step()
def publish(ctx: StepContext, decision: Any) -> Any:
    return {"published": decision}


fanout = Workflow("fanout")


@fanout.step()
def split(ctx: StepContext, n: int) -> list[int]:
    if n < 0:
        raise TerminalError("n must be >= 0")
    return list(range(n))


@fanout.map()
def square(ctx: StepContext, i: int) -> int:
    return i * i


@fanout.step()
def total(ctx: StepContext, squares: list[int]) -> dict[str, Any]:
    return {"sum": sum(squares), "blob": "x" * 200}


# -------------------------------------------------------------------------------- plumbing


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: str

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def code(self) -> str:
        return str(self.json["error"]["code"])


_UNSET: Any = object()


def call(
    h: Harness,
    sample: str,
    *,
    method: str | None = None,
    path: str | None = None,
    body: Any = _UNSET,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = _UNSET,
    stage: str | None = "v1",
) -> Reply:
    """Load events/api-<sample>.json, override what the test needs, and serve it."""
    event = json.loads((EVENTS / f"api-{sample}.json").read_text())
    if method is not None:
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    if path is not None:
        event["path"] = path
    event["requestContext"]["path"] = (f"/{stage}" if stage else "") + event["path"]
    if raw_body is not None:
        event["body"] = raw_body
    elif body is not _UNSET:
        event["body"] = None if body is None else json.dumps(body)
    if query is not _UNSET:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = None if query is None else {k: [v] for k, v in query.items()}
    for k, v in (headers or {}).items():  # None removes a header of the sample
        event["headers"].pop(k, None)
        event["multiValueHeaders"].pop(k, None)
        if v is not None:
            event["headers"][k] = v
            event["multiValueHeaders"][k] = [v]
    return serve(h, event)


def serve(h: Harness, event: dict[str, Any]) -> Reply:
    out = handle_api_event(h.engine, copy.deepcopy(event), ApiLambdaContext())
    headers = {k: ", ".join(v) for k, v in (out.get("multiValueHeaders") or {}).items()}
    return Reply(out["statusCode"], {**headers, **(out.get("headers") or {})}, out["body"])


def start(h: Harness, workflow: str, input: Any, *, headers: dict[str, Any] | None = None, **kw: Any) -> Reply:
    """POST /runs without the sample's Idempotency-Key unless ``headers`` gives one."""
    headers = {"Idempotency-Key": None, **(headers or {})}
    return call(h, "start-run", body={"workflow": workflow, "input": input}, headers=headers, **kw)


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness(approval, fanout, backend="memory") as harness:
        yield harness


# ----------------------------------------------------------------------------------- starting
def test_start_run_returns_202_location_and_links(h: Harness) -> None:
    r = start(h, "approval", {"title": "t"})
    assert r.status == 202
    run_id = r.json["run_id"]
    assert RUN_ID.match(run_id)
    assert r.headers["Location"] == f"/v1/runs/{run_id}"
    assert r.json["workflow"] == "approval" and r.json["status"] == "RUNNING"
    assert r.json["version"] == approval.version
    assert r.json["links"]["cancel"] == f"/v1/runs/{run_id}/cancel"
    assert r.headers["Content-Type"] == "application/json"


def test_location_without_stage_prefix_on_custom_domain(h: Harness) -> None:
    r = start(h, "approval", None, stage=None)
    assert r.headers["Location"] == f"/runs/{r.json['run_id']}"


def test_idempotency_same_key_same_run_other_body_conflicts(h: Harness) -> None:
    key = {"Idempotency-Key": "order-42:retry_1.a"}
    first = start(h, "approval", {"n": 1}, headers=key)
    again = start(h, "approval", {"n": 1}, headers={"idempotency-key": key["Idempotency-Key"]})
    assert (first.status, again.status) == (202, 200)
    assert again.json["run_id"] == first.json["run_id"]
    assert again.headers["Location"] == first.headers["Location"]
    other = start(h, "approval", {"n": 2}, headers=key)
    assert other.status == 409 and other.code == "idempotency_conflict"
    assert start(h, "approval", {"n": 1}).json["run_id"] != first.json["run_id"]  # no key: a new run


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "semi;colon"])
def test_bad_idempotency_key_is_400(h: Harness, key: str) -> None:
    r = start(h, "approval", 1, headers={"Idempotency-Key": key})
    assert r.status == 400 and r.code == "invalid_parameter"


def test_start_counts_runs_started_metric(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    start(h, "approval", 1)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(doc.get("RunsStarted") == [1.0] or doc.get("RunsStarted") == 1.0 for doc in emf)


# ------------------------------------------------------------------------- events and completion
def test_event_delivery_completes_the_run(h: Harness) -> None:
    run_id = start(h, "approval", {"title": "t"}).json["run_id"]
    h.run()
    waiting = call(h, "get-run", path=f"/runs/{run_id}")
    assert waiting.json["status"] == "WAITING" and waiting.json["has_output"] is False
    r = call(h, "send-event", path=f"/runs/{run_id}/events/approve", body={"ok": True})
    assert r.status == 202 and r.json == {"run_id": run_id, "event": "approve", "iteration": 0, "status": "delivered"}
    h.run()
    done = call(h, "get-run", path=f"/runs/{run_id}").json
    assert done["status"] == "SUCCEEDED"
    assert done["output"] == {"published": {"ok": True}} and done["output_url"] is None
    assert done["has_output"] is True and done["output_bytes"] > 0
    by_key = {n["key"]: n for n in done["nodes"]}
    assert list(by_key) == ["prepare", "approve", "publish"]
    assert by_key["prepare"]["attempts"] == 1 and by_key["prepare"]["invocations"] == 1
    assert by_key["prepare"]["history"][0]["outcome"] == "succeeded"
    assert done["totals"]["succeeded"] == 3
    assert done["restart_tax_avoided"] == {"crashes": 0, "seconds": 0.0, "usd": 0.0}


def test_event_before_the_wait_is_buffered_and_empty_body_is_null(h: Harness) -> None:
    run_id = start(h, "approval", "doc").json["run_id"]
    r = call(h, "send-event", path=f"/runs/{run_id}/events/approve", body=None)
    assert r.status == 202 and r.json["status"] == "buffered"
    h.run()
    assert call(h, "get-run", path=f"/runs/{run_id}").json["output"] == {"published": None}


def test_event_errors(h: Harness) -> None:
    run_id = start(h, "approval", "doc").json["run_id"]
    unknown = call(h, "send-event", path=f"/runs/{run_id}/events/nope", body={})
    assert unknown.status == 404 and unknown.code == "event_not_found"
    bad_name = call(h, "send-event", path=f"/runs/{run_id}/events/Bad!", body={})
    assert bad_name.status == 400 and bad_name.code == "invalid_parameter"
    no_run = call(h, "send-event", path=f"/runs/{MISSING_RUN}/events/approve", body={})
    assert no_run.status == 404 and no_run.code == "run_not_found"
    call(h, "send-event", path=f"/runs/{run_id}/events/approve", body=1)
    h.run()
    finished = call(h, "send-event", path=f"/runs/{run_id}/events/approve", body=2)
    assert finished.status == 409 and finished.code == "invalid_run_state"


# -------------------------------------------------------------------------------------- steps
def test_step_record_output_and_map_items(h: Harness) -> None:
    run_id = start(h, "fanout", 3).json["run_id"]
    h.run()
    s = call(h, "get-step", path=f"/runs/{run_id}/steps/split")
    assert s.status == 200
    assert s.json["status"] == "SUCCEEDED" and s.json["output"] == [0, 1, 2] and s.json["kind"] == "step"
    assert s.json["attempts"] == 1 and s.json["history"][0]["outcome"] == "succeeded"
    parent = call(h, "get-step", path=f"/runs/{run_id}/steps/square").json
    assert parent["items_total"] == 3 and parent["output"] == [0, 1, 4]
    item = call(h, "get-step", path=f"/runs/{run_id}/steps/square", query={"index": "2"}).json
    assert (item["key"], item["index"], item["output"]) == ("square#00002", 2, 4)


def test_step_errors(h: Harness) -> None:
    run_id = start(h, "fanout", 2).json["run_id"]
    not_started = call(h, "get-step", path=f"/runs/{run_id}/steps/total")
    assert not_started.status == 404 and not_started.code == "step_not_found"
    h.run()
    unknown = call(h, "get-step", path=f"/runs/{run_id}/steps/nope")
    assert unknown.status == 404 and unknown.code == "step_not_found"
    no_item = call(h, "get-step", path=f"/runs/{run_id}/steps/square", query={"index": "7"})
    assert no_item.status == 404
    not_map = call(h, "get-step", path=f"/runs/{run_id}/steps/split", query={"index": "0"})
    assert not_map.status == 404 and not_map.code == "step_not_found"  # no such item: a valid request
    for q in ({"index": "-1"}, {"index": "one"}):
        assert call(h, "get-step", path=f"/runs/{run_id}/steps/square", query=q).status == 400
    assert call(h, "get-step", path=f"/runs/{run_id}/steps/Bad-Step").status == 400


def test_offloaded_output_is_a_presigned_url() -> None:
    with Harness(fanout, backend="moto", inline_limit=64) as h:
        run_id = start(h, "fanout", 2).json["run_id"]
        h.run()
        run = call(h, "get-run", path=f"/runs/{run_id}").json
        assert run["status"] == "SUCCEEDED" and run["has_output"] is True
        assert run["output"] is None and run["output_bytes"] > 64
        url = run["output_url"]
        assert url.startswith("https://stepchain-test-payloads.s3.") and "Signature=" in url and "Expires=" in url
        key = re.search(r"/payloads/([^?]+)", url)
        assert key is not None
        assert json.loads(h.blobs.get(key.group(1))) == {"sum": 1, "blob": "x" * 200}
        step = call(h, "get-step", path=f"/runs/{run_id}/steps/total").json
        assert step["output_url"] and step["output"] is None
        small = call(h, "get-step", path=f"/runs/{run_id}/steps/split").json
        assert small["output"] == [0, 1] and small["output_url"] is None


# ---------------------------------------------------------------------------- cancel / redrive
def test_cancel_then_cancel_again_is_409(h: Harness) -> None:
    run_id = start(h, "approval", 1).json["run_id"]
    h.run()
    r = call(h, "cancel-run", path=f"/runs/{run_id}/cancel")
    assert r.status == 200 and r.json["status"] == "CANCELLED" and r.json["run_id"] == run_id
    again = call(h, "cancel-run", path=f"/runs/{run_id}/cancel")
    assert again.status == 409 and again.code == "invalid_run_state"
    assert call(h, "cancel-run", path=f"/runs/{MISSING_RUN}/cancel").status == 404


def test_redrive_with_replaced_input(h: Harness) -> None:
    run_id = start(h, "fanout", -1).json["run_id"]
    h.run()
    failed = call(h, "get-run", path=f"/runs/{run_id}").json
    assert failed["status"] == "FAILED" and failed["error"]["type"] == "TerminalError"
    r = call(h, "redrive-run", path=f"/runs/{run_id}/redrive", body={"input": 2})
    assert r.status == 202 and r.json["status"] == "RUNNING"
    h.run()
    done = call(h, "get-run", path=f"/runs/{run_id}").json
    assert done["status"] == "SUCCEEDED" and done["redrives"] == 1 and done["output"]["sum"] == 1
    again = call(h, "redrive-run", path=f"/runs/{run_id}/redrive", body=None)
    assert again.status == 409 and again.code == "invalid_run_state"


def test_redrive_without_body_keeps_the_input(h: Harness) -> None:
    run_id = start(h, "fanout", -1).json["run_id"]
    h.run()
    r = call(h, "redrive-run", path=f"/runs/{run_id}/redrive", body=None)
    assert r.status == 202
    h.run()
    assert call(h, "get-run", path=f"/runs/{run_id}").json["status"] == "FAILED"  # same bad input again
    bad = call(h, "redrive-run", path=f"/runs/{run_id}/redrive", body={"inputs": 1})
    assert bad.status == 422 and bad.json["error"]["details"][0]["loc"][:1] == ["body"]


# ------------------------------------------------------------------------------------- listing
def test_list_paginates_with_opaque_cursor(h: Harness) -> None:
    started = {start(h, "fanout", 1).json["run_id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        q = {"workflow": "fanout", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = call(h, "list-runs", query=q)
        assert page.status == 200
        seen += [r["run_id"] for r in page.json["runs"]]
        pages += 1
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
        assert "fanout" not in cursor and ":" not in cursor  # opaque
    assert pages == 3 and len(seen) == 5 and set(seen) == started
    assert seen == sorted(seen, reverse=True)  # newest first


def test_list_filters_by_status_and_validates(h: Harness) -> None:
    ok = start(h, "fanout", 1).json["run_id"]
    start(h, "fanout", -1)
    h.run()
    page = call(h, "list-runs", query={"workflow": "fanout", "status": "SUCCEEDED"}).json
    assert [r["run_id"] for r in page["runs"]] == [ok] and page["runs"][0]["links"]["self"] == f"/v1/runs/{ok}"
    for q in ({"workflow": "fanout", "status": "DONE"}, {"workflow": "fanout", "limit": "0"}):
        r = call(h, "list-runs", query=q)
        assert r.status == 400 and r.code == "invalid_parameter"
    assert call(h, "list-runs", query={"workflow": "fanout", "limit": "many"}).status == 400
    assert call(h, "list-runs", query={"workflow": "fanout", "limit": "101"}).status == 400
    every = call(h, "list-runs", query=None)  # no workflow: every workflow's runs (test_api_listing_all.py)
    assert every.status == 200
    unknown = call(h, "list-runs", query={"workflow": "nope"})
    assert unknown.status == 404 and unknown.code == "workflow_not_found"


def test_list_rejects_foreign_or_forged_cursors(h: Harness) -> None:
    for _ in range(3):
        start(h, "fanout", 1)
    cursor = call(h, "list-runs", query={"workflow": "fanout", "limit": "1"}).json["next_cursor"]
    other = call(h, "list-runs", query={"workflow": "fanout", "status": "RUNNING", "cursor": cursor})
    assert other.status == 400 and other.code == "invalid_cursor"
    forged = base64.urlsafe_b64encode(b'{"w":"fanout","s":null,"c":"not-a-cursor"}').decode()
    for bad in ("!!!", "e30", forged):
        r = call(h, "list-runs", query={"workflow": "fanout", "cursor": bad})
        assert r.status == 400 and r.code == "invalid_cursor", bad


def test_list_defaults_to_the_only_workflow() -> None:
    with Harness(fanout, backend="memory") as h:
        run_id = start(h, "fanout", 1).json["run_id"]
        page = call(h, "list-runs", query=None)
        assert page.status == 200 and [r["run_id"] for r in page.json["runs"]] == [run_id]


# ---------------------------------------------------------------------------- user mistakes
def test_malformed_json_is_400(h: Harness) -> None:
    for raw in ('{"workflow": "approval",', "NaN", '{"workflow":"approval","input":Infinity}', "[1" * 10 + "]"):
        r = call(h, "start-run", raw_body=raw)
        assert r.status == 400 and r.code == "malformed_json", raw[:20]


@pytest.mark.parametrize(
    "body",
    [{"input": 1}, {"workflow": 7}, {"workflow": "approval", "extra": 1}, ["approval"], {"workflow": "Bad Name"}],
)
def test_schema_violations_are_422_with_details(h: Harness, body: Any) -> None:
    r = call(h, "start-run", body=body)
    assert r.status == 422 and r.code == "validation_error"
    assert r.json["error"]["details"] and all(d["loc"][0] == "body" for d in r.json["error"]["details"])


def test_empty_start_body_is_422(h: Harness) -> None:
    r = call(h, "start-run", body=None)
    assert r.status == 422 and r.code == "validation_error"


def test_unknown_workflow_is_404(h: Harness) -> None:
    r = start(h, "no-such-flow", 1)
    assert r.status == 404 and r.code == "workflow_not_found"


def test_unknown_and_malformed_run_ids(h: Harness) -> None:
    missing = call(h, "get-run", path=f"/runs/{MISSING_RUN}")
    assert missing.status == 404 and missing.code == "run_not_found"
    for bad in ("xyz", "0" * 23, "A" * 24, "0" * 25):
        r = call(h, "get-run", path=f"/runs/{bad}")
        assert r.status == 400 and r.code == "invalid_parameter", bad
        assert r.json["error"]["details"][0]["loc"] == ["path", "run_id"]


def test_body_over_the_limit_is_413(h: Harness) -> None:
    big = {"workflow": "approval", "input": "x" * MAX_BODY_BYTES}
    r = call(h, "start-run", body=big)
    assert r.status == 413 and r.code == "payload_too_large"
    run_id = start(h, "approval", 1).json["run_id"]
    assert call(h, "send-event", path=f"/runs/{run_id}/events/approve", body="é" * (MAX_BODY_BYTES // 2)).status == 413
    assert start(h, "approval", "x" * (MAX_BODY_BYTES - 1000)).status == 202  # under the limit


def test_wrong_method_is_405_unknown_route_404(h: Harness) -> None:
    r = call(h, "get-run", method="DELETE", path=f"/runs/{MISSING_RUN}")
    assert r.status == 405 and r.code == "method_not_allowed" and r.headers["Allow"] == "GET"
    r = call(h, "list-runs", method="PUT", path="/runs", query=None)
    assert r.status == 405 and r.headers["Allow"] == "GET, POST"
    assert call(h, "get-run", method="GET", path=f"/runs/{MISSING_RUN}/cancel").status == 405
    nf = call(h, "get-run", path="/nothing/here")
    assert nf.status == 404 and nf.code == "route_not_found"


def test_wrong_content_type_is_415_and_bad_base64_is_400(h: Harness) -> None:
    r = call(h, "start-run", headers={"Content-Type": "text/plain"})
    assert r.status == 415 and r.code == "unsupported_media_type"
    event = json.loads((EVENTS / "api-start-run.json").read_text())
    event.update(body="***not base64***", isBase64Encoded=True)
    r = serve(h, event)
    assert r.status == 400 and r.code == "malformed_body"
    event.update(body=base64.b64encode(json.dumps({"workflow": "approval"}).encode()).decode())
    assert serve(h, event).status == 202


def test_internal_error_is_a_generic_500_and_logged(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(run_id: str) -> Any:
        raise RuntimeError("db password=hunter2 leaked")

    monkeypatch.setattr(h.engine.store, "get_run", boom)
    r = call(h, "get-run", path=f"/runs/{MISSING_RUN}")
    assert r.status == 500 and r.code == "internal_error"
    assert "hunter2" not in r.raw and "Traceback" not in r.raw and "RuntimeError" not in r.raw
    request_id = json.loads((EVENTS / "api-get-run.json").read_text())["requestContext"]["requestId"]
    assert request_id in r.json["error"]["message"]
    [logged] = [rec for rec in caplog.records if rec.getMessage() == "internal error"]
    record = json.loads(api_app.logger.registered_formatter.format(logged))  # what CloudWatch gets
    assert record["level"] == "ERROR" and "hunter2" in record["exception"]
    assert record["correlation_id"] == request_id and record["function_name"] == "ApiFunction"


# -------------------------------------------------------------------------------- openapi
def test_openapi_route_serves_the_checked_in_document(h: Harness) -> None:
    r = call(h, "openapi")
    assert r.status == 200 and r.json["openapi"].startswith("3.")
    checked_in = (ROOT / "openapi.json").read_text()
    assert r.raw == checked_in, "openapi.json is stale: python -m stepchain.api.app --openapi > openapi.json"
    assert json.loads(checked_in) == json.loads(openapi_json())
    paths = r.json["paths"]
    assert set(paths) == {
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/steps/{step}",
        "/runs/{run_id}/events/{name}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/redrive",
        "/runs/{run_id}/fork",
        "/runs/{run_id}/budget",
        "/runs/{run_id}/approvals",
        "/runs/{run_id}/stream",
        "/approvals",
        "/openapi.json",
    }
    assert paths["/runs"]["post"]["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunHandle"
    }


def test_openapi_cli() -> None:
    chunks: list[str] = []
    assert api_app.main(["--openapi"], out=chunks.append) == 0
    assert "".join(chunks) == openapi_json()
    assert api_app.main([], out=chunks.append) == 2


def test_every_event_sample_names_a_route_the_document_has() -> None:
    paths = json.loads(openapi_json())["paths"]
    samples = sorted(EVENTS.glob("api-*.json"))
    assert len(samples) == 9
    for f in samples:
        ev = json.loads(f.read_text())
        assert ev["requestContext"]["path"] == "/" + ev["requestContext"]["stage"] + ev["path"]
        assert ev["httpMethod"].lower() in paths[ev["resource"]], f.name


# ---------------------------------------------------------------------- models match the ledger
def test_response_models_mirror_the_ledger(h: Harness) -> None:
    node_fields = {f.name for f in dataclasses.fields(NodeView)}
    assert set(NodeViewModel.model_fields) == node_fields
    run_fields = {f.name for f in dataclasses.fields(RunView)}
    assert run_fields <= set(RunDetail.model_fields)
    run_id = start(h, "fanout", 1).json["run_id"]
    h.run()
    assert set(h.view(run_id).totals) == set(RunTotals.model_fields)


# ------------------------------------------------------ the request-decoding layer (issue 7)
def nested(depth: int, leaf: Any = 1) -> Any:
    """A JSON value ``depth`` levels deep (the top-level array is level 1)."""
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


BODY_ROUTES = [("start-run", None), ("send-event", "/events/approve"), ("redrive-run", "/redrive")]


@pytest.mark.parametrize(("sample", "suffix"), BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "application/json; =x",
        "text/plain",
        ";",
    ],
)
def test_a_body_that_is_not_json_is_415_on_every_body_route(
    h: Harness, sample: str, suffix: str | None, content_type: str
) -> None:
    run_id = start(h, "fanout", -1).json["run_id"]
    path = None if suffix is None else f"/runs/{run_id}{suffix}"
    r = call(h, sample, path=path, body={"input": 1}, headers={"Content-Type": content_type})
    assert r.status == 415 and r.code == "unsupported_media_type", r.raw


def test_json_content_types_with_parameters_are_accepted(h: Harness) -> None:
    for ct in ("application/json; charset=UTF-8", "Application/JSON", "application/vnd.api+json", None):
        r = call(h, "start-run", body={"workflow": "approval"}, headers={"Content-Type": ct, "Idempotency-Key": None})
        assert r.status == 202, (ct, r.raw)


def test_an_integer_past_pythons_digit_limit_is_422_not_500(h: Harness) -> None:
    big = "9" * 4301
    r = call(h, "start-run", raw_body='{"workflow":"approval","input":' + big + "}")
    assert r.status == 422 and r.code == "validation_error" and "4300 digits" in r.raw
    run_id = start(h, "approval", 1).json["run_id"]
    assert call(h, "send-event", path=f"/runs/{run_id}/events/approve", raw_body=big).status == 422
    assert call(h, "send-event", path=f"/runs/{run_id}/events/approve", raw_body="1e999").status == 422  # inf
    ok = call(h, "send-event", path=f"/runs/{run_id}/events/approve", raw_body="9" * 4300)
    assert ok.status == 202


def test_nesting_past_the_limit_is_refused_at_the_door(h: Harness) -> None:
    for depth in (65, 255):
        r = start(h, "approval", nested(depth - 1))  # the body object adds one level
        assert r.status == 422 and r.code == "validation_error" and "64 levels" in r.raw, depth
    r = call(h, "start-run", raw_body='{"workflow":"approval","input":' + "[" * 3000 + "]" * 3000 + "}")
    assert r.status == 422 and "64 levels" in r.raw
    run_id = start(h, "approval", 1).json["run_id"]
    r = call(h, "send-event", path=f"/runs/{run_id}/events/approve", body=nested(255))
    assert r.status == 422


def test_the_deepest_accepted_value_is_stored_and_served_back(h: Harness) -> None:
    deep = nested(MAX_DEPTH - 1)  # inside {"workflow", "input"}: exactly MAX_DEPTH levels
    run_id = start(h, "approval", deep).json["run_id"]
    h.run()
    assert call(h, "send-event", path=f"/runs/{run_id}/events/approve", body=nested(MAX_DEPTH)).status == 202
    h.run()
    run = call(h, "get-run", path=f"/runs/{run_id}")
    assert run.status == 200 and run.json["output"] == {"published": nested(MAX_DEPTH)}
    step = call(h, "get-step", path=f"/runs/{run_id}/steps/prepare")
    assert step.status == 200 and step.json["output"] == {"doc": deep}


def test_a_duplicate_key_is_422_not_last_one_wins(h: Harness) -> None:
    r = call(h, "start-run", raw_body='{"workflow":"fanout","workflow":"approval","input":1}')
    assert r.status == 422 and "duplicate key" in r.raw
    r = call(h, "start-run", raw_body='{"workflow":"approval","input":{"a":1,"a":2}}')
    assert r.status == 422


def test_a_lone_surrogate_is_422(h: Harness) -> None:
    r = call(h, "start-run", raw_body='{"workflow":"approval","input":"\\ud800"}')
    assert r.status == 422 and r.code == "validation_error"
    r = call(h, "start-run", raw_body='{"workflow":"approval","input":{"\\udfff":1}}')
    assert r.status == 422


def test_an_array_is_never_taken_for_an_object(h: Harness) -> None:
    r = call(h, "start-run", body=[{"workflow": "approval", "input": 1}], headers={"Idempotency-Key": None})
    assert r.status == 422 and r.code == "validation_error" and "expected object, got array" in r.raw
    failed = start(h, "fanout", -1).json["run_id"]
    h.run()
    r = call(h, "redrive-run", path=f"/runs/{failed}/redrive", body=[{"input": 2}])
    assert r.status == 422 and h.status(failed) == "FAILED"
    # an event payload may be any JSON: an array is delivered whole, not its first element
    run_id = start(h, "approval", 1).json["run_id"]
    h.run()
    assert call(h, "send-event", path=f"/runs/{run_id}/events/approve", body=[5, 6]).status == 202
    h.run()
    assert h.output(run_id) == {"published": [5, 6]}


def test_a_get_ignores_a_body_it_does_not_take(h: Harness) -> None:
    r = call(h, "get-run", path=f"/runs/{MISSING_RUN}", raw_body="\x00garbage", headers={"Content-Type": "multipart/x"})
    assert r.status == 404 and r.code == "run_not_found"


# --------------------------------------------------------------------------- cursors (issue 7)
def _old_style_cursor(inner: Any) -> str:
    """A cursor of the pre-signing format whose inner (store) cursor is ``inner``, forged."""
    store_cursor = base64.urlsafe_b64encode(json.dumps(inner).encode()).decode()
    doc = {"w": "fanout", "s": None, "c": store_cursor}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "inner",
    [
        ["pk", "sk"],
        "RUN#x",
        nested(200),
        {"pk": ["x"]},
        {"pk": {"S": 1}},
        {"gsi1pk": {"S": "WF#other"}, "pk": {"S": "a"}},
    ],
    ids=["list", "string", "deep", "list-value", "number-as-string", "other-workflow"],
)
def test_forged_cursors_are_400_before_dynamodb(inner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with Harness(fanout, backend="moto") as h:
        for _ in range(3):
            start(h, "fanout", 1)
        forged = _old_style_cursor(inner)
        r = call(h, "list-runs", query={"workflow": "fanout", "cursor": forged})
        assert r.status == 400 and r.code == "invalid_cursor", r.raw
        # signed with the public default key, the store still checks the key's shape itself
        store_cursor = base64.urlsafe_b64encode(json.dumps(inner).encode()).decode()
        signed = encode_cursor("fanout", None, store_cursor)
        assert signed is not None
        r = call(h, "list-runs", query={"workflow": "fanout", "cursor": signed})
        assert r.status == 400 and r.code == "invalid_cursor", r.raw


def test_cursors_are_signed_with_the_configured_key(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        start(h, "fanout", 1)
    default_signed = call(h, "list-runs", query={"workflow": "fanout", "limit": "1"}).json["next_cursor"]
    monkeypatch.setenv("STEPCHAIN_CURSOR_KEY", "s3cret")
    r = call(h, "list-runs", query={"workflow": "fanout", "cursor": default_signed})
    assert r.status == 400 and r.code == "invalid_cursor"
    page = call(h, "list-runs", query={"workflow": "fanout", "limit": "1"}).json
    nxt = call(h, "list-runs", query={"workflow": "fanout", "cursor": page["next_cursor"]})
    assert nxt.status == 200 and nxt.json["runs"][0]["run_id"] != page["runs"][0]["run_id"]
    body, mac = page["next_cursor"].split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    assert call(h, "list-runs", query={"workflow": "fanout", "cursor": tampered}).status == 400


# ------------------------------------------------------------- every status code is documented
def test_the_document_lists_every_status_each_route_can_answer() -> None:
    paths = json.loads(openapi_json())["paths"]
    start_run = paths["/runs"]["post"]["responses"]
    assert start_run["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RunHandle"}
    for path, method in [
        ("/runs", "post"),
        ("/runs/{run_id}/events/{name}", "post"),
        ("/runs/{run_id}/redrive", "post"),
    ]:
        assert {"400", "404", "409", "413", "415", "422", "500"} <= set(paths[path][method]["responses"]), path
    for path in ("/runs/{run_id}", "/runs/{run_id}/steps/{step}", "/runs"):
        assert {"200", "400", "404", "500"} <= set(paths[path]["get"]["responses"])
        assert "422" not in paths[path]["get"]["responses"]  # no body, nothing to be unprocessable


# ------------------------------------------------------------------ version draining (issue 7)
def shop(version: str) -> Workflow:
    wf = Workflow("shop", version=version)

    @wf.step()
    def basket(ctx: StepContext, n: int) -> list[int]:
        time.sleep(1)  # virtual time: without its workflow, a run's nodes are listed in creation order
        return list(range(n))

    @wf.map()
    def price(ctx: StepContext, i: int) -> int:
        time.sleep(1)
        return i + int(version)

    wf.wait_for_event("paid", timeout_s=3600)

    @wf.step()
    def ship(ctx: StepContext, payment: Any) -> Any:
        return {"shipped": payment}

    return wf


def test_runs_on_a_retired_version_are_readable_and_cancellable_and_advancing_is_409() -> None:
    v1, v2 = shop("1"), shop("2")
    with Harness(v1, backend="memory") as h:
        first, second = (start(h, "shop", 2).json["run_id"] for _ in range(2))
        h.run()
        h.engine.registry = Registry([v2])  # the new deployment (the API's engine) no longer has version 1
        run = call(h, "get-run", path=f"/runs/{first}")
        assert run.status == 200 and run.json["version"] == "1" and run.json["status"] == "WAITING"
        assert [(n["key"], n["kind"]) for n in run.json["nodes"]] == [
            ("basket", "step"),
            ("price", "map"),
            ("paid", "wait"),
        ]
        step = call(h, "get-step", path=f"/runs/{first}/steps/price")
        assert step.status == 200 and step.json["kind"] == "map" and step.json["output"] == [1, 2]
        item = call(h, "get-step", path=f"/runs/{first}/steps/price", query={"index": "1"})
        assert item.status == 200 and item.json["output"] == 2
        not_map = call(h, "get-step", path=f"/runs/{first}/steps/basket", query={"index": "0"})
        assert not_map.status == 404
        assert call(h, "get-step", path=f"/runs/{first}/steps/ship").status == 404  # not started
        listed = call(h, "list-runs", query={"workflow": "shop"})
        assert listed.status == 200 and {r["run_id"] for r in listed.json["runs"]} == {first, second}
        # advancing it cannot work here: the run fails, naming the version, and the call is 409
        ev = call(h, "send-event", path=f"/runs/{first}/events/paid", body={"ok": True})
        assert ev.status == 409 and ev.code == "version_not_registered" and "'1'" in ev.json["error"]["message"]
        failed = call(h, "get-run", path=f"/runs/{first}").json
        assert failed["status"] == "FAILED" and failed["error"]["type"] == "VersionNotRegistered"
        assert "version '1'" in failed["error"]["message"]
        redrive = call(h, "redrive-run", path=f"/runs/{first}/redrive", body=None)
        assert redrive.status == 409 and redrive.code == "version_not_registered"
        cancel = call(h, "cancel-run", path=f"/runs/{second}/cancel")
        assert cancel.status == 200 and cancel.json["status"] == "CANCELLED"


def test_listing_a_workflow_removed_altogether_still_shows_its_runs() -> None:
    with Harness(shop("1"), approval, backend="memory") as h:
        run_id = start(h, "shop", 1).json["run_id"]
        h.engine.registry = Registry([approval])
        listed = call(h, "list-runs", query={"workflow": "shop"})
        assert listed.status == 200 and [r["run_id"] for r in listed.json["runs"]] == [run_id]
        assert call(h, "get-run", path=f"/runs/{run_id}").status == 200
        assert call(h, "list-runs", query={"workflow": "nope"}).code == "workflow_not_found"


deep_out = Workflow("deep-out")


@deep_out.step()
def dig(ctx: StepContext, n: int) -> Any:
    return nested(n)


def test_a_step_output_too_deep_to_serve_is_omitted_not_500() -> None:
    with Harness(deep_out, backend="memory") as dh:
        shallow, deep = start(dh, "deep-out", 150).json["run_id"], start(dh, "deep-out", 260).json["run_id"]
        dh.run()
        ok = call(dh, "get-run", path=f"/runs/{shallow}")
        assert ok.status == 200 and ok.json["output"] == nested(150) and ok.json["output_omitted"] is None
        for path in (f"/runs/{deep}", f"/runs/{deep}/steps/dig"):
            r = call(dh, "get-run", path=path)
            assert r.status == 200 and r.json["has_output"] is True and r.json["output"] is None, r.raw[:200]
            assert "200 levels" in r.json["output_omitted"] and r.json["output_bytes"] > 0
        assert dh.output(deep) == nested(260)  # the library reads it


def test_run_view_shows_what_durability_cost_beside_llm_and_lambda_cost() -> None:
    """Issue 10.5: GET /runs/{id} carries the AWS requests the run made and their price."""
    with Harness(fanout, backend="moto") as h:
        run_id = start(h, "fanout", 3).json["run_id"]
        h.run()
        view = call(h, "get-run", path=f"/runs/{run_id}").json
    totals = view["totals"]
    assert totals["requests"]["ddb_write"] > 0 and totals["requests"]["ddb_read"] > 0
    assert totals["orchestration_usd"] > 0 and set(totals["orchestration_by_service"]) == {"dynamodb"}
    assert totals["prices"].startswith("us-east-1")
    assert sum(n["requests"].get("ddb_write", 0) for n in view["nodes"]) > 0
    assert all("orchestration_usd" in n for n in view["nodes"])
