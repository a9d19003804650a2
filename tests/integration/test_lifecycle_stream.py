"""Lifecycle events of every node kind on the progress stream (issue 18): a run of a workflow with a
loop, a ``ctx.each``, a map, a wait, a call and a parallel has exactly the expected ``node.*`` and
``run.*`` events, once each, in an order consistent with the run, sequence numbers 1..N without a
gap; a reader resuming with ``after=`` at any position loses and repeats nothing. Every harness,
crashes at the worker's boundaries, duplicate deliveries."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.integration.lifecycle_flow import ITERATIONS, WAIT_TIMEOUT_S, N, child, expected, quiet, quiet_child, wf

from stepchain.testing import Harness, InjectedCrash, LocalHarness, SfnHarness, SqsHarness

ROOT = Path(__file__).resolve().parents[2]
Driver = Harness | LocalHarness


def make(kind: str, **kw: Any) -> Driver:
    if kind == "sqs":
        return SqsHarness(wf, child, **kw)
    if kind == "sfn":
        return SfnHarness(wf, child, **kw)
    if kind == "local":
        return LocalHarness(
            "tests.integration.lifecycle_flow:wf",
            "tests.integration.lifecycle_flow:child",
            pythonpath=[str(ROOT)],
            **kw,
        )
    return Harness(wf, child, backend=kind, **kw)


def drive(h: Driver, name: str = "tour") -> str:
    rid = h.start(name, N)
    for it in range(ITERATIONS):
        assert h.run(rid) == "WAITING"
        h.send_event(rid, "go", it, iteration=it)
    assert h.run(rid) == "SUCCEEDED"
    return rid


def check(h: Driver, rid: str) -> list[dict[str, Any]]:
    events = h.stream(rid)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # gap-free
    assert len({e["id"] for e in events}) == len(events)  # one event per id
    pos: dict[str | None, list[int]] = {}
    got: dict[str | None, list[str]] = {}
    progress: dict[str | None, list[dict[str, Any]]] = {}
    for p, e in enumerate(events):
        pos.setdefault(e["node"], []).append(p)
        if e["kind"] == "node.each":
            progress.setdefault(e["node"], []).append(e["data"])
        got.setdefault(e["node"], []).append(e["kind"])
    want = expected()
    # each node's events, exactly once each, in order (each progress: at least one, counted apart)
    for key, kinds in want:
        mine = got.pop(key if key is not None else None, [])
        if key is None:
            continue
        steps = [k for k in mine if k != "node.each"]
        assert steps == [k for k in kinds if k != "node.each"], key
        if "node.each" in kinds:
            done = [d["done"] for d in progress[key]]
            assert done == sorted(set(done)) and done[-1] == N and progress[key][-1]["total"] == N, key
            assert mine.index("node.each") > mine.index("node.started")
    assert [e["kind"] for e in events if e["node"] is None] == ["run.started", "run.succeeded"]
    assert got == {}, f"unexpected events: {got}"
    # in the run's order: a node's events all come after those of the node before it (a map's
    # items between its fan-out and its join); the run's start first, its end last
    assert events[0]["kind"] == "run.started" and events[-1]["kind"] == "run.succeeded"
    tops = [k for k, _ in want if k is not None and "#" not in k]
    for a, b in itertools.pairwise(tops):
        assert max(pos[a]) < min(pos[b]), (a, b)
    for key, _ in want:
        if key is not None and "#" in key:
            m = key.split("#")[0]
            fanned = next(p for p in pos[m] if events[p]["kind"] == "node.fanned_out")
            assert fanned < min(pos[key]) and max(pos[key]) < max(pos[m]), key
    # a reader resuming with after= at every position: nothing lost, nothing repeated
    for p in range(len(events) + 1):
        assert h.stream(rid, after=p) == events[p:]
    return events


CRASHES = [
    ("after_claim", "plan"),
    ("mid_item", "plan"),
    ("item_window", "plan"),
    ("after_checkpoint", "plan"),
    ("after_checkpoint", "work#00001"),
    ("before_handoff", "work"),
    ("after_claim", "go"),
    ("before_handoff", "go"),
    ("after_claim", "delegate"),
    ("after_checkpoint", "both"),
    ("before_handoff", "both"),
    ("after_checkpoint", "decide"),
    ("after_claim", "double"),
]


@pytest.mark.parametrize("kind", ["memory", "moto", "sqs", "sfn"])
def test_every_harness_with_duplicate_deliveries(kind: str) -> None:
    with make(kind, duplicate_delivery=True) as h:
        check(h, drive(h))


@pytest.mark.parametrize("boundary,node", CRASHES)
def test_a_crash_at_every_boundary_in_memory(boundary: str, node: str) -> None:
    with make("memory", duplicate_delivery=True) as h:
        h.crash_at(boundary, node=node)
        rid = drive(h)
        assert h.probe.crashes
        check(h, rid)


#: one crash per node in one run (more on one node would use up its attempts: WorkerLost)
ONE_EACH = [("item_window", "plan"), ("after_checkpoint", "work#00001"), ("before_handoff", "work")]
ONE_EACH += [("after_claim", "go"), ("after_claim", "delegate"), ("after_checkpoint", "both")]
ONE_EACH += [("after_checkpoint", "decide"), ("after_claim", "double")]


@pytest.mark.parametrize("kind", ["memory", "moto", "sqs", "sfn"])
def test_crashes_at_every_kind_in_one_run(kind: str) -> None:
    with make(kind, duplicate_delivery=True) as h:
        for boundary, node in ONE_EACH:
            h.crash_at(boundary, node=node)
        rid = drive(h)
        assert h.probe.crashes
        check(h, rid)


def test_the_embedded_runtime() -> None:
    """Real worker processes in real time, every message delivered twice. ``run()`` returns when the
    run's record says SUCCEEDED; the worker process writes ``run.succeeded`` one request later (the
    stream's reader contract: a reader that saw the run finished reads once more), so the check waits
    for it (at most 30 s) before it compares the whole stream."""
    with make("local", duplicate_delivery=True, budget_ms=3000, poll_timeout_s=180) as h:  # a loaded machine
        rid = drive(h)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(e["kind"] == "run.succeeded" for e in h.stream(rid)):
            time.sleep(0.05)
        check(h, rid)


def test_a_reader_tailing_while_the_run_goes_on() -> None:
    """A reader reads after every activation with ``after=`` its last sequence (a reconnect each
    time, small pages): the concatenation is the whole stream."""
    with make("memory", duplicate_delivery=True) as h:
        h.crash_at("item_window", node="plan")
        h.crash_at("after_claim", node="go")
        rid = h.start("tour", N)
        seen: list[dict[str, Any]] = []
        it = 0
        while (status := h.run(rid, max_activations=1)) != "SUCCEEDED":
            if status == "WAITING" and h.run(rid) == "WAITING":  # the wait is reached: its event
                h.send_event(rid, "go", it, iteration=it)
                it += 1
            seen += h.stream(rid, after=seen[-1]["seq"] if seen else 0, limit=2)
        while page := h.stream(rid, after=seen[-1]["seq"] if seen else 0, limit=2):
            seen += page
        assert seen == check(h, rid)


def test_added_requests_per_invocation() -> None:
    """The same run with and without lifecycle events (moto, counted AWS calls): every invocation
    that writes lifecycle events adds one head query and one transaction (its only extra write);
    the run adds one more of each for its end (``run.succeeded``)."""
    with Harness(wf, child, quiet, quiet_child, backend="moto") as h:
        calls: dict[str, Counter[str]] = {}
        for name in ("tour", "tour-quiet"):
            before = Counter(h.api_calls)
            rid = drive(h, name)
            calls[name] = Counter(h.api_calls) - before
            assert bool(h.stream(rid)) == (name == "tour")
        extra = calls["tour"] - calls["tour-quiet"]
        # writing invocations, per iteration: plan, work (fan-out), 3 items, work's join, go (wait),
        # go (event: its completion), delegate (start), delegate (join), both (start), both (join),
        # decide: 13; and 3 child runs, each one step and its run's end: 6
        writers = ITERATIONS * (13 + 3 * 2) + 1  # + the run's end
        print(f"\nadded requests, lifecycle events on: {dict(extra)}; {writers} writing invocations or run ends")
        assert extra["dynamodb.TransactWriteItems"] == writers
        assert extra["dynamodb.Query"] == writers
        assert set(extra) == {"dynamodb.TransactWriteItems", "dynamodb.Query"}
        assert calls["tour-quiet"] - calls["tour"] == Counter()


def settle(h: Harness, rid: str, want: str) -> None:
    """Run until the run is ``want``; meanwhile recover as a deployment does (time passes, the sweeper runs)."""
    for _ in range(6):
        if h.run(rid) == want:
            return
        h.advance(120)
        h.sweep()
    raise AssertionError(f"run {rid} is {h.status(rid)}, not {want}")


@pytest.mark.parametrize("boundary,skip", [("api_start", 0), ("api_event", 0), ("api_event", 1)])
def test_a_crash_inside_the_api_in_memory(boundary: str, skip: int) -> None:
    """The API call dies after a durable write (the run created; the event stored; the wait completed):
    the sweeper finishes it, and the stream is the same as without the crash."""
    with Harness(wf, child, duplicate_delivery=True) as h:
        h.crash_at(boundary, skip=skip)
        try:
            rid = h.start("tour", N)
        except InjectedCrash:
            (rid,) = [r for r in h.runs() if h.engine.get_run(r).workflow == "tour"]
        for it in range(ITERATIONS):
            settle(h, rid, "WAITING")
            with contextlib.suppress(InjectedCrash):  # the event is stored: the sweeper finishes its delivery
                h.send_event(rid, "go", it, iteration=it)
        settle(h, rid, "SUCCEEDED")
        assert h.probe.crashes
        check(h, rid)


def test_cancel_crashed_inside_the_api_and_a_redrive() -> None:
    """``run.cancelled`` once, also when the cancel died after the run's CANCELLED write (the sweeper
    finishes it); a run that failed (its wait timed out) and was redriven: ``run.failed``, the redriven
    wait's own events, then ``run.succeeded``, gap-free, once each."""
    with Harness(wf, child, duplicate_delivery=True) as h:
        cancelled = h.start("tour", N)
        settle(h, cancelled, "WAITING")
        h.crash_at("api_cancel")
        with pytest.raises(InjectedCrash):
            h.cancel(cancelled)
        h.advance(400)  # past the sweeper's grace (300 s)
        h.sweep()
        h.run()
        kinds = [e["kind"] for e in h.stream(cancelled)]
        assert kinds.count("run.cancelled") == 1 and kinds[-1] == "run.cancelled"

        failed = h.start("tour", N)
        settle(h, failed, "WAITING")
        h.advance(WAIT_TIMEOUT_S + 60)
        settle(h, failed, "FAILED")
        h.redrive(failed)
        settle(h, failed, "WAITING")
        h.send_event(failed, "go", 0, iteration=0)
        settle(h, failed, "WAITING")
        h.send_event(failed, "go", 1, iteration=1)
        settle(h, failed, "SUCCEEDED")
        events = h.stream(failed)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert len({e["id"] for e in events}) == len(events)
        runs = [e["kind"] for e in events if e["node"] is None]
        assert runs == ["run.started", "run.failed", "run.succeeded"]
        # the redrive (without new input: the wait keeps its generation) gives the redriven wait's
        # events their own ids (|r1): its second episode is in the stream as well as its first
        go = [(e["kind"], e["id"].endswith("|r1")) for e in events if e["node"] == "go"]
        first = [("node.started", False), ("node.waiting_for", False), ("node.failed", False)]
        assert go == [*first, ("node.started", True), ("node.waiting_for", True), ("node.succeeded", True)]
