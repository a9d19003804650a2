"""Helpers for e2e tests against a deployed stepchain stack: build + deploy once, call the runs API, poll.

The stacks are deployed with ``tools.deploy_local`` (the code behind ``make deploy-local``). The API client
signs every request with SigV4 (botocore's ``SigV4Auth``, service ``execute-api``, dummy credentials) when
the stack uses ``ApiAuth=iam``, and sends ``x-api-key`` with ``ApiAuth=apikey``: LocalStack enforces neither
by default, but the same client works against API Gateway on AWS. Every poll loop is bounded in time and in
number of calls, and every request goes to 127.0.0.1 (checked), unless ``STEPCHAIN_LOCALSTACK_ENDPOINT``
points somewhere else on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from tests.e2e.localstack_fixture import ENDPOINT_ENV, aws_client

REPO = Path(__file__).resolve().parents[2]
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WORKFLOW = "research-agent"
_build_lock = threading.Lock()
_built = False


def until(probe: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.5, what: str = "condition") -> Any:
    """Call ``probe`` until it returns something truthy; bounded in time and in calls."""
    deadline = time.monotonic() + timeout_s
    max_calls = int(timeout_s / interval_s) + 2
    last: Any = None
    for _ in range(max_calls):
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    raise AssertionError(f"{what} not reached within {timeout_s:.0f}s (last: {str(last)[:1500]})")


def check_local(url: str) -> None:
    if os.environ.get(ENDPOINT_ENV):
        return  # an endpoint chosen on purpose (e.g. stock LocalStack elsewhere)
    host = urlsplit(url).hostname
    assert host in LOCAL_HOSTS, f"e2e tests only talk to 127.0.0.1, not {host!r} ({url})"


def build_once() -> float:
    """``make build`` (sam build, no container) once per session; returns the seconds it took (0 if done)."""
    global _built
    with _build_lock:
        if _built:
            return 0.0
        t0 = time.monotonic()
        proc = subprocess.run(
            ["make", "-s", "--no-print-directory", "build"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"make build failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        _built = True
        return time.monotonic() - t0


class Api:
    """The runs API through API Gateway (LocalStack's execute-api URL)."""

    def __init__(self, base_url: str, auth: str, api_key: str | None = None, region: str = REGION) -> None:
        check_local(base_url)
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.api_key = api_key
        self.region = region
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy: 127.0.0.1 only

    def _headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        if self.auth == "apikey":
            assert self.api_key, "ApiAuth=apikey but no key value in the stack outputs"
            headers["x-api-key"] = self.api_key
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(Credentials("test", "test"), "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = f"{self.base_url}/{path.lstrip('/')}"
        check_local(url)
        data = None if body is None else json.dumps(body).encode()
        signed = {**self._headers(method, url, data), **(headers or {})}  # extra headers are not signed
        return self.session.request(method, url, data=data, headers=signed, timeout=timeout_s)

    def json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: Sequence[int] = (200,),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        resp = self.call(method, path, body, headers=headers)
        assert resp.status_code in expect, f"{method} {path}: {resp.status_code} {resp.text[:2000]}"
        return resp.json()

    # -- the routes the tests use
    def start(self, question: str, max_sources: int, **extra: Any) -> str:
        doc = self.json(
            "POST",
            "/runs",
            {"workflow": WORKFLOW, "input": {"question": question, "max_sources": max_sources, **extra}},
            expect=(202,),
        )
        return str(doc["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/runs/{run_id}"))

    def step(self, run_id: str, step: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/runs/{run_id}/steps/{step}"))

    def event(self, run_id: str, name: str, payload: Any, *, iteration: int | None = None) -> dict[str, Any]:
        """Deliver event ``name`` (for loop iteration ``iteration``: the run detail's ``waiting_for``)."""
        query = "" if iteration is None else f"?iteration={iteration}"
        return dict(self.json("POST", f"/runs/{run_id}/events/{name}{query}", payload, expect=(202,)))

    def redrive(self, run_id: str, body: Any) -> dict[str, Any]:
        return dict(self.json("POST", f"/runs/{run_id}/redrive", body, expect=(202,)))

    def wait_status(
        self, run_id: str, statuses: Sequence[str], *, timeout_s: float = 120.0, interval_s: float = 0.5
    ) -> dict[str, Any]:
        """Poll GET /runs/{id} until its status is one of ``statuses``; a finished run in another state fails."""
        finished = {"SUCCEEDED", "FAILED", "CANCELLED"}
        seen: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            doc = self.run(run_id)
            seen["doc"] = doc
            if doc["status"] in statuses:
                return doc
            if doc["status"] in finished:
                raise AssertionError(f"run {run_id} ended {doc['status']} (wanted {statuses}): {_brief(doc)}")
            return None

        try:
            return dict(until(probe, timeout_s=timeout_s, interval_s=interval_s, what=f"run {run_id} {statuses}"))
        except AssertionError as exc:
            if "not reached" in str(exc) and "doc" in seen:
                raise AssertionError(f"run {run_id} still {seen['doc']['status']}: {_brief(seen['doc'])}") from None
            raise


def _brief(doc: Mapping[str, Any]) -> str:
    """A compact summary of a RunDetail for assertion messages."""
    nodes = [
        f"{n['key']}:{n['status']} inv={n['invocations']} crash={n['crashes']} hits={n['checkpoint_hits']}"
        for n in doc.get("nodes", [])
    ]
    return json.dumps({"status": doc.get("status"), "error": doc.get("error"), "nodes": nodes})


def node(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The top-level node ``name`` of a RunDetail."""
    for n in doc["nodes"]:
        if n["key"] == name:
            return dict(n)
    raise AssertionError(f"run has no node {name!r}: {_brief(doc)}")


@dataclass
class Stack:
    """A deployed stack: its outputs, an API client, and boto3 clients bound to the same endpoint."""

    name: str
    endpoint: str
    params: dict[str, str]
    outputs: dict[str, str]
    deploy_s: float
    functions: dict[str, str] = field(default_factory=dict)  # logical id -> function name

    @property
    def transport(self) -> str:
        return self.params.get("Transport", "stepfunctions")

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoint)

    def api(self) -> Api:
        return Api(self.outputs["ApiUrl"], self.params.get("ApiAuth", "iam"), self.outputs.get("ApiKeyValue"))

    def queue_url(self, logical_id: str) -> str:
        return self.outputs[f"{logical_id}Url"] if f"{logical_id}Url" in self.outputs else self._resource(logical_id)

    def _resource(self, logical_id: str) -> str:
        res = self.client("cloudformation").describe_stack_resource(StackName=self.name, LogicalResourceId=logical_id)
        return str(res["StackResourceDetail"]["PhysicalResourceId"])

    def function_name(self, logical_id: str) -> str:
        if logical_id not in self.functions:
            self.functions[logical_id] = self._resource(logical_id)
        return self.functions[logical_id]

    def invoke(self, logical_id: str, payload: Any) -> Any:
        """Invoke a function directly (RequestResponse) and return its decoded result."""
        resp = self.client("lambda").invoke(
            FunctionName=self.function_name(logical_id), Payload=json.dumps(payload).encode()
        )
        body = resp["Payload"].read()
        assert "FunctionError" not in resp, f"{logical_id} failed: {body[:2000]!r}"
        return json.loads(body)


def deploy_stack(endpoint: str, name: str, params: Mapping[str, str], sets: Sequence[str] = ()) -> Stack:
    from tools.deploy_local import deploy

    check_local(endpoint)
    result = deploy(name, dict(params), endpoint=endpoint, sets=sets, timeout_s=300)
    return Stack(name, endpoint, dict(params), result.outputs, result.seconds)


def deploy_stacks(endpoint: str, specs: Mapping[str, tuple[Mapping[str, str], Sequence[str]]]) -> dict[str, Stack]:
    """Deploy several stacks concurrently (CloudFormation works on them in parallel); build first."""
    build_once()
    results: dict[str, Stack] = {}
    errors: list[BaseException] = []

    def one(name: str, params: Mapping[str, str], sets: Sequence[str]) -> None:
        try:
            results[name] = deploy_stack(endpoint, name, params, sets)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n, p, s), daemon=True) for n, (p, s) in specs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=420)
    if errors:
        raise errors[0]
    missing = set(specs) - set(results)
    assert not missing, f"stacks not deployed in time: {missing}"
    return results
