"""`make demo MODE=localstack`: the research agent survives a killed Lambda worker, through API Gateway on LocalStack.

1. LocalStack starts without Docker on 127.0.0.1 (its own state dir, a free port); every Lambda execution
   environment is a host process. template.yaml is deployed with the Step Functions transport, SigV4 (IAM) auth,
   and a short Fetch function Timeout plus a per-page fetch latency, so the fetch step has to continue across
   invocations.
2. A run starts with a signed `POST /runs`; `GET /runs/{id}` shows its progress, a line per change.
3. While it fetches, the demo finds the host process of the Lambda execution environment running the fetch step
   (the executor's pid files + the process environment) and sends it SIGKILL: no goodbye, no cleanup.
4. Step Functions sees the task fail and retries it; the retry finds the step leased by the dead invocation, waits
   for the lease to run out, takes the step over and resumes at the next page: fetched pages are never fetched again.
5. The run waits for a human approval; the demo approves it (`POST /runs/{id}/events/approval`), the report is
   drafted and read back (`GET /runs/{id}/steps/draft`). LocalStack is stopped by PID at the end, always.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from story import print_files, print_ledger, save_run, verdict  # noqa: E402

from stepchain.observe.ledger import NodeView, RunView  # noqa: E402

QUESTION = (
    "What is the global installed capacity of grid-scale battery storage, how much do battery packs cost, "
    "and how efficient are batteries in practice?"
)
MAX_SOURCES = 8
STACK = "stepchain-demo"
PARAMS = {"Transport": "stepfunctions", "ApiAuth": "iam"}
# 10 s per fetch invocation at 1.5 s per page: about five pages fit, so the step continues in a second
# invocation; a killed invocation's lease (its remaining time + 2 s) runs out within ~12 s of its start.
FETCH_TIMEOUT_S = 10
FETCH_LATENCY_MS = 1500
KILL_AFTER_PAGES = 2
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
LOCAL_HOSTS = ("127.0.0.1", "localhost")
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def load_ctl() -> ModuleType:
    """infra/localstack/localstack_ctl.py (stdlib only), imported without putting infra/ on sys.path."""
    spec = importlib.util.spec_from_file_location("localstack_ctl", ROOT / "infra" / "localstack" / "localstack_ctl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localstack_ctl"] = module  # its dataclass needs the module registered while executing
    spec.loader.exec_module(module)
    return module


def check_local(url: str) -> None:
    if urlsplit(url).hostname not in LOCAL_HOSTS:
        raise SystemExit(f"refusing to talk to {url}: the demo only talks to 127.0.0.1")


class Api:
    """The runs API through API Gateway, every request SigV4-signed (service execute-api, dummy credentials)."""

    def __init__(self, base_url: str) -> None:
        check_local(base_url)
        self.base_url = base_url.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        self.calls = 0

    def call(
        self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200,), **headers: str
    ) -> Any:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.base_url}/{path.lstrip('/')}"
        check_local(url)
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"accept": "application/json", **headers}
        if data is not None:
            hdrs["content-type"] = "application/json"
        signed = AWSRequest(method=method, url=url, data=data or b"", headers=hdrs)
        SigV4Auth(Credentials("test", "test"), "execute-api", REGION).add_auth(signed)
        request = urllib.request.Request(url, data=data, method=method, headers=dict(signed.headers.items()))
        self.calls += 1
        try:
            with self.opener.open(request, timeout=60) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        if status not in expect:
            raise RuntimeError(f"{method} {path}: HTTP {status} {text[:1500]!r}")
        return json.loads(text)


# ------------------------------------------------------------------------------------- processes
def _proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (not a zombie waiting to be reaped)."""
    stat = _proc_text(pid, "stat")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        text = _proc_text(int(stat.parent.name), "stat")
        if text:
            children.setdefault(int(text.rsplit(")", 1)[-1].split()[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def execution_environments(state_dir: Path, function_name: str) -> list[int]:
    """Live Lambda runtime processes (host executor pid files) whose environment is ``function_name``'s."""
    pids = []
    for pid_file in sorted((state_dir / "lambda-pids").glob("*.pid")):
        pid = int(pid_file.stem)
        env = _proc_text(pid, "environ").splitlines()
        if (
            alive(pid)
            and "bootstrap.py" in _proc_text(pid, "cmdline")
            and f"AWS_LAMBDA_FUNCTION_NAME={function_name}" in env
        ):
            pids.append(pid)
    return pids


def busy_environment(pids: list[int]) -> int | None:
    """The one running an invocation: idle runtimes block reading /invocation/next, a fetch sleeps per page."""
    if len(pids) <= 1:
        return pids[0] if pids else None
    working = [p for p in pids if "sleep" in _proc_text(p, "wchan")]
    return working[0] if len(working) == 1 else None


# ---------------------------------------------------------------------------------------- progress
def progress_line(n: NodeView, sources: int | None) -> str:
    extra = ""
    if n.items:
        done = sum(1 for i in n.items if i.status == "SUCCEEDED")
        extra = f"{done}/{len(n.items)} items"
    elif n.key == "fetch" and (n.items_checkpointed or n.status == "RUNNING"):
        extra = f"{n.items_checkpointed}/{sources or '?'} pages checkpointed"
    if n.crashes:
        extra += f", resumed after {n.crashes} crash(es)"
    return f"{n.key:<10} {n.status:<10} inv={n.invocations:<2} {extra}".rstrip()


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> str:
        return f"[{time.monotonic() - self.t0:6.1f}s]"


# -------------------------------------------------------------------------------------------- run
def sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def localstack(ctl: ModuleType, state_dir: Path, port: int) -> Iterator[Any]:
    """A fresh LocalStack for the demo, stopped by PID afterwards (also on failure or Ctrl-C); no process left."""
    if (stale := ctl.running(state_dir)) is not None:  # a previous demo that was killed before cleaning up
        print(f"stopping a LocalStack left by a previous demo (pid {stale.pid})")
        ctl.stop(stale)
    handle = ctl.start(state_dir, port=port)
    ours: set[int] = {handle.pid}
    try:
        yield handle
    finally:
        ours |= descendants(handle.pid) | {int(p.stem) for p in (state_dir / "lambda-pids").glob("*.pid")}
        ctl.stop(handle)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in ours) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(handle.pid, os.WNOHANG)  # LocalStack is our child: reap it (ctl.stop only waits for it)
        ps = subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "-p", ",".join(str(p) for p in sorted(ours))],
            capture_output=True,
            text=True,
            check=False,
        )
        left = [line for line in ps.stdout.splitlines() if not line.split()[1].startswith("Z")]
        if left:
            raise RuntimeError("LocalStack processes still running after the stop:\n" + "\n".join(left))
        print(
            f"LocalStack stopped (pid {handle.pid}); ps shows none of its {len(ours)} processes "
            "(emulator + Lambda runtimes) still running"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".demo" / "localstack"), help="where the report and timeline go")
    parser.add_argument("--state-dir", default=str(ROOT / ".localstack" / "demo"), help="LocalStack's state dir")
    parser.add_argument("--port", type=int, default=0, help="LocalStack's port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--timeout", type=float, default=240, help="give up on the run after this many seconds")
    args = parser.parse_args()
    out, state_dir = Path(args.out), Path(args.state_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (ROOT / ".aws-sam" / "build" / "template.yaml").is_file():
        print("no .aws-sam/build/template.yaml: run `make build` (or `make demo MODE=localstack`) first")
        return 2
    # LocalStack takes any credentials: use dummy ones, so real ones are never sent anywhere
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(var, None)
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION=REGION)
    signal.signal(signal.SIGTERM, sigterm_as_interrupt)

    print(__doc__)
    ctl = load_ctl()
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    try:
        with localstack(ctl, state_dir, args.port) as handle:
            timings["LocalStack up"] = time.monotonic() - t_all
            print(f"LocalStack (no Docker) up in {timings['LocalStack up']:.1f}s: pid {handle.pid}, {handle.endpoint}")
            return drive(handle, out, args.timeout, timings)
    except KeyboardInterrupt:
        print("\ninterrupted: LocalStack stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # deploy or API errors: report them; LocalStack is stopped either way
        print(f"\ndemo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        timings["total"] = time.monotonic() - t_all
        if len(timings) > 1:
            print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def drive(handle: Any, out: Path, timeout_s: float, timings: dict[str, float]) -> int:
    import boto3
    from tools.deploy_local import deploy

    check_local(handle.endpoint)
    sets = [
        f"FetchFunction.Timeout={FETCH_TIMEOUT_S}",
        f"FetchFunction.Environment.Variables.RESEARCH_FETCH_LATENCY_MS={FETCH_LATENCY_MS}",
    ]
    print(
        f"deploying template.yaml as stack {STACK} ({', '.join(f'{k}={v}' for k, v in PARAMS.items())}; "
        f"{', '.join(sets)}) ..."
    )
    t0 = time.monotonic()
    deployment = deploy(STACK, PARAMS, endpoint=handle.endpoint, sets=sets, timeout_s=300)
    timings["deploy"] = time.monotonic() - t0
    cfn = boto3.client("cloudformation", endpoint_url=handle.endpoint, region_name=REGION)  # dummy credentials
    fetch_fn = cfn.describe_stack_resource(StackName=STACK, LogicalResourceId="FetchFunction")
    fetch_name = fetch_fn["StackResourceDetail"]["PhysicalResourceId"]
    api = Api(deployment.outputs["ApiUrl"])
    print(f"deployed in {timings['deploy']:.1f}s; API {api.base_url}\n")

    t_run = time.monotonic()
    clock = Clock()
    started = api.call(
        "POST",
        "/runs",
        {"workflow": "research-agent", "input": {"question": QUESTION, "max_sources": MAX_SOURCES}},
        expect=(202,),
        **{"Idempotency-Key": f"demo-{uuid.uuid4().hex[:12]}"},
    )
    run_id = started["run_id"]
    print(f"{clock()} POST /runs (SigV4-signed) -> 202, run {run_id} {started['status']}")
    print(f"{clock()} polling GET /runs/{run_id}: a line per change\n")

    last: dict[str, str] = {}
    sources: int | None = None
    killed: dict[str, Any] = {}
    approved = False
    doc: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.5) + 1):  # bounded: in calls and in time
        if time.monotonic() > deadline:
            break
        doc = api.call("GET", f"/runs/{run_id}")
        view = RunView.from_dict(doc)
        by_key = {n.key: n for n in view.nodes}
        if sources is None and by_key.get("plan") and by_key["plan"].status == "SUCCEEDED":
            sources = len(api.call("GET", f"/runs/{run_id}/steps/plan")["output"]["sources"])
        for n in view.nodes:
            line = progress_line(n, sources)
            if last.get(n.key) != line:
                print(f"{clock()}   {line}")
                last[n.key] = line
        fetch = by_key.get("fetch")
        if (
            not killed
            and fetch is not None
            and fetch.status == "RUNNING"
            and fetch.items_checkpointed >= KILL_AFTER_PAGES
        ):
            killed = kill_fetch_worker(handle.state_dir, fetch_name, fetch, clock)
        if killed and "resumed" not in killed and fetch is not None and fetch.crashes:
            killed["resumed"] = True
            print(
                f"{clock()} >>> the dead invocation's lease ran out: a new invocation took 'fetch' over "
                f"(crash recorded) and resumes after page {killed['pages']}, in a fresh execution environment"
            )
        if view.status == "WAITING" and not approved:
            ack = api.call(
                "POST", f"/runs/{run_id}/events/approval", {"approved": True, "reviewer": "demo"}, expect=(202,)
            )
            approved = True
            print(f"{clock()} >>> the run waits for a human: POST /runs/{run_id}/events/approval -> {ack['status']}")
        if view.status in FINISHED:
            break
        time.sleep(0.5)
    timings["run"] = time.monotonic() - t_run
    return report(api, doc, out, killed, sources, timings)


