"""Concurrency limits under REAL concurrency (issue 19): 50 runs, 8 worker threads, one key of 3.

The virtual-time harnesses serve one invocation at a time, so holders there overlap only through
dead holders' leases (tests/integration/test_limits.py). Here worker threads serve the in-process
queue at once, on the real clock, like a Lambda fleet: the workflow counts its own holders (live
ones inside the step, dead ones until their lease ends) and never sees more than 3. Some holders
die with their slot held (a crash after the function ran), and every message is delivered twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from stepchain import StepContext, Workflow
from stepchain.clock import SystemClock
from stepchain.define.context import FakeLambdaContext
from stepchain.define.flow import Concurrency
from stepchain.engine import LEASE_GRACE_MS, Engine
from stepchain.handoff.inprocess import InProcessHandoff
from stepchain.handoff.messages import Activation
from stepchain.runtimes.serve import serve
from stepchain.store.memory import MemoryStore
from stepchain.store.payloads import MemoryBlobStore, PayloadCodec

LIMIT, RUNS, THREADS = 3, 50, 8
BUDGET_MS = 400  # each invocation's time limit: a dead holder's slot lease ends BUDGET_MS + grace later


class Died(BaseException):
    """A worker killed mid-invocation (like InjectedCrash: no handler runs)."""


class Holders:
    """The workflow's own count of slot holders: live ones, and dead ones until their lease ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live = 0
        self.dead_until: list[float] = []  # wall-clock ms each dead holder's lease ends
        self.most = 0
        self.crash_runs: set[str] = set()
        self.crashed: set[str] = set()

    def enter(self, deadline_ms: float) -> None:
        with self.lock:
            self.live += 1
            now = time.time() * 1000
            dead = sum(1 for until in self.dead_until if until >= now)
            self.most = max(self.most, self.live + dead)

    def leave(self, run_id: str, deadline_ms: float) -> None:
        with self.lock:
            self.live -= 1
            if run_id in self.crash_runs and run_id not in self.crashed:
                self.crashed.add(run_id)
                self.dead_until.append(deadline_ms + LEASE_GRACE_MS)
                raise Died(run_id)


H = Holders()
wf = Workflow("limited-threads")


@wf.step(limits=Concurrency(LIMIT, key=lambda ctx, x: x["model"], name="model", poll_s=0.02))
def call_model(ctx: StepContext, x: dict[str, Any]) -> dict[str, Any]:
    rec = ctx._services.store.get_node(ctx.run_id, ctx.key)  # the slot's lease is the node's
    assert rec is not None
    deadline = rec.lease_until_ms - LEASE_GRACE_MS
    H.enter(deadline)
    time.sleep(0.01)
    H.leave(ctx.run_id, deadline)
    return x


def test_fifty_runs_on_eight_threads_never_exceed_three_holders_with_crashes_and_duplicates() -> None:
    store = MemoryStore()
    handoff = InProcessHandoff(SystemClock())
    engine = Engine([wf], store, PayloadCodec(MemoryBlobStore()), handoff, clock=SystemClock())
    runs = [engine.start("limited-threads", {"model": "m1", "n": i})[0].run_id for i in range(RUNS)]
    H.crash_runs = set(runs[::10])  # 5 holders die holding their slot
    outcomes: Counter[str] = Counter()
    stop = threading.Event()
    duplicates: set[int] = set()

    def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            head = handoff.peek()
            if head is None or head[0] > time.time() * 1000:
                time.sleep(0.005)
                continue
            popped = handoff.pop(due_by_ms=int(time.time() * 1000))  # never one not yet due (SQS's delay)
            if popped is None:
                continue
            msg: Activation = popped[1]
            i += 1
            ctx = FakeLambdaContext.with_budget(BUDGET_MS, f"w{n}-{i}")
            try:
                out = serve(engine, msg, ctx)
                outcomes[out.kind.value] += 1
            except Died:  # the queue gives the message out again after its visibility timeout
                handoff.push_back(msg, int(time.time() * 1000) + BUDGET_MS + LEASE_GRACE_MS + 100)
                outcomes["died"] += 1
            if id(msg) not in duplicates:  # every message is delivered twice
                dup = msg.with_()
                duplicates.add(id(dup))
                handoff.push_back(dup, int(time.time() * 1000))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(THREADS)]
    for t in threads:
        t.start()
    deadline = time.time() + 90
    while time.time() < deadline and any(store.get_run(r).status.value != "SUCCEEDED" for r in runs):  # type: ignore[union-attr]
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    statuses = Counter(store.get_run(r).status.value for r in runs)  # type: ignore[union-attr]
    assert statuses == {"SUCCEEDED": RUNS}, (statuses, outcomes)
    assert H.crashed == H.crash_runs  # the dead holders' slots came back when their leases ended
    assert 1 <= H.most <= LIMIT, H.most
    assert outcomes["WAIT"] > 0  # the limit did hold steps back
    # every live slot given back (a duplicate took none); a dead holder's stays until an acquire reclaims it
    left = store.slot_holders("LIMIT#model#m1")
    assert len(left) <= len(H.crashed) and all(until < time.time() * 1000 for until in left.values()), left
