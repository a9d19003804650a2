"""The live view's web server: the page (package data ``static/``) and a proxy to a runs API.

Stdlib only (``http.server.ThreadingHTTPServer``), bound to 127.0.0.1. Routes::

    GET  /                  the page (``?run=<id>``: that run; otherwise the runs list)
    GET  /static/<file>     the page's script and style sheet
    GET  /config.json       what the page needs to know: the data source's label, the poll interval, the
                            stream's long-poll (``stream_wait_s``: 0 where the backend serves one request
                            at a time, the in-process API handler)
    GET|POST /api/<path>    forwarded to the backend as ``<path>`` (only /runs..., /approvals/..., /openapi.json)

A steering POST must carry ``X-Stepchain-UI: 1``: a custom header a cross-site form cannot send (the
browser would ask a CORS preflight this server never grants), so another web page open in the same
browser cannot approve or cancel runs through it. A ``Host`` other than the loopback one is refused
(DNS rebinding).
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from stepchain.ui.backends import ALLOWED_PREFIXES, Backend, UiError

__all__ = ["STATIC_FILES", "UiServer"]

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
MAX_BODY = 256 * 1024
HOST = "127.0.0.1"


def _static(name: str) -> bytes:
    return resources.files("stepchain.ui").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # HTTP/1.0: one request per connection, so no handler thread outlives stop()

    def log_message(self, format: str, *args: Any) -> None:  # no line per request
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, json.dumps({"error": {"code": code, "message": message}}).encode())

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in (HOST, "localhost")

    def do_GET(self) -> None:
        if not self._host_ok():
            return self._error(403, "forbidden_host", "this server answers on 127.0.0.1 only")
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, _static("index.html"), "text/html; charset=utf-8")
        if path.startswith("/static/") and path[len("/static/") :] in STATIC_FILES:
            name = path[len("/static/") :]
            return self._send(200, _static(name), STATIC_FILES[name] + "; charset=utf-8")
        if path == "/config.json":
            wait_s = getattr(self.server.backend, "stream_wait_s", 0)  # 0: the backend cannot hold a request
            cfg = {"source": self.server.backend.label, "poll_ms": self.server.poll_ms, "stream": True}
            cfg["stream_wait_s"] = wait_s
            return self._send(200, json.dumps(cfg).encode())
        if path.startswith("/api/"):
            return self._proxy("GET", None)
        return self._error(404, "not_found", f"no page {path}")

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._error(403, "forbidden_host", "this server answers on 127.0.0.1 only")
        if not self.path.startswith("/api/"):
            return self._error(404, "not_found", f"no route POST {self.path}")
        if self.headers.get("X-Stepchain-UI") != "1":
            return self._error(403, "missing_header", "steering requests must carry X-Stepchain-UI: 1")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._error(413, "body_too_large", f"body over {MAX_BODY} bytes")
        self._proxy("POST", self.rfile.read(length) if length else None)

    def _proxy(self, method: str, body: bytes | None) -> None:
        target = self.path[len("/api") :]
        if not target.startswith(ALLOWED_PREFIXES):
            return self._error(404, "not_found", f"the live view does not proxy {target.split('?', 1)[0]}")
        try:
            reply = self.server.backend.request(method, target, body)
        except UiError as exc:
            return self._error(HTTPStatus.BAD_GATEWAY, "source_unreachable", str(exc))
        self._send(reply.status, reply.body, reply.content_type)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, backend: Backend, poll_ms: int) -> None:
        super().__init__((HOST, port), _Handler)
        self.backend = backend
        self.poll_ms = poll_ms

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that went away mid-answer (closed tab, reload) is no error worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class UiServer:
    """The live view's server in a background thread: ``with UiServer(backend) as ui: print(ui.url)``.

    ``port`` 0 picks a free one. :meth:`stop` (or leaving the ``with``) shuts it down."""

    def __init__(self, backend: Backend, port: int = 0, poll_ms: int = 1000) -> None:
        self.backend = backend
        self._server = _Server(port, backend, poll_ms)
        self.port = int(self._server.server_address[1])
        self.url = f"http://{HOST}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="stepchain-ui", daemon=True)

    def start(self) -> UiServer:
        self._thread.start()
        return self

    def run_url(self, run_id: str) -> str:
        return f"{self.url}?run={run_id}"

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``stepchain ui``)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> UiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
