"""Property-based test of the runs API against its own ``openapi.json`` (Schemathesis).

Schemathesis generates requests from the checked-in document, valid ones and invalid ones, and
sends them through a small WSGI adapter that turns each into the API Gateway REST proxy event
API Gateway would send (as ``events/api-*.json``) and serves it with ``handle_api_event`` on an
engine over moto (DynamoDB, S3). Every response must pass every Schemathesis check: no 5xx, every
status code and body documented, invalid data rejected with a 4xx, valid data not refused.

Generated run ids, step names and event names are mostly swapped (deterministically) for ones
that exist, so the requests reach runs in every state, including runs the fuzzer started itself
with whatever input it generated. The number of requests is bounded and printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from tests.lambda_context import ApiLambdaContext

from stepchain import StepContext, TerminalError, Workflow
from stepchain.api import handle_api_event
from stepchain.api.models import EVENT_PATTERN, STEP_PATTERN, WORKFLOW_PATTERN
from stepchain.api.tokens import TOKEN_PATTERN, mint_token
from stepchain.testing import Harness

ROOT = Path(__file__).resolve().parents[2]
#: generated examples per operation in the fuzzing phase (10 operations; the coverage phase adds its
#: own deterministic cases). STEPCHAIN_FUZZ_EXAMPLES / STEPCHAIN_FUZZ_SEED run a longer or another search.
EXAMPLES = int(os.environ.get("STEPCHAIN_FUZZ_EXAMPLES", "100"))
SEED = int(os.environ.get("STEPCHAIN_FUZZ_SEED", "20261130"))

flow = Workflow("flow")


@flow.step()
def prepare(ctx: StepContext, doc: Any) -> list[Any]:
    if doc == "fail":
        raise TerminalError("asked to fail")
    return [doc, doc]


@flow.map()
def each_item(ctx: StepContext, item: Any) -> dict[str, Any]:
    return {"item": item}


flow.wait_for_event("approve", timeout_s=3600)


@flow.step()
def publish(ctx: StepContext, decision: Any) -> dict[str, Any]:
    return {"published": decision}


STEPS = ("prepare", "each_item", "approve", "publish")
RUN_ID = re.compile(r"^/runs/([0-9a-f]{24})(?=/|$)")



def _pick(value: str, options: list[str]) -> str:
    """Deterministically replace ``value`` by one of ``options`` three times out of four."""
    h = int(hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest(), 16)
    return options[h % len(options)] if options and h % 4 else value


class ApiGatewayAdapter:
    """A WSGI app that forwards each request as an API Gateway REST proxy event to the handler."""

    def __init__(self, h: Harness, runs: Iterable[str], tokens: Iterable[str] = ()) -> None:
        self.h = h
        self.runs = list(runs)
        self.tokens = list(tokens)
        self.statuses: Counter[int] = Counter()
        self.n = 0

    def _path(self, path: str) -> str:
        m = RUN_ID.match(path)
        if m:
            path = f"/runs/{_pick(m.group(1), self.runs)}{path[m.end() :]}"
        parts = path.split("/")  # a valid name is swapped for another valid one, never an invalid one
        if len(parts) == 5 and parts[3] == "steps" and re.match(STEP_PATTERN, parts[4]):
            parts[4] = _pick(parts[4], list(STEPS))
        if len(parts) == 5 and parts[3] == "events" and re.match(EVENT_PATTERN, parts[4]):
            parts[4] = _pick(parts[4], ["approve"])
        return "/".join(parts)

    @staticmethod
    def _body(path: str, raw: bytes) -> bytes:
        """POST /runs: a valid workflow name is mostly swapped for the one that exists (and
        POST /runs/{id}/approvals: a valid event name for the one the workflow waits for)."""
        if path != "/runs" and not path.endswith("/approvals"):
            return raw
        try:
            doc = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(doc, dict) and isinstance(doc.get("event"), str) and re.match(EVENT_PATTERN, doc["event"]):
            doc["event"] = _pick(doc["event"], ["approve"])
            return json.dumps(doc).encode()
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("workflow"), str)
            and re.match(WORKFLOW_PATTERN, doc["workflow"])
        ):
            doc["workflow"] = _pick(doc["workflow"], ["flow"])
            return json.dumps(doc).encode()
        return raw

    def event(self, environ: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        method = environ["REQUEST_METHOD"]
        path = self._path(environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace"))
        headers: dict[str, list[str]] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                name = key.replace("_", "-").title()
            else:
                continue
            if name == "Approval-Token" and re.match(TOKEN_PATTERN, value):
                value = _pick(value, self.tokens)  # mostly a token this API minted (usable once)
            headers.setdefault(name, []).append(value)
        query: dict[str, list[str]] = {}
        for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            query.setdefault(k, []).append(v)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = self._body(path, environ["wsgi.input"].read(length) if length else b"")
        try:
            body: str | None = raw.decode("utf-8") if raw else None
            b64 = False
        except UnicodeDecodeError:  # API Gateway passes a binary body base64-encoded
            body, b64 = base64.b64encode(raw).decode(), True
        return {
            "resource": path,
            "path": path,
            "httpMethod": method,
            "headers": {k: v[-1] for k, v in headers.items()} or None,
            "multiValueHeaders": headers or None,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "path": "/v1" + path,
                "stage": "v1",
                "httpMethod": method,
                "requestId": f"fuzz-{self.n:06d}",
                "resourcePath": path,
                "accountId": "123456789012",
                "identity": {"sourceIp": "203.0.113.10"},
            },
            "body": body,
            "isBase64Encoded": b64,
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        event = self.event(environ)
        out = handle_api_event(self.h.engine, event, ApiLambdaContext(aws_request_id="lambda-req-fuzz"))
        status = int(out["statusCode"])
        self.statuses[status] += 1
        if event["httpMethod"] == "POST" and status < 300:
            started = RUN_ID.match(event["path"]) is None
            if started:
                self.runs.append(json.loads(out["body"])["run_id"])
            self.h.run(max_activations=200)  # move runs on, so later requests see every state
        headers = [(k, v) for k, vs in (out.get("multiValueHeaders") or {}).items() for v in vs]
        headers += list((out.get("headers") or {}).items())
        data = base64.b64decode(out["body"]) if out.get("isBase64Encoded") else str(out["body"]).encode()
        start_response(f"{status} X", headers)
        return [data]


#: the document under test is the checked-in file (test_api.py checks it is what the code generates)
CONFIG = SchemathesisConfig.from_str(
    f"""
