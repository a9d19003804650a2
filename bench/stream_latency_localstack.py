"""Latency from ``ctx.emit`` (and from the engine's lifecycle events) to a reader of
``GET /runs/{id}/stream`` through API Gateway, on a Docker-free LocalStack (issue 18).

LocalStack starts on 127.0.0.1 (its own state dir, a free port; stopped by PID at the end, as in
``make demo MODE=localstack``), ``sam build``'s output is deployed with the SQS transport and SigV4
auth, and a research-agent run starts (its fetch step emits one ``page`` event per fetched page,
``--latency-ms`` apart; the workflow streams lifecycle events). A reader long-polls
``GET /runs/{id}/stream?after=<last seq>&wait_s=10`` (signed) and, for each event, takes its arrival
time minus the event's ``at`` (the emitting Lambda's clock: LocalStack runs Lambda runtimes as host
processes, so both clocks are this machine's). It approves the run's wait and reads on to the end.

    make build && PYTHONPATH=src .venv/bin/python bench/stream_latency_localstack.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
STACK = "stepchain-stream-bench"


def _demo() -> ModuleType:
    """demo/localstack_demo.py (its LocalStack context manager and its signed API client)."""
    sys.path.insert(0, str(ROOT / "demo"))
    spec = importlib.util.spec_from_file_location("localstack_demo", ROOT / "demo" / "localstack_demo.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stats(name: str, xs: list[float]) -> str:
    if not xs:
        return f"{name}: none"
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return (
        f"{name}: n={len(xs)} p50={statistics.median(xs):.0f} ms p95={p95:.0f} ms "
        f"min={xs[0]:.0f} ms max={xs[-1]:.0f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-dir", default=str(ROOT / ".localstack" / "stream-bench"))
    ap.add_argument("--sources", type=int, default=8, help="pages the fetch step fetches (one emit each)")
    ap.add_argument("--latency-ms", type=int, default=500, help="the fetcher's latency per page")
    ap.add_argument("--wait-s", type=float, default=10, help="the reader's long-poll")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    if not (ROOT / ".aws-sam" / "build" / "template.yaml").is_file():
        print("no .aws-sam/build/template.yaml: run `make build` first")
        return 2
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(var, None)
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION=_demo().REGION)
    demo = _demo()
    from tools.deploy_local import deploy

    ctl = demo.load_ctl()
    t0 = time.monotonic()
    with demo.localstack(ctl, Path(args.state_dir).resolve(), 0) as handle:
        print(f"LocalStack up in {time.monotonic() - t0:.1f}s at {handle.endpoint}")
        t1 = time.monotonic()
        sets = [f"FetchFunction.Environment.Variables.RESEARCH_FETCH_LATENCY_MS={args.latency_ms}"]
        deployment = deploy(STACK, {"Transport": "sqs", "ApiAuth": "iam"}, endpoint=handle.endpoint, sets=sets)
        print(f"deployed in {time.monotonic() - t1:.1f}s")
        api = demo.Api(deployment.outputs["ApiUrl"])
        body = {"workflow": "research-agent", "input": {"question": demo.QUESTION, "max_sources": args.sources}}
        run_id = api.call("POST", "/runs", body, expect=(202,), **{"Idempotency-Key": uuid.uuid4().hex})["run_id"]
        after, seen, polls, approved = 0, [], 0, False
        lat: dict[str, list[float]] = {"emit": [], "lifecycle": []}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            page = api.call("GET", f"/runs/{run_id}/stream?after={after}&limit=200&wait_s={args.wait_s:g}")
            arrived = time.time() * 1000
            polls += 1
            for e in page["events"]:
                kind = "lifecycle" if e["kind"].startswith(("node.", "run.")) else "emit"
                lat[kind].append(arrived - e["at"])
                seen.append(e)
            after = page["next"]
            if page["finished"] and not page["events"]:
                break
            if not approved and any(e["kind"] == "node.waiting_for" for e in page["events"]):
                api.call("POST", f"/runs/{run_id}/events/approval", {"approved": True}, expect=(202,))
                approved = True
        status = api.call("GET", f"/runs/{run_id}")["status"]
        seqs = [e["seq"] for e in seen]
        print(f"run {run_id} {status}: {len(seen)} events read in {polls} long-polls (wait_s={args.wait_s:g})")
        print(f"gap-free and once each: {seqs == list(range(1, len(seqs) + 1))}")
        print(_stats("ctx.emit -> reader", lat["emit"]))
        print(_stats("lifecycle event -> reader", lat["lifecycle"]))
        print(f"total {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
