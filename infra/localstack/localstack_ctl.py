#!/usr/bin/env python3
"""Start/stop a Docker-free LocalStack in host mode, bound to 127.0.0.1 and stopped by PID.

CLI:    python infra/localstack/localstack_ctl.py up|down|status [--state-dir .localstack] [--port 4566]
Python: ``handle = start(Path(".localstack"), port=0)`` (0 = a free port) ... ``stop(handle)``.

Runs ``python -m localstack.runtime.main`` from ``.venv-localstack`` (override: ``--python`` or
``LOCALSTACK_PYTHON``), never the ``localstack`` CLI (it needs an auth token). Stdlib only, Python >= 3.11.
State dir layout: localstack.pid, localstack.port, localstack.log, fs/ (FILESYSTEM_ROOT), lambda-pids/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = REPO / ".venv-localstack" / "bin" / "python"
LAMBDA_EXECUTOR = "stepchain-host"
MAIN_MODULE = "localstack.runtime.main"


@dataclasses.dataclass(frozen=True)
class Handle:
    pid: int
    port: int
    state_dir: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return marker in cmdline and state != "Z"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_localstack/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def running(state_dir: Path) -> Handle | None:
    """The handle of a LocalStack started from this state dir, if its process is still alive."""
    try:
        pid = int((state_dir / "localstack.pid").read_text())
        port = int((state_dir / "localstack.port").read_text())
    except (OSError, ValueError):
        return None
    return Handle(pid, port, state_dir) if _alive(pid, MAIN_MODULE) else None


def environment(state_dir: Path, port: int, python: Path) -> dict[str, str]:
    site_dir = python.parent.parent / "lambda-site"
    return {
        **os.environ,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_SERVER": "hypercorn",
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "OVERRIDE_IN_DOCKER": "0",
        "DNS_ADDRESS": "0",
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "SQS_ENDPOINT_STRATEGY": "path",
        "FILESYSTEM_ROOT": str(state_dir / "fs"),
        "PROVIDER_OVERRIDE_DYNAMODB": "moto",
        "LAMBDA_RUNTIME_EXECUTOR": LAMBDA_EXECUTOR,
        "STEPCHAIN_LAMBDA_PID_DIR": str(state_dir / "lambda-pids"),
        "STEPCHAIN_LAMBDA_SITE_DIR": str(site_dir),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


def start(state_dir: Path, port: int = 4566, python: Path | None = None, timeout_s: float = 60.0) -> Handle:
    """Start LocalStack (or return the one already running from ``state_dir``); wait until healthy."""
    state_dir = state_dir.resolve()
    if (existing := running(state_dir)) is not None:
        return existing
    python = python or Path(os.environ.get("LOCALSTACK_PYTHON", DEFAULT_PYTHON))
    if not python.exists():
        raise RuntimeError(f"{python} not found: run `make .venv-localstack/.installed` first")
    port = port or free_port()
    (state_dir / "fs").mkdir(parents=True, exist_ok=True)
    with open(state_dir / "localstack.log", "ab") as log:
        proc = subprocess.Popen(
            [str(python), "-m", MAIN_MODULE],
            env=environment(state_dir, port, python),
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the SIGKILL fallback takes everything with it
        )
    (state_dir / "localstack.pid").write_text(f"{proc.pid}\n")
    (state_dir / "localstack.port").write_text(f"{port}\n")
    handle = Handle(proc.pid, port, state_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _cleanup_files(state_dir)
            raise RuntimeError(f"LocalStack exited ({proc.returncode}); see {state_dir / 'localstack.log'}")
        if _healthy(port):
            return handle
        time.sleep(0.2)
    stop(handle)
    raise RuntimeError(f"LocalStack not healthy after {timeout_s:.0f}s; see {state_dir / 'localstack.log'}")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _lambda_pids(state_dir: Path) -> list[int]:
    pids = []
    for path in (state_dir / "lambda-pids").glob("*.pid"):
        pids.append(int(path.stem))
        path.unlink(missing_ok=True)
    return pids


def _cleanup_files(state_dir: Path) -> None:
    for name in ("localstack.pid", "localstack.port"):
        (state_dir / name).unlink(missing_ok=True)


def stop(handle: Handle, timeout_s: float = 15.0) -> None:
    """SIGTERM by PID, bounded wait, SIGKILL fallback; then kill any Lambda runtime process left."""
    leftovers = _descendants(handle.pid) if _alive(handle.pid, MAIN_MODULE) else []
    if leftovers or _alive(handle.pid, MAIN_MODULE):
        os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(handle.pid, MAIN_MODULE) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(handle.pid, MAIN_MODULE):
            os.killpg(handle.pid, signal.SIGKILL)
    for pid in {*leftovers, *_lambda_pids(handle.state_dir)}:
        if _alive(pid, "bootstrap.py"):  # a Lambda runtime leads its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    _cleanup_files(handle.state_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=REPO / ".localstack")
    parser.add_argument("--port", type=int, default=4566, help="0 picks a free port")
    parser.add_argument("--python", type=Path, default=None)
    args = parser.parse_args(argv)
    handle = running(args.state_dir.resolve())
    if args.command == "status":
        print(f"running: pid {handle.pid}, {handle.endpoint}" if handle else "not running")
        return 0 if handle else 3
    if args.command == "down":
        if handle is None:
            print("LocalStack is not running")
            _cleanup_files(args.state_dir.resolve())
            return 0
        stop(handle)
        print(f"stopped LocalStack (pid {handle.pid})")
        return 0
    if handle is not None:
        print(f"LocalStack already running: pid {handle.pid}, endpoint {handle.endpoint}")
        return 0
    started = time.monotonic()
    handle = start(args.state_dir, args.port, args.python)
    print(f"LocalStack up in {time.monotonic() - started:.1f}s: pid {handle.pid}, endpoint {handle.endpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
