"""The process half of ``stepchain invoke`` (stepchain.deploy.local_invoke): run one handler in a fresh interpreter,
enforce the init limit and the function's Timeout, print the result and Lambda's START/END/REPORT lines.

This file is also the child's script (``python -I -u local_invoke_run.py --child SPEC``): stdlib only.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

INIT_LIMIT_S = 10.0  # Lambda's limit for the init phase (imports) of an on-demand environment
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Function:
    """One function as the template declares it, Globals merged and intrinsics resolved."""

    name: str
    runtime: str
    handler: str
    timeout: int
    memory: int
    code_dir: Path
    paths: list[str]  # [CodeUri, layer python dirs]
    env: dict[str, str]
    region: str


def read_message(fd: int, buf: bytearray, deadline: float) -> dict[str, Any] | str | None:
    """The child's next JSON line; "timeout" if the deadline passes first; None at EOF (the child died)."""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "timeout"
        if not (chunk := os.read(fd, 65536)):
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return dict(json.loads(line))


def run(f: Function, event: Any, python: str) -> int:
    """Run the handler once in a fresh process, enforce the Timeout, print the result and Lambda's log lines."""
    rid, stream = str(uuid.uuid4()), f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
    # fmt: off
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": f.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(f.memory), "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{f.name}",
           "AWS_LAMBDA_LOG_STREAM_NAME": stream, "AWS_REGION": f.region, "AWS_DEFAULT_REGION": f.region,
           "AWS_EXECUTION_ENV": f"AWS_Lambda_{f.runtime}", "LAMBDA_TASK_ROOT": str(f.code_dir),
           "_HANDLER": f.handler, "TZ": ":UTC", "AWS_SAM_LOCAL": "true", **f.env}  # the template's values win
    # fmt: on
    print(f"START RequestId: {rid} Version: $LATEST", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as event_file:
        json.dump(event, event_file)
        event_file.flush()
        rfd, wfd = os.pipe()
        spec = {"fd": wfd, "paths": f.paths, "handler": f.handler, "event": event_file.name, "timeout": f.timeout}
        spec |= {"request_id": rid, "arn": f"arn:aws:lambda:{f.region}:{ACCOUNT}:function:{f.name}"}
        # -I: no PYTHONPATH, user site or script dir on sys.path; -u: unbuffered logs; child stdout -> our stderr
        cmd = [python, "-I", "-u", str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        proc = subprocess.Popen(cmd, env=env, cwd=f.code_dir, stdin=subprocess.DEVNULL, stdout=2,
                                pass_fds=(wfd,), start_new_session=True)  # fmt: skip
        os.close(wfd)
        buf, started = bytearray(), time.monotonic()
        init = read_message(rfd, buf, started + INIT_LIMIT_S)
        ready = isinstance(init, dict) and "init_ms" in init
        done = read_message(rfd, buf, time.monotonic() + f.timeout) if ready else init
        try:  # after the response Lambda freezes the sandbox: give lingering threads 1 s, then kill
            proc.wait(timeout=0 if done == "timeout" else 1.0)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(rfd)
    duration = (time.monotonic() - started) * 1000
    if done == "timeout":
        limit = float(f.timeout) if ready else INIT_LIMIT_S
        msg, duration = f"Task timed out after {limit:.2f} seconds", limit * 1000
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {rid} {msg}", file=sys.stderr)
        done = {"error": {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {rid} Error: {msg}"}}
    elif not isinstance(done, dict):
        msg = f"Runtime exited with error: exit status {proc.returncode}"
        done = {"error": {"errorType": "Runtime.ExitError", "errorMessage": f"RequestId: {rid} Error: {msg}"}}
    duration = float(done.get("duration_ms", duration))
    max_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    init_ms = f"\tInit Duration: {init['init_ms']:.2f} ms" if ready and isinstance(init, dict) else ""
    report = f"Duration: {duration:.2f} ms\tBilled Duration: {math.ceil(duration)} ms\tMemory Size: {f.memory} MB"
    print(f"END RequestId: {rid}", file=sys.stderr)
    print(f"REPORT RequestId: {rid}\t{report}\tMax Memory Used: {max_mb} MB{init_ms}", file=sys.stderr)
    if max_mb > f.memory:
        print(f"local_invoke: WARNING: {max_mb} MB used > MemorySize {f.memory} MB: Lambda kills it", file=sys.stderr)
    print(json.dumps(done.get("error", done.get("result"))))
    return 1 if "error" in done else 0


def child(spec: dict[str, Any]) -> int:
    """In the fresh interpreter: import the handler, call it once, report through the pipe (stdlib only)."""
    out = os.fdopen(spec["fd"], "w")

    def send(started: float, key: str, value: Any) -> int:
        out.write(json.dumps({"duration_ms": (time.perf_counter() - started) * 1000, key: value}) + "\n")
        out.flush()
        return 1 if key == "error" else 0

    def error(exc: BaseException, etype: str | None = None, message: str | None = None) -> dict[str, Any]:
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # drop this function's own frame
        traceback.print_exception(type(exc), exc, tb)
        stack = [] if etype else traceback.format_tb(tb)  # Lambda's Runtime.* errors carry no stack trace
        return {"errorMessage": message or str(exc), "errorType": etype or type(exc).__name__,
                "requestId": spec["request_id"], "stackTrace": stack}  # fmt: skip

    sys.path[:0] = spec["paths"]
    started = time.perf_counter()
    module, _, attr = spec["handler"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module), attr)
    except AttributeError as exc:
        message = f"Handler '{attr}' missing on module '{module}'"
        return send(started, "error", error(exc, "Runtime.HandlerNotFound", message))
    except Exception as exc:
        message = f"Unable to import module '{module}': {exc}"
        return send(started, "error", error(exc, "Runtime.ImportModuleError", message))
    send(started, "init_ms", (time.perf_counter() - started) * 1000)
    env, deadline = os.environ, time.monotonic() + spec["timeout"]
    context = SimpleNamespace(  # what the Lambda Python runtime passes as `context`
        function_name=env["AWS_LAMBDA_FUNCTION_NAME"], function_version="$LATEST", invoked_function_arn=spec["arn"],
        memory_limit_in_mb=int(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]), aws_request_id=spec["request_id"],
        log_group_name=env["AWS_LAMBDA_LOG_GROUP_NAME"], log_stream_name=env["AWS_LAMBDA_LOG_STREAM_NAME"],
        identity=None, client_context=None,
        get_remaining_time_in_millis=lambda: max(0, int((deadline - time.monotonic()) * 1000)),
    )  # fmt: skip
    event, started = json.loads(Path(spec["event"]).read_text()), time.perf_counter()
    try:
        result = json.loads(json.dumps(handler(event, context)))
    except Exception as exc:
        return send(started, "error", error(exc))
    return send(started, "result", result)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(child(json.loads(sys.argv[2])))