seed = {SEED}

[generation]
mode = "all"
max-examples = {EXAMPLES}

[phases.coverage]
enabled = true

# ?cursor= is opaque: only a cursor this API issued (signed) is accepted, so a made-up one that fits
# the schema is a client error (400 invalid_cursor), the one refusal of schema-valid data we expect.
[[operations]]
include-operation-id = "listRuns"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

# An approval token (a header) that this API did not sign is a 403 (400 when it is not token-shaped:
# the document states the pattern in words only, since the route takes it as a secret); a used one 409.
[[operations]]
include-operation-id = "approve"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "404", "409", "410"]

# Minting for a finished run is a 409 (the run takes no events), for another event name a 404.
[[operations]]
include-operation-id = "mintApproval"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409"]
"""
)
schema = schemathesis.openapi.from_path(ROOT / "openapi.json", config=CONFIG)
TOTAL: Counter[str] = Counter()


@pytest.fixture(scope="module")
def adapter(request: pytest.FixtureRequest) -> Iterator[ApiGatewayAdapter]:
    # module-scoped: before tests/conftest.py's per-test local mode, so set it here (the API's explicit local
    # mode: no caller identity in these events, and the public signing keys)
    with pytest.MonkeyPatch.context() as env, Harness(flow, backend="moto") as h:
        env.setenv("STEPCHAIN_OWNERSHIP", "local")
        waiting = h.start("flow", {"doc": 1})
        done = h.start("flow", "x")
        failed = h.start("flow", "fail")
        cancelled = h.start("flow", [])
        h.run()
        h.send_event(done, "approve", {"ok": True})
        h.engine.cancel(cancelled)
        h.run()
        assert [h.status(r) for r in (waiting, done, failed, cancelled)] == [
            "WAITING",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
        ]
        t0 = time.monotonic()
        far = h.engine.clock.now_ms() + 86_400_000
        tokens = [mint_token(r, "approve", far)[0] for r in (waiting, waiting, done)]
        api = ApiGatewayAdapter(h, [waiting, done, failed, cancelled], tokens)
        yield api
        line = (
            f"schemathesis: {sum(TOTAL.values())} generated cases over {len(TOTAL)} operations, "
            f"{api.n} requests, statuses {dict(sorted(api.statuses.items()))}, {time.monotonic() - t0:.1f} s"
        )
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\n" + line)
        assert not [s for s in api.statuses if s >= 500], line


def all_checks() -> list[Any]:
    load_all_checks()
    return [c for c in CHECKS.get_all() if not isinstance(c, type)]


CHECKS_ALL = all_checks()


def test_every_check_is_on() -> None:
    names = {c.__name__ for c in CHECKS_ALL}
    assert {"not_a_server_error", "response_schema_conformance", "status_code_conformance"} <= names
    assert {"negative_data_rejection", "positive_data_acceptance", "unsupported_method"} <= names
    assert len([r for r in schema.get_all_operations()]) == 12  # incl. the stream and the budget routes


@schema.parametrize()
@settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_conforms_to_its_openapi_document(case: schemathesis.Case, adapter: ApiGatewayAdapter) -> None:
    TOTAL[case.operation.label] += 1
    case.call_and_validate(app=adapter, checks=CHECKS_ALL)
