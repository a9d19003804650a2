"""The workflow `bench/stream_latency.py --worker` runs on an embedded worker: a step that emits a
timestamped tick every ``STREAM_EVERY_MS``."""

from __future__ import annotations

import os
import time

from stepchain import StepContext, Workflow

wf = Workflow("stream-latency")


@wf.step(timeout_s=60)
def ticks(ctx: StepContext, n: int) -> int:
    every = int(os.environ.get("STREAM_EVERY_MS", "100")) / 1000
    for i in range(n):
        ctx.emit("tick", {"i": i, "t": time.time()})
        time.sleep(every)
    return n
