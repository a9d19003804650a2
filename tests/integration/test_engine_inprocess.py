"""The whole chain in process: Engine + real adapters (moto DynamoDB/S3) or memory, on the Harness.

Steps spend *virtual* time (``spend(ms)``); passing an invocation's deadline is the emulated Lambda
kill. Every test drives complete runs and checks what durable execution promises: exactly-once
effects, bounded invocations, resumption, and the run lifecycle (events, sleep, map, retry,
redrive, cancel, idempotent start, claim-check, version pinning, ledger).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import (
    Engine,
    IdempotencyConflict,
    InvalidRunState,
    NodeStatus,
    OutcomeKind,
    Registry,
    RetryableError,
    RetryPolicy,
    RunStatus,
    StepContext,
    StepNotFound,
    TerminalError,
    Workflow,
    describe,
)
from stepchain.exceptions import EventNotFound
from stepchain.testing import WORKER_BOUNDARIES, Harness, InjectedCrash, VirtualLambdaContext

HOUR_MS = 3_600_000


class Env:
    """What steps reach from inside a run: the current harness (its virtual clock and store)."""

    h: Harness | None = None
    calls: Counter[str] = Counter()  # every call of a step function, finished or not
    log: list[tuple[str, Any]] = []
    flags: dict[str, Any] = {}


ENV = Env()


def spend(ms: float) -> None:
    """Work for ``ms`` of virtual time (raises InvocationTimeout past the invocation's deadline)."""
    assert ENV.h is not None
    ENV.h.clock.advance(ms)


def now_ms() -> int:
    assert ENV.h is not None
    return ENV.h.clock.now_ms()


@contextmanager
def harness(*workflows: Workflow, **kwargs: Any) -> Iterator[Harness]:
    ENV.calls, ENV.log, ENV.flags = Counter(), [], {}
    kwargs.setdefault("backend", "moto")  # these tests check the DynamoDB adapter's behaviour too
    with Harness(*workflows, **kwargs) as h:
        ENV.h = h
        try:
            yield h
        finally:
            ENV.h = None


def error_type(h: Harness, run_id: str) -> str | None:
    err = h.engine.get_run(run_id).error
    return None if err is None else err["type"]


# ======================================================================= the crash matrix
matrix = Workflow("matrix")


@matrix.step()
def plan(ctx: StepContext, q: dict[str, int]) -> dict[str, Any]:
    ENV.calls["plan"] += 1
    return {"urls": [f"u{i}" for i in range(q["n"])]}


@matrix.step(timeout_s=5)
def fetch(ctx: StepContext, p: dict[str, Any]) -> list[dict[str, Any]]:
    ENV.calls["fetch"] += 1

    def one(url: str) -> dict[str, Any]:
        spend(1500)  # two pages fit a 5 s invocation: the step continues in fresh ones
        return {"url": url, "len": len(url)}

    return ctx.each(p["urls"], one)


@matrix.map(max_concurrency=2)
def summarize(ctx: StepContext, page: dict[str, Any]) -> dict[str, Any]:
    ctx.record_cost(usd=0.001, input_tokens=100, output_tokens=20)
    return ctx.once("llm", lambda: {"sum": page["url"].upper()})


@matrix.step()
def draft(ctx: StepContext, sums: list[dict[str, Any]]) -> dict[str, Any]:
    return {"plan": ctx.output_of("plan")["urls"], "sums": [s["sum"] for s in sums]}


# the effect and item windows re-run work by design (at-least-once there): tests/integration/test_steplocal.py
EXACTLY_ONCE = tuple(b for b in WORKER_BOUNDARIES if b not in ("effect_window", "item_window"))
MATRIX_CASES = [("memory", b, dup) for b in EXACTLY_ONCE for dup in (True, False)] + [
    ("moto", b, True) for b in EXACTLY_ONCE
]


@pytest.mark.parametrize(("backend", "boundary", "duplicate"), MATRIX_CASES)
def test_crash_at_every_boundary_still_runs_everything_exactly_once(
    backend: str, boundary: str, duplicate: bool
) -> None:
    n = 4 if backend == "memory" else 2
    with harness(matrix, backend=backend, duplicate_delivery=duplicate) as h:
        for node in ("plan", "fetch", "summarize", "draft"):
            if boundary == "before_handoff" and node == "plan":
                continue  # the first handoff is the API's (see test_start_lost_before_handoff_is_recovered_by_retry)
            h.crash_at(boundary, node=node, times=2 if node == "summarize" else 1)
        rid = h.start("matrix", {"n": n})
        h.run()

        assert h.status(rid) == "SUCCEEDED", h.engine.get_run(rid).error
        urls = [f"u{i}" for i in range(n)]
        assert h.output(rid) == {"plan": urls, "sums": [u.upper() for u in urls]}
        # every rule fired: plan, fetch, draft once, summarize twice (mid_item: only fetch has items;
        # before_handoff: the plan rule is not set)
        fired = {"after_claim": 5, "mid_item": 1, "after_checkpoint": 5, "before_handoff": 4}[boundary]
        assert len(h.probe.crashes) == fired, h.probe.crashes
        expected_nodes = {"plan", "fetch", "draft"} | {f"summarize#{i:05d}" for i in range(n)}
        assert h.executions == Counter(dict.fromkeys(expected_nodes, 1)), h.executions
        assert h.probe.items == Counter({f"fetch/@1:{i}": 1 for i in range(n)}), h.probe.items
        assert h.probe.once == Counter({f"summarize#{i:05d}/llm": 1 for i in range(n)}), h.probe.once
        assert not any(i.outcome == "timed_out" for i in h.invocations)
        view = h.view(rid)
        if boundary in ("after_claim", "mid_item"):  # each death was followed by exactly one takeover
            assert [c["kind"] for c in view.crash_events] == ["takeover"] * len(h.probe.crashes)
        assert view.totals["cost_usd"] == pytest.approx(0.001 * n)
        assert view.totals["input_tokens"] == 100 * n


# ======================================================================= budgets
long_job = Workflow("long-job")


@long_job.step(timeout_s=4)
def crunch(ctx: StepContext, n: int) -> list[int]:
    def one(i: int) -> int:
        spend(1000)
        return i * i

    return ctx.each(list(range(n)), one)


def test_work_three_times_the_budget_completes_through_continuations_within_budget() -> None:
    n = 12  # 12 x 1 s of work for a 4 s invocation
    with harness(long_job, backend="moto") as h:
        rid = h.start("long-job", n)
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        assert h.output(rid) == [i * i for i in range(n)]
        runs = [i for i in h.invocations if i.key == "crunch"]
        assert sum(i.elapsed_ms for i in runs) >= 3 * 4000
        assert all(i.budget_ms == 4000 and i.elapsed_ms <= i.budget_ms for i in runs), runs
        assert all(i.outcome != "timed_out" for i in h.invocations)
        assert [i.outcome for i in runs].count("CONTINUE") >= 2
        assert runs[-1].outcome == "DONE"
        assert h.probe.items == Counter({f"crunch/@1:{i}": 1 for i in range(n)})
        node = h.view(rid).nodes[0]
        assert (node.invocations, node.attempts, node.crashes) == (len(runs), 1, 0)
        assert node.items_checkpointed == n
        assert node.duration_ms == n * 1000  # every invocation's work is in the ledger, none twice
        assert [e["outcome"] for e in node.history] == ["continued"] * (len(runs) - 1) + ["succeeded"]


heavy_items = Workflow("heavy-items")


@heavy_items.step(timeout_s=4)
def render(ctx: StepContext, n: int) -> list[int]:
    def one(i: int) -> int:
        spend(3000)  # fits a 4 s invocation alone, but not with the learned 1.5x + 1 s margin
        return i

    return ctx.each(list(range(n)), one)


def test_items_too_big_for_the_learned_margin_still_progress_one_per_invocation() -> None:
    """A fresh invocation that has not checkpointed anything yet must try the next item: refusing it
    because the margin (1.5 x slowest + 1 s) exceeds the whole budget would continue forever."""
    with harness(heavy_items, backend="memory") as h:
        rid = h.start("heavy-items", 3)
        h.run(max_activations=30)
        delivered = len(h.invocations)
        assert h.status(rid) == "SUCCEEDED", f"{delivered} activations, {h.view(rid).nodes[0].items_checkpointed} items"
        assert h.output(rid) == [0, 1, 2]
        runs = [i for i in h.invocations if i.key == "render"]
        assert len(runs) == 3 and all(i.elapsed_ms <= i.budget_ms for i in runs)
        assert h.probe.items == Counter({f"render/@1:{i}": 1 for i in range(3)})


overrun = Workflow("overrun")


@overrun.step(timeout_s=5, retry=RetryPolicy(max_attempts=3, backoff_s=0))
def hog(ctx: StepContext, _: Any) -> str:
    ENV.calls["hog"] += 1
    spend(6000)  # one indivisible unit of work longer than the function's timeout
    return "never"


@overrun.step()
def after_hog(ctx: StepContext, x: Any) -> Any:
    return x


def test_step_overrunning_its_budget_is_killed_retried_and_fails_with_worker_lost() -> None:
    with harness(overrun, backend="moto") as h:
        rid = h.start("overrun")
        h.run()
        assert h.status(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and (err["type"], err["node"]) == ("WorkerLost", "hog")
        hog_runs = [i for i in h.invocations if i.key == "hog"]
        assert [i.outcome for i in hog_runs] == ["timed_out"] * 3 + ["FAILED"]
        assert all(i.elapsed_ms <= i.budget_ms == 5000 for i in hog_runs)
        assert ENV.calls["hog"] == 3 and h.executions["hog"] == 0 and h.executions["after_hog"] == 0
        view = h.view(rid)
        node = view.nodes[0]
        assert (node.status, node.attempts) == ("FAILED", 3)
        assert [e["outcome"] for e in node.history] == ["crashed"] * 3
        assert [c["kind"] for c in view.crash_events] == ["takeover", "takeover"]
        # a takeover waits for the dead worker's lease: never before its deadline + grace
        starts = [e["started_ms"] for e in node.history]
        assert all(b - a >= 5000 for a, b in itertools.pairwise(starts))


# ======================================================================= events
approval = Workflow("approval")


@approval.step()
def prepare(ctx: StepContext, doc: str) -> dict[str, str]:
    return {"doc": doc}


approval.wait_for_event("approve", timeout_s=3600)


@approval.step()
def publish(ctx: StepContext, decision: Any) -> dict[str, Any]:
    ENV.log.append(("publish_input", decision))
    return {"published": decision, "doc": ctx.output_of("prepare")["doc"]}


def test_event_delivered_to_a_waiting_run_resumes_it_with_the_payload() -> None:
    with harness(approval, backend="moto") as h:
        rid = h.start("approval", "report")
        h.run()
        assert h.status(rid) == "WAITING"
        assert h.engine.get_run(rid).current == "approve"
        assert h.executions["publish"] == 0
        h.advance(600)  # ten minutes later, well within the timeout
        assert h.send_event(rid, "approve", {"ok": True, "by": "ana"}) == "delivered"
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        assert ENV.log == [("publish_input", {"ok": True, "by": "ana"})]
        assert h.output(rid) == {"published": {"ok": True, "by": "ana"}, "doc": "report"}
        with pytest.raises(InvalidRunState):
            h.send_event(rid, "approve", {"ok": False})  # the run is over
        h.advance(7200)  # the wait's deadline check comes and finds nothing to do
        assert h.status(rid) == "SUCCEEDED"


def test_event_delivered_before_the_wait_is_buffered_and_consumed() -> None:
    with harness(approval, backend="moto") as h:
        rid = h.start("approval", "early")
        assert h.send_event(rid, "approve", "yes") == "buffered"  # prepare has not even run
        with pytest.raises(InvalidRunState):
            h.send_event(rid, "approve", "again")  # one delivery per event
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        assert h.output(rid) == {"published": "yes", "doc": "early"}
        assert h.executions == Counter({"prepare": 1, "publish": 1})


def test_event_wait_times_out_and_fails_the_run() -> None:
    with harness(approval, backend="moto") as h:
        rid = h.start("approval", "late")
        h.run()
        assert h.status(rid) == "WAITING"
        h.advance(3599)
        assert h.status(rid) == "WAITING"
        h.advance(2)
        assert h.status(rid) == "FAILED"
        assert error_type(h, rid) == "EventTimeout"
        assert h.executions["publish"] == 0
        with pytest.raises(InvalidRunState):
            h.send_event(rid, "approve", "too late")


def test_unknown_event_name_is_rejected() -> None:
    with harness(approval, backend="memory") as h:
        rid = h.start("approval", "x")
        with pytest.raises(EventNotFound):
            h.send_event(rid, "no-such-event", 1)


# ======================================================================= sleep
napper = Workflow("napper")


@napper.step()
def before_nap(ctx: StepContext, x: Any) -> dict[str, Any]:
    return {"x": x, "at": now_ms()}


napper.sleep(7200)


@napper.step()
def after_nap(ctx: StepContext, state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "woke": now_ms()}


def test_two_hour_sleep_passes_in_virtual_time() -> None:
    with harness(napper, backend="moto") as h:
        rid = h.start("napper", 1)
        t0 = h.clock.now_ms()
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        out = h.output(rid)
        assert out["x"] == 1  # the sleep's output is its input
        assert out["woke"] - out["at"] >= 2 * HOUR_MS
        assert h.clock.now_ms() - t0 >= 2 * HOUR_MS
        sleep_node = h.view(rid).nodes[1]
        assert (sleep_node.kind, sleep_node.status) == ("sleep", "SUCCEEDED")
        assert all(i.elapsed_ms < 1000 for i in h.invocations)  # nobody was billed for the sleep


# ======================================================================= map
fan = Workflow("fan")


@fan.step()
def split(ctx: StepContext, sizes: list[int]) -> list[dict[str, int]]:
    return [{"i": i, "parts": p} for i, p in enumerate(sizes)]


@fan.map(max_concurrency=2, timeout_s=3)
def work(ctx: StepContext, item: dict[str, int]) -> int:
    assert ENV.h is not None
    live = [
        n.key
        for n in ENV.h.store.list_nodes(ctx.run_id, "work#")
        if n.status in (NodeStatus.RUNNING, NodeStatus.CONTINUING, NodeStatus.RETRYING)
    ]
    ENV.log.append(("in_flight", live))

    def part(p: int) -> int:
        spend(900)  # items of several parts continue in fresh invocations, so items interleave
        return p

    ctx.each(list(range(item["parts"])), part)
    return item["i"] * 10 + item["parts"]


def test_map_respects_max_concurrency_and_fans_in_in_input_order() -> None:
    sizes = [1, 4, 2, 1, 3, 1, 4, 2]
    with harness(fan, backend="memory") as h:
        rid = h.start("fan", sizes)
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        in_flight = [live for tag, live in ENV.log if tag == "in_flight"]
        assert max(len(live) for live in in_flight) == 2, in_flight  # reached, never passed
        finish_order = [i.key for i in h.invocations if i.key.startswith("work#") and i.outcome == "DONE"]
        assert finish_order != sorted(finish_order)  # items finished out of order...
        assert h.output(rid) == [i * 10 + p for i, p in enumerate(sizes)]  # ...yet fan-in keeps input order
        assert all(h.executions[f"work#{i:05d}"] == 1 for i in range(len(sizes)))
        parent = h.view(rid).nodes[1]
        assert (parent.kind, len(parent.items)) == ("map", len(sizes))


# ======================================================================= retries
retrying = Workflow("retrying")


@retrying.step(retry=RetryPolicy(max_attempts=4, backoff_s=2.0, backoff_rate=3.0))
def flaky(ctx: StepContext, fail_times: int) -> str:
    ENV.log.append(("attempt", (ctx.attempt, now_ms(), ctx.idempotency_key)))
    ctx.record_cost(usd=0.01)
    spend(100)
    if ctx.attempt <= fail_times:
        raise RetryableError(f"transient #{ctx.attempt}")
    return f"ok after {ctx.attempt}"


def attempts_log() -> list[tuple[int, int, str]]:
    return [v for tag, v in ENV.log if tag == "attempt"]


def test_retryable_error_is_retried_with_backoff_in_virtual_time() -> None:
    with harness(retrying, backend="moto") as h:
        rid = h.start("retrying", 2)
        h.run()
        assert h.status(rid) == "SUCCEEDED" and h.output(rid) == "ok after 3"
        log = attempts_log()
        assert [a for a, _, _ in log] == [1, 2, 3]
        starts = [t for _, t, _ in log]
        # each retry waits backoff_s * rate^(n-1) after the failed attempt ended (it worked 100 ms)
        assert [b - a for a, b in itertools.pairwise(starts)] == [100 + 2000, 100 + 6000]
        assert {k for _, _, k in log} == {f"{rid}:flaky"}  # stable across attempts
        node = h.view(rid).nodes[0]
        assert [e["outcome"] for e in node.history] == ["retrying", "retrying", "succeeded"]
        assert node.attempts == 3
        assert node.cost_usd == pytest.approx(0.03)  # failed attempts' spend is in the ledger too
        assert node.duration_ms == 300


def test_retries_exhausted_fail_the_run_with_the_last_error() -> None:
    with harness(retrying, backend="moto") as h:
        rid = h.start("retrying", 99)
        h.run()
        assert h.status(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "RetryableError"
        assert err["message"].startswith("gave up after 4 attempts") and "transient #4" in err["message"]
        starts = [t for _, t, _ in attempts_log()]
        assert [b - a for a, b in itertools.pairwise(starts)] == [2100, 6100, 18100]
        assert h.view(rid).nodes[0].status == "FAILED"


plain = Workflow("plain")


@plain.step(retry=RetryPolicy(max_attempts=2, backoff_s=5.0))
def divide(ctx: StepContext, x: int) -> float:
    ENV.log.append(("attempt", (ctx.attempt, now_ms(), "")))
    if x == 0:
        raise TerminalError("x must not be 0")
    if x < 0:
        ctx.record_cost(usd=-1.0)  # misuse: a ValidationError, terminal like TerminalError
    return 1 / (x - 1)  # x == 1: ZeroDivisionError, an ordinary (retried) exception


@plain.step()
def after_divide(ctx: StepContext, y: float) -> float:
    return y


@pytest.mark.parametrize(
    ("x", "etype", "attempts", "backend"),
    [(1, "ZeroDivisionError", 2, "moto"), (0, "TerminalError", 1, "memory"), (-1, "ValidationError", 1, "memory")],
)
def test_plain_exceptions_are_retried_terminal_errors_are_not(x: int, etype: str, attempts: int, backend: str) -> None:
    with harness(plain, backend=backend) as h:
        rid = h.start("plain", x)
        h.run()
        assert h.status(rid) == "FAILED"
        assert error_type(h, rid) == etype
        log = attempts_log()
        assert [a for a, _, _ in log] == list(range(1, attempts + 1))
        if attempts == 2:
            assert log[1][1] - log[0][1] == 5000
        assert h.executions["after_divide"] == 0
        node = h.view(rid).nodes[0]
        assert [e["outcome"] for e in node.history] == ["retrying"] * (attempts - 1) + ["failed"]


def test_successful_run_of_the_same_workflow() -> None:
    with harness(plain, backend="memory") as h:
        rid = h.start("plain", 3)
        h.run()
        assert h.output(rid) == 0.5


# ======================================================================= redrive
fragile = Workflow("fragile")


@fragile.step()
def load(ctx: StepContext, n: int) -> dict[str, int]:
    ENV.calls["load"] += 1
    return {"n": n}


@fragile.step(retry=RetryPolicy(max_attempts=1))
def check(ctx: StepContext, doc: dict[str, int]) -> dict[str, int]:
    ENV.calls["check"] += 1
    if ENV.flags.get("broken"):
        raise RuntimeError("dependency down")
    if doc["n"] < 0:
        raise TerminalError("n must be >= 0")
    return {"n2": doc["n"] * 2}


@fragile.step()
def report(ctx: StepContext, doc: dict[str, int]) -> str:
    ENV.calls["report"] += 1
    return f"n2={doc['n2']}"


def test_redrive_after_fixing_the_cause_skips_completed_steps() -> None:
    with harness(fragile, backend="moto") as h:
        ENV.flags["broken"] = True
        rid = h.start("fragile", 4)
        h.run()
        assert h.status(rid) == "FAILED" and ENV.calls == Counter({"load": 1, "check": 1})
        with pytest.raises(InvalidRunState):
            h.engine.cancel(rid)  # a failed run is not active
        ENV.flags["broken"] = False
        run = h.engine.redrive(rid)
        assert run.status is RunStatus.RUNNING and run.redrives == 1 and run.error is None
        h.run()
        assert h.status(rid) == "SUCCEEDED" and h.output(rid) == "n2=8"
        assert ENV.calls == Counter({"load": 1, "check": 2, "report": 1})
        assert h.engine.get_run(rid).redrives == 1
        with pytest.raises(InvalidRunState):
            h.engine.redrive(rid)  # only FAILED runs


def test_redrive_with_replaced_input() -> None:
    with harness(fragile, backend="moto") as h:
        rid = h.start("fragile", -3)
        h.run()
        assert h.status(rid) == "FAILED" and error_type(h, rid) == "TerminalError"
        h.engine.redrive(rid, input={"n": 5}, replace_input=True)
        h.run()
        assert h.status(rid) == "SUCCEEDED" and h.output(rid) == "n2=10"
        assert ENV.calls == Counter({"load": 1, "check": 2, "report": 1})
        assert h.engine.output_of(rid, "load") == {"n": -3}  # the completed step's checkpoint is untouched


lanes = Workflow("lanes")


@lanes.step()
def numbers(ctx: StepContext, n: int) -> list[int]:
    return list(range(n))


@lanes.map(max_concurrency=2)
def scale(ctx: StepContext, i: int) -> int:
    ENV.calls[f"scale{i}"] += 1
    if i == 2 and ENV.flags.get("broken"):
        raise TerminalError("bad item")
    return i * 10


def test_redrive_of_a_failed_map_item_finishes_its_lane_and_the_fan_in() -> None:
    with harness(lanes, backend="memory") as h:
        ENV.flags["broken"] = True
        rid = h.start("lanes", 7)
        h.run()
        assert h.status(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and err["node"] == "scale#00002"
        assert ENV.calls["scale4"] == ENV.calls["scale6"] == 0  # the failed item's lane stopped
        ENV.flags["broken"] = False
        h.engine.redrive(rid)
        h.run()
        assert h.output(rid) == [i * 10 for i in range(7)]
        assert ENV.calls == Counter({f"scale{i}": 2 if i == 2 else 1 for i in range(7)})


def test_non_json_output_fails_the_run_without_retries() -> None:
    wf = Workflow("bad-output")

    @wf.step()
    def returns_a_set(ctx: StepContext, x: Any) -> Any:
        ENV.calls["returns_a_set"] += 1
        return {1, 2}

    with harness(wf, backend="memory") as h:
        rid = h.start("bad-output")
        h.run()
        assert h.status(rid) == "FAILED" and error_type(h, rid) == "PayloadError"
        assert ENV.calls["returns_a_set"] == 1


# ======================================================================= cancel
gated = Workflow("gated")


@gated.step()
def first(ctx: StepContext, x: Any) -> Any:
    if ENV.flags.get("cancel_from_inside"):
        assert ENV.h is not None
        ENV.h.engine.cancel(ctx.run_id)  # an API call while this step runs
    return x


gated.sleep(3600)


@gated.step()
def later(ctx: StepContext, x: Any) -> Any:
    ENV.calls["later"] += 1
    return x


def test_cancel_during_a_sleep_stops_the_run() -> None:
    with harness(gated, backend="moto") as h:
        rid = h.start("gated", 1)
        h.run(until_ms=h.clock.now_ms() + 60_000)
        assert h.status(rid) == "RUNNING"
        run = h.engine.cancel(rid)
        assert run.status is RunStatus.CANCELLED and run.ended_ms is not None
        h.run()
        h.advance(2 * 3600)
        assert h.status(rid) == "CANCELLED"
        assert ENV.calls["later"] == 0 and h.executions["later"] == 0
        statuses = {n.key: n.status for n in h.view(rid).nodes}
        assert statuses == {"first": "SUCCEEDED", "sleep_1": "CANCELLED", "later": "CANCELLED"}
        with pytest.raises(InvalidRunState):
            h.engine.cancel(rid)


def test_cancel_while_a_step_runs_lets_it_finish_but_nothing_follows() -> None:
    with harness(gated, backend="memory") as h:
        ENV.flags["cancel_from_inside"] = True
        rid = h.start("gated", 2)
        h.run()
        h.advance(2 * 3600)
        assert h.status(rid) == "CANCELLED"
        assert h.executions["first"] == 1 and ENV.calls["later"] == 0
        assert h.engine.output_of(rid, "first") == 2


def test_cancel_of_a_finished_run_is_invalid() -> None:
    with harness(gated, backend="memory") as h:
        rid = h.start("gated", 3)
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        with pytest.raises(InvalidRunState):
            h.engine.cancel(rid)
        assert h.status(rid) == "SUCCEEDED"


# ======================================================================= idempotent start
def test_start_with_the_same_idempotency_key_returns_the_same_run() -> None:
    with harness(approval, backend="moto") as h:
        rid = h.start("approval", "doc", idempotency_key="req-1")
        assert h.start("approval", "doc", idempotency_key="req-1") == rid
        h.run()
        assert h.start("approval", "doc", idempotency_key="req-1") == rid
        h.run()
        assert h.executions == Counter({"prepare": 1})
        with pytest.raises(IdempotencyConflict):
            h.start("approval", "another doc", idempotency_key="req-1")
        other = h.start("approval", "doc", idempotency_key="req-2")
        assert other != rid
        assert len(h.store.list_runs("approval").runs) == 2


def test_start_lost_before_handoff_is_recovered_by_retry() -> None:
    with harness(approval, backend="moto") as h:
        h.crash_at("before_handoff", node="prepare")
        with pytest.raises(InjectedCrash):
            h.start("approval", "doc", idempotency_key="req-9")
        # the run exists, but its first activation was never sent
        assert h.run() == "RUNNING" and h.invocations == []
        rid = h.start("approval", "doc", idempotency_key="req-9")  # the client retries
        h.run()
        assert h.status(rid) == "WAITING" and h.executions == Counter({"prepare": 1})
        assert len(h.store.list_runs("approval").runs) == 1


# ======================================================================= claim-check
big = Workflow("big")


@big.step(timeout_s=30)
def produce(ctx: StepContext, n: int) -> str:
    return "x" * n


@big.step(timeout_s=30)
def consume(ctx: StepContext, text: str) -> dict[str, Any]:
    return {"len": len(text), "head": text[:3]}


def test_ten_megabyte_output_goes_through_s3_and_items_stay_small() -> None:
    size = 10 * 1024 * 1024
    with harness(big, backend="moto") as h:
        rid = h.start("big", size)
        h.run()
        assert h.output(rid) == {"len": size, "head": "xxx"}
        produced = h.view(rid).nodes[0]
        assert produced.offloaded and produced.output_bytes == size + 2
        rec = h.store.get_node(rid, "produce")
        assert rec is not None and rec.output_ref is not None
        ref = json.loads(rec.output_ref)
        s3 = h.blobs.client  # type: ignore[attr-defined]
        head = s3.head_object(Bucket=h.blobs.bucket, Key=h.blobs.prefix + ref["blob"])  # type: ignore[attr-defined]
        assert head["ContentLength"] == size + 2
        ddb = h.store.client  # type: ignore[attr-defined]
        items = ddb.query(
            TableName=h.store.table,  # type: ignore[attr-defined]
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"RUN#{rid}"}},
        )["Items"]
        assert len(items) >= 3
        assert max(len(json.dumps(i)) for i in items) < 2048  # DynamoDB items stay tiny (limit: 400 KB)


# ======================================================================= version pinning
def versioned(version: str, suffix: str) -> Workflow:
    wf = Workflow("pinned", version=version)

    @wf.step()
    def stage_one(ctx: StepContext, x: str) -> str:
        return x + suffix

    @wf.step()
    def stage_two(ctx: StepContext, x: str) -> str:
        return x + suffix

    return wf


def test_run_stays_on_its_version_and_a_worker_without_it_fails_the_run_naming_it() -> None:
    v1, v2 = versioned("1", "-a"), versioned("2", "-b")
    with harness(v1, backend="memory") as h:
        rid = h.start("pinned", "x")
        assert h.engine.get_run(rid).version == "1"
        # a deployment that only knows the newer version gets this run's activation
        worker = Engine(Registry([v2]), h.store, h.codec, h.handoff, clock=h.clock)
        popped = h.handoff.pop()
        assert popped is not None
        msg = popped[1]
        out = worker.process(msg, VirtualLambdaContext(h.clock, 5000, "new-deploy"))
        assert out.kind is OutcomeKind.FAILED and out.error is not None  # no exception: no redelivery loop
        assert out.error["type"] == "VersionNotRegistered" and "'1'" in out.error["message"]
        run = h.engine.get_run(rid)
        assert run.status is RunStatus.FAILED and run.error == out.error
        view = describe(worker.store, worker.registry, run)  # its ledger still reads, from the records
        assert [(n.key, n.kind, n.status) for n in view.nodes] == [("stage_one", "step", "FAILED")]
        # the old deployment (which now also knows v2) redrives it: it finishes on v1
        h.registry.register(v2)
        h.engine.redrive(rid)
        h.run()
        assert h.output(rid) == "x-a-a"
        new_run = h.start("pinned", "y")
        h.run()
        assert h.engine.get_run(new_run).version == "2" and h.output(new_run) == "y-b-b"


# ======================================================================= output_of and costs
ledgered = Workflow("ledgered")


@ledgered.step()
def research(ctx: StepContext, topics: list[str]) -> list[str]:
    ctx.record_cost(usd=0.25, input_tokens=1000, output_tokens=200)
    return topics


@ledgered.map()
def write(ctx: StepContext, topic: str) -> str:
    ctx.record_cost(usd=0.125, input_tokens=300, output_tokens=50)
    ctx.record_cost(usd=0.0005, output_tokens=1)
    return topic.title()


@ledgered.step()
def combine(ctx: StepContext, written: list[str]) -> dict[str, Any]:
    with pytest.raises(StepNotFound):
        ctx.output_of("combine")  # itself: not completed yet
    return {"topics": ctx.output_of("research"), "written": written, "again": ctx.output_of("write")}


def test_output_of_and_recorded_costs_add_up() -> None:
    with harness(ledgered, backend="moto") as h:
        rid = h.start("ledgered", ["a", "b", "c"])
        h.run()
        assert h.output(rid) == {"topics": ["a", "b", "c"], "written": ["A", "B", "C"], "again": ["A", "B", "C"]}
        with pytest.raises(StepNotFound):
            h.engine.output_of(rid, "nope")
        view = h.view(rid)
        t = view.totals
        assert t["cost_usd"] == pytest.approx(0.25 + 3 * 0.1255)
        assert (t["input_tokens"], t["output_tokens"]) == (1000 + 3 * 300, 200 + 3 * 51)
        by_key = {n.key: n for n in view.nodes}
        assert by_key["research"].cost_usd == pytest.approx(0.25)
        assert by_key["write"].cost_usd == pytest.approx(3 * 0.1255)  # the map node sums its items
        assert [i.cost_usd for i in by_key["write"].items] == [pytest.approx(0.1255)] * 3
        assert by_key["combine"].cost_usd == 0


# ======================================================================= delivery amplification
def test_duplicate_delivery_costs_activations_linear_in_chain_length() -> None:
    """With every message delivered twice, a duplicate served from its checkpoint must not send the
    successor again while the original's successor message is still in flight; otherwise the copies
    double at every step (2^(n+1) - 2 activations for an n-step chain)."""
    n = 10
    chain = Workflow("chain")
    for i in range(n):
        chain.step(name=f"s{i}")(lambda ctx, x: x + 1)
    with harness(chain, backend="memory", duplicate_delivery=True) as h:
        rid = h.start("chain", 0)
        h.run()
        delivered = len(h.invocations)
        assert h.output(rid) == n
        assert delivered <= 4 * n, f"{delivered} activations for {n} steps"
