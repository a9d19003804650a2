"""A per-environment Lambda Runtime API server (what the runtime interface emulator serves in a container).

Binds 127.0.0.1 on a free port inside the LocalStack process. The host runtime process long-polls
``GET /2018-06-01/runtime/invocation/next`` and posts ``/response``, ``/error`` or ``/init/error``.
"""

from __future__ import annotations

import dataclasses
import queue
import socket
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


@dataclasses.dataclass
class PendingInvocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    invoked_arn: str
    trace_id: str
    result: Future[tuple[bytes, bool]] = dataclasses.field(default_factory=Future)  # (body, is_error)


class RuntimeApiServer:
    """Hands one invocation at a time to the runtime and collects its outcome."""

    def __init__(self) -> None:
        self.ready = threading.Event()  # set on the first /next (init done) or on /init/error
        self.init_error: bytes | None = None
        self.closed = threading.Event()
        self._queue: queue.Queue[PendingInvocation] = queue.Queue()
        self._current: PendingInvocation | None = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="lambda-runtime-api", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def submit(self, invocation: PendingInvocation) -> None:
        self._current = invocation
        self._queue.put(invocation)

    def next_invocation(self) -> PendingInvocation | None:
        self.ready.set()
        while not self.closed.is_set():  # bounded by close(): polls the flag every 0.5 s
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
        return None

    def complete(self, request_id: str, body: bytes, is_error: bool) -> bool:
        current = self._current
        if current is None or current.request_id != request_id or current.result.done():
            return False
        current.result.set_result((body, is_error))
        return True

    def close(self) -> None:
        self.closed.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler_for(api: RuntimeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()  # headers and body go out in two writes: avoid Nagle + delayed-ACK stalls
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            try:
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the runtime process was killed (timeout, stop) while we answered
                self.close_connection = True

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                return self._reply(404)
            inv = api.next_invocation()
            if inv is None:
                return self._reply(410, b'{"errorType":"EnvironmentStopped"}')
            headers = {
                "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": inv.invoked_arn,
                "Lambda-Runtime-Trace-Id": inv.trace_id,
                "Content-Type": "application/json",
            }
            self._reply(200, inv.payload, headers)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path[len(PREFIX) :].strip("/").split("/")
            if parts == ["init", "error"]:
                api.init_error = body
                api.ready.set()
                return self._reply(202)
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                accepted = api.complete(parts[1], body, is_error=parts[2] == "error")
                return self._reply(202 if accepted else 400)
            self._reply(404)

    return Handler


def now_ms() -> int:
    return int(time.time() * 1000)