def kill_fetch_worker(state_dir: Path, function_name: str, fetch: NodeView, clock: Clock) -> dict[str, Any]:
    pids = execution_environments(state_dir, function_name)
    victim = busy_environment(pids)
    if victim is None:
        print(f"{clock()} >>> no single busy fetch execution environment among {pids}; trying again")
        return {}
    cmdline = " ".join(_proc_text(victim, "cmdline").split())
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = not alive(victim)
    print(
        f"{clock()} >>> SIGKILL pid {victim} ({cmdline}): the execution environment of {function_name}, in the "
        f"middle of 'fetch' ({fetch.items_checkpointed} pages checkpointed). "
        + ("It is gone, memory and all." if dead else "It is STILL ALIVE.")
    )
    print(
        f"{clock()} >>> Step Functions gets Runtime.ExitError and retries the task; the step stays leased to the dead "
        f"invocation until its time would have run out (Timeout {FETCH_TIMEOUT_S} s + 2 s)"
    )
    return {"pid": victim, "dead": dead, "pages": fetch.items_checkpointed}


def resumed_because(n: NodeView) -> str:
    crashes = n.crashes + sum(i.crashes for i in n.items)
    hits = n.checkpoint_hits + sum(i.checkpoint_hits for i in n.items)
    why = ([f"after {crashes} crash(es)"] if crashes else []) + (
        [f"served from its checkpoint x{hits}"] if hits else []
    )
    return f"{n.key}: {', '.join(why)}"


