"""Latency from ``ctx.emit`` to a reader of the run's stream, on the embedded runtime's AWS (moto's
server on 127.0.0.1, the real DynamoDB adapter over HTTP, as ``stepchain.runtimes.local`` workers use it).

A writer emits one event every ``--every-ms`` through the same buffer ``ctx.emit`` uses (its flush
policy included); a reader polls ``read_events(after=)`` every ``POLL_S`` (the API's long-poll
interval), as ``GET /runs/{id}/stream?wait_s=`` does. Prints the distribution of emit -> seen.

    PYTHONPATH=src python bench/stream_latency.py --events 100 --every-ms 50
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from stepchain.api.stream import POLL_S
from stepchain.runtimes.local import EmbeddedAws
from stepchain.store.dynamodb import DynamoDBStore, create_table
from stepchain.store.stream import EmitBuffer, read_events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--every-ms", type=int, default=50)
    ap.add_argument("--poll-s", type=float, default=POLL_S)
    args = ap.parse_args()
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
