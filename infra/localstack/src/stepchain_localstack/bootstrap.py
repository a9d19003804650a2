"""Python Lambda runtime for host processes: a Lambda Runtime API client loop (stdlib only).

Started by ``host_executor`` with the function's interpreter (e.g. python3.12) and env:
AWS_LAMBDA_RUNTIME_API (host:port), _HANDLER, LAMBDA_TASK_ROOT, STEPCHAIN_LAMBDA_PATHS (extra sys.path
entries: layer dirs and runtime-provided packages such as boto3). Mirrors the behaviour of the AWS python
runtime: import the handler once (init), then loop on /invocation/next, post /response or /error.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

BASE = "/2018-06-01/runtime"
END_MARK = os.environ.get("STEPCHAIN_LAMBDA_END_MARK", "\x1estepchain-end ")


class LambdaContext:
    """The subset of the Lambda context object that handlers use."""

    def __init__(self, request_id: str, arn: str, deadline_ms: int) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _error(exc: BaseException, error_type: str | None = None, message: str | None = None) -> dict[str, Any]:
    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb  # drop this runtime's own frame
    return {
        "errorMessage": message if message is not None else str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_tb(tb),
    }


def _setup_sys_path() -> None:
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # never let the function import this package's own modules
    extra = [os.environ["LAMBDA_TASK_ROOT"], *os.environ.get("STEPCHAIN_LAMBDA_PATHS", "").split(os.pathsep)]
    sys.path[:0] = [p for p in extra if p and os.path.isdir(p)]


def _load_handler() -> Any:
    spec = os.environ["_HANDLER"]
    module_name, _, func_name = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as exc:
        raise _InitError(
            _error(exc, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
        ) from exc
    handler = getattr(module, func_name, None)
    if handler is None:
        message = f"Handler '{func_name}' missing on module '{module_name}'"
        raise _InitError({"errorMessage": message, "errorType": "Runtime.HandlerNotFound", "stackTrace": []})
    return handler


class _InitError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["errorMessage"])
        self.body = body


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request(method, BASE + path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response, response.read()


def main() -> int:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
    conn = http.client.HTTPConnection(host, int(port))
    _setup_sys_path()
    try:
        handler = _load_handler()
    except _InitError as err:
        print(f"[ERROR] {err.body['errorType']}: {err.body['errorMessage']}", file=sys.stderr, flush=True)
        _request(conn, "POST", "/init/error", json.dumps(err.body).encode())
        return 1
    while True:
        response, payload = _request(conn, "GET", "/invocation/next")
        if response.status != 200:
            return 0  # the executor is shutting this environment down
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id", "")
        deadline = int(response.getheader("Lambda-Runtime-Deadline-Ms", "0"))
        arn = response.getheader("Lambda-Runtime-Invoked-Function-Arn", "")
        os.environ["_X_AMZN_TRACE_ID"] = response.getheader("Lambda-Runtime-Trace-Id", "")
        try:
            result = handler(json.loads(payload or b"null"), LambdaContext(request_id, arn, deadline))
            outcome, body = "response", json.dumps(result).encode()
        except Exception as exc:
            print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc()
            outcome, body = "error", json.dumps(_error(exc)).encode()
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, f"{END_MARK}{request_id}\n".encode())  # marks the end of this invocation's logs
        _request(conn, "POST", f"/invocation/{request_id}/{outcome}", body)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, http.client.HTTPException):
        sys.exit(0)  # runtime API gone: the environment was stopped