def report(
    api: Api,
    doc: dict[str, Any],
    out: Path,
    killed: dict[str, Any],
    sources: int | None,
    timings: dict[str, float],
) -> int:
    if not doc:
        print("demo FAILED: no run")
        return 1
    view = RunView.from_dict(doc)
    save_run(view, out)
    if view.status != "SUCCEEDED":
        print(f"demo FAILED: run ended {view.status}: {view.error}")
        return 1
    draft = api.call("GET", f"/runs/{view.run_id}/steps/draft")
    (out / "report.md").write_text(draft["output"]["markdown"])

    leaves = [i for n in view.nodes for i in (n.items or [n])]
    steps = [v for v in leaves if v.kind != "wait"]
    done_once = {v.key: sum(1 for h in v.history if h["outcome"] == "succeeded") for v in steps}
    rerun = sorted(k for k, c in done_once.items() if c != 1)
    waits_ok = all(sum(1 for h in v.history if h["outcome"] == "event") == 1 for v in leaves if v.kind == "wait")
    resumed = [resumed_because(n) for n in view.nodes if n.resumed or any(i.resumed for i in n.items)]
    fetch = next(n for n in view.nodes if n.key == "fetch")
    pages_ok = sources is not None and fetch.items_checkpointed == sources
    fetch_crashed = any(c["node"] == "fetch" for c in view.crash_events)
    t = view.totals
    print(f"steps run: {len(steps)} (each exactly once: {'yes' if not rerun else 'NO: ' + ', '.join(rerun)})")
    print(
        f"pages fetched: {fetch.items_checkpointed} of {sources} sources (each checkpointed once: "
        f"{'yes' if pages_ok else 'NO'}) in {fetch.invocations} fetch invocations"
    )
    print(
        f"steps resumed from checkpoints: {len(resumed)} ({'; '.join(resumed) or 'none'}); completed steps re-run: "
        f"{len(rerun)}"
    )
    print_ledger(view)
    if killed:
        print(f"worker killed: pid {killed['pid']} (SIGKILL, {'confirmed dead' if killed['dead'] else 'NOT dead'})")
    print(f"API calls: {api.calls} (all SigV4-signed, all to 127.0.0.1)")
    print_files(out)
    ok = bool(killed.get("dead")) and t["crashes"] >= 1 and fetch_crashed and not rerun and waits_ok and pages_ok
    return verdict(ok, "Lambda worker")


if __name__ == "__main__":
    sys.exit(main())
