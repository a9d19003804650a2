"""Lambda runtime executor ``stepchain-host``: each execution environment is a host subprocess.

Select with ``LAMBDA_RUNTIME_EXECUTOR=stepchain-host``. Python runtimes only (``pythonX.Y`` runs on the
matching host interpreter). The process speaks the standard Lambda Runtime API (``bootstrap.py``) to a
``RuntimeApiServer`` on 127.0.0.1 owned by this executor; the executor enforces the function Timeout by
killing the process group and answering ``Task timed out after N.00 seconds``; the next invoke re-inits.

Settings (environment of the LocalStack process):
- ``STEPCHAIN_LAMBDA_PYTHON<MAJ><MIN>`` (e.g. ``..._PYTHON312``): interpreter path; default: pyenv's
  ``$PYENV_ROOT/versions/3.12*/bin/python3.12``, then ``python3.12`` on PATH.
- ``STEPCHAIN_LAMBDA_SITE_DIR``: dir holding ``python3.12/`` etc. with runtime-provided packages (boto3).
- ``STEPCHAIN_LAMBDA_PID_DIR``: where each runtime process writes ``<pid>.pid`` (used by ``localstack_ctl``).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from localstack import config
from localstack.services.lambda_.invocation.executor_endpoint import StatusErrorException
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

from stepchain_localstack.runtime_api import PendingInvocation, RuntimeApiServer, now_ms

BOOTSTRAP = str(Path(__file__).with_name("bootstrap.py"))
END_MARK = "\x1estepchain-end "
STARTUP_TIMEOUT_S = 30.0


def find_interpreter(runtime: str) -> str:
    version = runtime.removeprefix("python")
    if override := os.environ.get(f"STEPCHAIN_LAMBDA_PYTHON{version.replace('.', '')}"):
        return override
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"))
    on_path = shutil.which(f"python{version}")
    if found:
        return found[-1]
    if on_path and "/shims/" not in on_path:
        return on_path
    raise LambdaRuntimeException(f"no host interpreter for runtime {runtime} (set STEPCHAIN_LAMBDA_PYTHON...)")


class HostRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self._env: dict[str, str] = {}
        self._api: RuntimeApiServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._logs: collections.deque[str] = collections.deque(maxlen=5000)
        self._invocation_logs: list[str] = []
        self._log_done = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, env_vars: dict[str, str]) -> None:
        cfg = self.function_version.config
        runtime = str(cfg.runtime)
        if cfg.code is None:  # prepare_version already refused image functions
            raise LambdaRuntimeException("stepchain-host runs zip-packaged functions only")
        code_dir = str(cfg.code.get_unzipped_code_location())
        layer_dirs = [str(layer.code.get_unzipped_code_location()) for layer in cfg.layers if layer.code]
        paths = [p for d in layer_dirs for p in (f"{d}/python/lib/{runtime}/site-packages", f"{d}/python")]
        if site := os.environ.get("STEPCHAIN_LAMBDA_SITE_DIR"):
            paths.append(os.path.join(site, runtime))  # boto3 & co., as the AWS runtime provides them
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            **{k: str(v) for k, v in env_vars.items()},
            "LAMBDA_TASK_ROOT": code_dir,
            "LAMBDA_RUNTIME_DIR": str(Path(BOOTSTRAP).parent),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
            "STEPCHAIN_LAMBDA_PATHS": os.pathsep.join(paths),
            "STEPCHAIN_LAMBDA_END_MARK": END_MARK,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for key, value in (cfg.environment or {}).items():  # the function's own variables win
            self._env[key] = str(value)
        self._spawn()

    def _spawn(self) -> None:
        cmd = [find_interpreter(str(self.function_version.config.runtime)), "-s", "-u", BOOTSTRAP]
        api = RuntimeApiServer()
        proc = subprocess.Popen(
            cmd,
            env={**self._env, "AWS_LAMBDA_RUNTIME_API": api.address},
            cwd=self._env["LAMBDA_TASK_ROOT"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: a timeout kill takes the handler's children too
        )
        self._api, self._proc = api, proc
        self._write_pid_file(proc.pid)
        threading.Thread(target=self._read_output, args=(proc,), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not api.ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
        if api.init_error is not None or not api.ready.is_set():
            payload = api.init_error or self._error("Runtime.ExitError", f"Runtime exited: {proc.poll()}")
            self._kill()
            raise StatusErrorException("Environment startup failed", payload=payload)

    def stop(self) -> None:
        self._kill()

    def _kill(self, graceful: bool = True) -> None:
        proc, api = self._proc, self._api
        if api is not None:
            api.closed.set()
        if proc is not None and proc.poll() is None:
            steps = ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)) if graceful else ((signal.SIGKILL, 5.0),)
            for sig, wait_s in steps:
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait_s)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        if proc is not None:
            self._remove_pid_file(proc.pid)
        if api is not None:
            api.close()
        self._proc = None
        self._api = None

    # -- invocation -------------------------------------------------------------------------------
    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._spawn()  # re-init after a timeout or a crash, as Lambda does
            assert self._api is not None and self._proc is not None
            request_id, timeout_s = payload["invoke-id"], int(self.function_version.config.timeout)
            self._invocation_logs, started = [], time.monotonic()
            self._log_done.clear()
            self._log(f"START RequestId: {request_id} Version: {self.function_version.id.qualifier}")
            inv = PendingInvocation(
                request_id=request_id,
                payload=payload["payload"].encode(),
                deadline_ms=now_ms() + timeout_s * 1000,
                invoked_arn=payload["invoked-function-arn"],
                trace_id=payload.get("trace-id", ""),
            )
            self._api.submit(inv)
            body, is_error = self._await(inv, self._proc, started + timeout_s)
            if body is None:
                message = f"Task timed out after {timeout_s:.2f} seconds"
                self._log(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request_id} {message}")
                self._kill(graceful=False)
                body = self._error("Sandbox.Timedout", f"RequestId: {request_id} Error: {message}")
            duration_ms = (time.monotonic() - started) * 1000
            self._log(f"END RequestId: {request_id}")
            self._log(
                f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
                f"Memory Size: {self.function_version.config.memory_size} MB"
            )
            logs = "\n".join(self._invocation_logs) + "\n"
            return InvocationResult(request_id=request_id, payload=body, is_error=is_error, logs=logs)

    def _await(
        self, inv: PendingInvocation, proc: subprocess.Popen[bytes], deadline: float
    ) -> tuple[bytes | None, bool]:
        """Wait for the outcome; (None, True) on timeout; an exit error if the process dies first."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                outcome = inv.result.result(timeout=min(left, 0.1))
                self._log_done.wait(2.0)  # the process marks the end of its output for this request
                return outcome
            except TimeoutError:
                if proc.poll() is not None and not inv.result.done():
                    self._log_done.wait(0.5)  # set by the output reader at EOF
                    message = f"Runtime exited with error: exit status {proc.returncode}"
                    return self._error("Runtime.ExitError", f"RequestId: {inv.request_id} Error: {message}"), True
        return inv.result.result() if inv.result.done() else (None, True)

    @staticmethod
    def _error(error_type: str, message: str) -> bytes:
        return json.dumps({"errorType": error_type, "errorMessage": message}).encode()

    # -- logs and pid files -----------------------------------------------------------------------
    def _log(self, line: str) -> None:
        self._logs.append(line)
        self._invocation_logs.append(line)

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(END_MARK):
                self._log_done.set()
            else:
                self._log(line)
        self._log_done.set()  # EOF: the process is gone, nothing more will come

    def _pid_file(self, pid: int) -> Path | None:
        pid_dir = os.environ.get("STEPCHAIN_LAMBDA_PID_DIR")
        return Path(pid_dir, f"{pid}.pid") if pid_dir else None

    def _write_pid_file(self, pid: int) -> None:
        if path := self._pid_file(pid):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{pid}\n")

    def _remove_pid_file(self, pid: int) -> None:
        if path := self._pid_file(pid):
            path.unlink(missing_ok=True)

    # -- addressing and preparation ---------------------------------------------------------------
    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        return f"http://127.0.0.1:{config.GATEWAY_LISTEN[0].port}/_localstack_lambda/{self.id}"

    def get_logs(self) -> str:
        return "\n".join(self._logs)

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        cfg = function_version.config
        if not cfg.runtime or not str(cfg.runtime).startswith("python") or not cfg.code:
            raise LambdaRuntimeException("stepchain-host runs zip-packaged python runtimes only")
        find_interpreter(str(cfg.runtime))
        cfg.code.prepare_for_execution()
        for layer in cfg.layers:
            if layer.code:
                layer.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "stepchain-host"

    def load(self, *args: object, **kwargs: object) -> type[RuntimeExecutor]:
        return HostRuntimeExecutor
