"""The progress stream (issue 18): ``ctx.emit`` events, ordered per run by a gap-free sequence, read
with ``h.stream(run_id, after=)``; a re-run after a crash or a duplicate delivery never shows a
reader an event twice, and no emit is lost (each is written before the checkpoint of the step,
``each`` item or ``once`` effect that made it). Every harness, crashes and duplicate deliveries."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tests.integration.stream_flow import expected, wf

from stepchain.testing import Harness, SfnHarness, SqsHarness

N = 3


def make(kind: str, **kw: Any) -> Harness:
    if kind == "sqs":
        return SqsHarness(wf, **kw)
    if kind == "sfn":
        return SfnHarness(wf, **kw)
    return Harness(wf, backend=kind, **kw)


def check(events: list[dict[str, Any]]) -> None:
    """Gap-free sequence, one event per id, each node's emits exactly once in order, one terminal event."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    user: dict[str, list[tuple[str, Any]]] = {}
    for e in events:
        if not e["kind"].startswith(("node.", "run.")):
            user.setdefault(e["node"], []).append((e["kind"], e["data"]))
    assert user == expected(N)
    ends = Counter(e["node"] for e in events if e["kind"] == "node.succeeded")
    assert ends == Counter({k: 1 for k in [*expected(N), "work"]})  # the map node's own end (its join)
    for node in [*expected(N), "work"]:  # the node's succeeded event comes after all its emits
        mine = [e for e in events if e["node"] == node]
        assert mine[-1]["kind"] == "node.succeeded" and mine[0]["kind"] == "node.started"


def run(h: Harness) -> list[dict[str, Any]]:
    rid = h.start(wf.name, N)
    assert h.run(rid) == "SUCCEEDED" and h.output(rid) == sum(range(N))
    return h.stream(rid)


CRASHES = [
    ("after_claim", "plan"),
    ("mid_item", "work#00001"),  # item 0 checkpointed (its emits written), crash before item 1
    ("item_window", "work#00000"),  # item ran, emitted, not checkpointed: the re-run emits it again
    ("effect_window", "work#00002"),  # the once effect emitted and crashed before its result
    ("after_checkpoint", "plan"),  # the emits went with the checkpoint: the redelivery serves it
]


@pytest.mark.parametrize("kind", ["memory", "moto", "sqs", "sfn"])
def test_every_harness_with_duplicate_deliveries(kind: str) -> None:
    with make(kind, duplicate_delivery=True) as h:
        check(run(h))


#: every crash on the in-memory harness; on the others, the two that re-run emits whose copies were written
CELLS = [("memory", b, n) for b, n in CRASHES] + [
    (kind, b, n) for kind in ("moto", "sqs", "sfn") for b, n in CRASHES if b in ("item_window", "effect_window")
]


@pytest.mark.parametrize("kind,boundary,node", CELLS)
def test_crashed_with_duplicate_deliveries(kind: str, boundary: str, node: str) -> None:
    with make(kind, duplicate_delivery=True) as h:
        h.crash_at(boundary, node=node)
        events = run(h)
        assert h.probe.crashes  # the crash happened
        check(events)


def test_all_crashes_in_one_run_in_memory() -> None:
    with Harness(wf, duplicate_delivery=True) as h:
        for boundary, node in CRASHES:
            h.crash_at(boundary, node=node)
        events = run(h)
        assert len(h.probe.crashes) == len(CRASHES)
        check(events)


def test_a_reader_resumes_with_after_while_the_run_goes_on() -> None:
    """Read after every activation, each time with ``after=`` the last sequence seen (a reader that
    disconnects between reads): the concatenation is the whole stream, nothing lost or repeated."""
    with Harness(wf, duplicate_delivery=True) as h:
        h.crash_at("item_window", node="work#00001")
        rid = h.start(wf.name, N)
        seen: list[dict[str, Any]] = []
        while h.run(rid, max_activations=1) not in ("SUCCEEDED", "FAILED"):
            seen += h.stream(rid, after=seen[-1]["seq"] if seen else 0, limit=3)
        while page := h.stream(rid, after=seen[-1]["seq"] if seen else 0, limit=3):
            seen += page
        assert seen == h.stream(rid)
        check(seen)


def test_a_run_without_emits_costs_no_stream_request() -> None:
    """Without ``stream_lifecycle`` and without emits a step makes no stream request (the two-calls-
    per-step budget of test_calls_per_step holds); with lifecycle events, one transaction per invocation."""
    from stepchain import Workflow

    quiet = Workflow("quiet")
    loud = Workflow("loud", stream_lifecycle=True)
    for w in (quiet, loud):
        w.step(name="a")(lambda ctx, x: x + 1)
        w.step(name="b")(lambda ctx, x: x + 1)
    with Harness(quiet, loud, backend="moto") as h:
        calls: dict[str, Counter[str]] = {}
        for name in ("quiet", "loud"):
            before = Counter(h.api_calls)
            rid = h.start(name, 0)
            assert h.run(rid) == "SUCCEEDED"
            calls[name] = Counter(h.api_calls) - before
            streamed = [e["kind"] for e in h.stream(rid)]
            loud_kinds = ["run.started", *["node.started", "node.succeeded"] * 2, "run.succeeded"]
            assert streamed == ([] if name == "quiet" else loud_kinds)
        # per invocation with lifecycle events: one head query and one transaction (the only write);
        # per run one more of each (run.succeeded, written after the run's transition)
        assert calls["loud"] - calls["quiet"] == Counter({"dynamodb.Query": 3, "dynamodb.TransactWriteItems": 3})
        assert calls["quiet"] - calls["loud"] == Counter()


def test_an_emit_named_like_a_lifecycle_event_is_written_before_its_items_checkpoint() -> None:
    """``flush_user`` writes at an ``each`` item's checkpoint whenever a ``ctx.emit`` is pending, whatever
    its kind (here ``run.note``): a crash after the checkpoint does not lose it (the item is not re-run)."""
    from stepchain import Workflow

    noted = Workflow("noted", stream_lifecycle=True)

    @noted.step()
    def go(ctx: Any, n: int) -> list[int]:
        def item(i: int) -> int:
            ctx.emit("run.note", {"i": i})
            return i

        return ctx.each(list(range(n)), item)  # type: ignore[no-any-return]

    with Harness(noted) as h:
        # item 0's emit writes at once (the invocation's first); item 1's is buffered (within 200 ms)
        # and must be written before item 1's checkpoint: the crash comes before item 2
        h.crash_at("mid_item", node="go", skip=2)
        rid = h.start("noted", 3)
        assert h.run(rid) == "SUCCEEDED" and h.probe.crashes
        notes = [e["data"]["i"] for e in h.stream(rid) if e["kind"] == "run.note"]
        assert notes == [0, 1, 2]
