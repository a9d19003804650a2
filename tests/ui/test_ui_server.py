"""The live view's server: the page, the API proxy (in-process and HTTP backends), its guards; and watch."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tests.ui.ui_flows import slow

from stepchain.testing import Harness
from stepchain.ui import ApiReply, EngineBackend, HttpBackend, UiServer
from stepchain.ui.backends import UiError, get_json, proxy_event
from stepchain.ui.watch import render, watch


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("UI_TEST_SLOW_S", "0")
    with Harness(slow, backend="memory") as h:
        yield h


@pytest.fixture
def ui(harness: Harness) -> Iterator[UiServer]:
    with UiServer(EngineBackend(harness.engine), port=0, poll_ms=200) as server:
        yield server


def test_serves_the_page_its_assets_and_config(ui: UiServer) -> None:
    assert ui.url.startswith("http://127.0.0.1:")
    status, ctype, body = call(ui.url)
    assert status == 200 and ctype.startswith("text/html") and b"/static/app.js" in body
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, ctype, _ = call(ui.url + "static/" + name)
        assert (status, ctype.split(";")[0]) == (200, kind)
    status, _, body = call(ui.url + "config.json")
    assert json.loads(body) == {"source": "embedded runtime", "poll_ms": 200, "stream": False}
    assert call(ui.url + "static/../server.py")[0] == 404


def test_proxies_reads_and_steering_to_the_api_handler(ui: UiServer, harness: Harness) -> None:
    run_id = harness.start("slow", {"q": 1})
    harness.run()
    status, _, body = call(f"{ui.url}api/runs/{run_id}")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "WAITING" and doc["waiting_for"]["event"] == "approval"
    assert [n["key"] for n in doc["nodes"]][:2] == ["gather", "square"]
    status, _, body = call(f"{ui.url}api/runs/{run_id}/steps/square?index=1")
    assert status == 200 and json.loads(body)["output"] == 4
    status, _, body = call(f"{ui.url}api/runs?workflow=slow")
    assert status == 200 and [r["run_id"] for r in json.loads(body)["runs"]] == [run_id]
    hdr = {"X-Stepchain-UI": "1", "Content-Type": "application/json"}
    status, _, body = call(f"{ui.url}api/runs/{run_id}/events/approval", "POST", b'{"ok": true}', hdr)
    assert status == 202, body
    harness.run()
    assert json.loads(call(f"{ui.url}api/runs/{run_id}")[2])["status"] == "SUCCEEDED"
    status, _, body = call(f"{ui.url}api/runs/{run_id}/cancel", "POST", b"", hdr)  # the API's own 409
    assert status == 409 and json.loads(body)["error"]["code"]


def test_refuses_unmarked_posts_foreign_hosts_and_other_paths(ui: UiServer, harness: Harness) -> None:
    run_id = harness.start("slow", {})
    status, _, body = call(f"{ui.url}api/runs/{run_id}/cancel", "POST", b"")  # no X-Stepchain-UI
    assert status == 403 and json.loads(body)["error"]["code"] == "missing_header"
    assert harness.status(run_id) != "CANCELLED"
    status, _, body = call(f"{ui.url}api/runs/{run_id}", headers={"Host": "evil.example:80"})
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden_host"
    status, _, body = call(f"{ui.url}api/moto-api/reset", "POST", b"", {"X-Stepchain-UI": "1"})
    assert status == 404
    status, _, body = call(f"{ui.url}api/runs/{'0' * 24}")
    assert status == 404 and json.loads(body)["error"]["code"] == "run_not_found"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, Any, bytes]] = []  # headers: case-insensitive (email.message)

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, self.headers, body))
        out = json.dumps({"error": {"code": "nope", "message": "no such run"}}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer


@pytest.fixture
def fake_api() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_backend_sends_the_api_key_or_a_sigv4_signature(
    fake_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reply = HttpBackend(fake_api + "/", api_key="k-123").request("GET", "/runs/abc?index=1")
    assert reply.status == 404 and reply.json()["error"]["code"] == "nope"
    method, path, headers, _ = _Recorder.seen[-1]
    assert (method, path, headers["x-api-key"]) == ("GET", "/v1/runs/abc?index=1", "k-123")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    HttpBackend(fake_api, sigv4_region="eu-west-1").request("POST", "/runs/abc/cancel", b"{}")
    method, path, headers, body = _Recorder.seen[-1]
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-1/execute-api/" in auth
    assert "secret" not in str(headers) and body == b"{}"
    with pytest.raises(UiError, match="404 nope: no such run"):
        get_json(HttpBackend(fake_api), "/runs/x")
    with pytest.raises(UiError, match="cannot reach"):
        HttpBackend("http://127.0.0.1:9").request("GET", "/runs")


def test_proxy_event_is_an_api_gateway_rest_event() -> None:
    ev = proxy_event("POST", "/runs/r1/events/go?iteration=2&iteration=3", b"{}")
    assert ev["path"] == "/runs/r1/events/go" and ev["httpMethod"] == "POST" and ev["body"] == "{}"
    assert ev["queryStringParameters"] == {"iteration": "3"}
    assert ev["multiValueQueryStringParameters"] == {"iteration": ["2", "3"]}
    assert ev["headers"] == {"Content-Type": "application/json"}


def test_render_shows_each_progress_items_children_and_the_wait(harness: Harness) -> None:
    run_id = harness.start("slow", {})
    harness.run()
    doc = EngineBackend(harness.engine).request("GET", f"/runs/{run_id}").json()
    doc["nodes"][0]["items_checkpointed"] = 7  # a ctx.each inside gather
    doc["children"] = [  # the node was redriven once: generation 0 failed, generation 1 runs
        {"run_id": "b" * 24, "workflow": "kid", "node": "gather", "branch": 0, "generation": 0, "status": "FAILED"},
        {"run_id": "c" * 24, "workflow": "kid", "node": "gather", "branch": 0, "generation": 1, "status": "RUNNING"},
    ]
    text = "\n".join(render(doc))
    assert f"slow {run_id}  WAITING" in text
    assert "each: 7 checkpointed" in text and "3/3 items" in text and "item 2" in text
    assert f"child run {'b' * 24} (0) kid FAILED" in text and f"child run {'c' * 24} (0) gen 1 kid RUNNING" in text
    assert "0/1 child runs" in text  # the latest generation's
    assert "waiting for event 'approval'" in text


class _Script:
    """A backend answering GET /runs/{id} with the next of a list of statuses."""

    label = "script"

    def __init__(self, doc: dict[str, Any], statuses: list[str]) -> None:
        self.doc, self.statuses = doc, statuses

    def request(self, method: str, path: str, body: bytes | None = None) -> ApiReply:
        doc = {**self.doc, "status": self.statuses.pop(0)}
        return ApiReply(200, json.dumps(doc).encode())


def test_watch_redraws_until_the_run_finishes(harness: Harness) -> None:
    run_id = harness.start("slow", {})
    harness.run()
    doc = EngineBackend(harness.engine).request("GET", f"/runs/{run_id}").json()
    out = io.StringIO()
    sleeps: list[float] = []
    code = watch(_Script(doc, ["RUNNING", "RUNNING", "SUCCEEDED"]), run_id, out=out, sleep=sleeps.append)
    assert code == 0 and sleeps == [1.0, 1.0]
    text = out.getvalue()  # not a terminal: each distinct line once
    assert text.count(f"{run_id}  RUNNING") == 1 and text.count(f"{run_id}  SUCCEEDED") == 1
    assert watch(_Script(doc, ["FAILED"]), run_id, out=io.StringIO()) == 1

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    watch(_Script(doc, ["RUNNING", "CANCELLED"]), run_id, out=tty, sleep=lambda s: None)
    assert "\x1b[" in tty.getvalue() and "F" in tty.getvalue()  # moved the cursor up to redraw
