"""Latency from ``ctx.emit`` to a reader of the run's stream, on the embedded runtime's AWS (moto's
server on 127.0.0.1, the real DynamoDB adapter over HTTP, as ``stepchain.runtimes.local`` workers use it).

A writer emits one event every ``--every-ms`` through the same buffer ``ctx.emit`` uses (its flush
policy included); a reader polls ``read_events(after=)`` every ``POLL_S`` (the API's long-poll
interval), as ``GET /runs/{id}/stream?wait_s=`` does. Prints the distribution of emit -> seen.

    PYTHONPATH=src python bench/stream_latency.py --events 100 --every-ms 50

``--worker``: end to end instead: a real embedded worker process (``python -m stepchain.runtimes.local
worker``, SQS transport) runs ``stream_latency_flow:wf``, whose step emits ``{"t": time.time()}``
every ``--every-ms``; the reader measures time.time() on arrival minus ``t``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from stepchain.api.stream import POLL_S
from stepchain.runtimes.local import EmbeddedAws
from stepchain.store.dynamodb import DynamoDBStore, create_table
from stepchain.store.stream import EmitBuffer, read_events


def end_to_end(args: argparse.Namespace) -> None:
    from stepchain.runtimes.aws import AwsClients, build_engine
    from stepchain.runtimes.local import visibility_timeout_for
    from stepchain.settings import Settings

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from stream_latency_flow import wf

    with EmbeddedAws() as aws:
        stack = aws.provision(visibility_timeout_s=visibility_timeout_for(60_000))
        env = {
            **os.environ,
            **stack.env(POWERTOOLS_LOG_LEVEL="ERROR"),
            "STREAM_EVERY_MS": str(args.every_ms),
            "PYTHONPATH": os.pathsep.join([str(here), str(here.parent / "src")]),
        }
        clients = AwsClients(dynamodb=aws.client("dynamodb"), s3=aws.client("s3"), sqs=aws.client("sqs"))
        engine = build_engine([wf], Settings.from_env(env), clients=clients)
        cmd = [sys.executable, "-m", "stepchain.runtimes.local", "worker", "--workflow", "stream_latency_flow:wf"]
        worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2.5)  # the worker's start-up
            run, _ = engine.start(wf.name, args.events)
            lat: list[float] = []
            after, deadline = 0, time.monotonic() + 60
            while len(lat) < args.events and time.monotonic() < deadline:
                for e in read_events(engine.store, run.run_id, after=after, limit=1000):
                    lat.append((time.time() - e.data["t"]) * 1000)
                    after = e.seq
                time.sleep(args.poll_s)
        finally:
            worker.terminate()
            worker.wait(10)
    lat.sort()
    q = statistics.quantiles(lat, n=20)
    poll_ms = args.poll_s * 1000
    print(f"end to end (worker process): events={len(lat)}/{args.events} every={args.every_ms}ms poll={poll_ms:.0f}ms")
    print(f"ctx.emit->reader ms: p50={statistics.median(lat):.0f} p95={q[18]:.0f} max={lat[-1]:.0f} min={lat[0]:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--every-ms", type=int, default=50)
    ap.add_argument("--poll-s", type=float, default=POLL_S)
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return end_to_end(args)
    with EmbeddedAws() as aws:
        client = aws.client("dynamodb")
        create_table(client, "bench")
        store = DynamoDBStore("bench", client)
        emitted: dict[int, float] = {}
        seen: dict[int, float] = {}
        done = threading.Event()

        def reader() -> None:
            after = 0
            while not (done.is_set() and len(seen) == args.events):
                for e in read_events(store, "run", after=after, limit=1000):
                    seen[int(e.data)] = time.perf_counter()
                    after = e.seq
                time.sleep(args.poll_s)

        t = threading.Thread(target=reader)
        t.start()
        buf = EmitBuffer(store, "run", "step", 0, lambda: int(time.time() * 1000))
        flush_s: list[float] = []
        for i in range(args.events):
            emitted[i] = time.perf_counter()
            buf.emit("tick", i, "")
            flush_s.append(time.perf_counter() - emitted[i])
            time.sleep(args.every_ms / 1000)
        buf.flush()  # what the step's checkpoint does
        done.set()
        t.join()
    lat = sorted((seen[i] - emitted[i]) * 1000 for i in range(args.events))
    q = statistics.quantiles(lat, n=20)
    writes = [s * 1000 for s in flush_s if s > 0.002]
    print(f"events={args.events} every={args.every_ms}ms reader poll={args.poll_s * 1000:.0f}ms")
    print(f"emit->reader ms: p50={statistics.median(lat):.0f} p95={q[18]:.0f} max={lat[-1]:.0f} min={lat[0]:.0f}")
    print(f"emits that wrote: {len(writes)}/{args.events}, write ms p50={statistics.median(writes):.1f}")


if __name__ == "__main__":
    main()
