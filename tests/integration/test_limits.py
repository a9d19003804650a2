"""Concurrency and rate limits by key (issue 19; stepchain.engine.limits), on every harness, in virtual time.

The harnesses serve one invocation at a time, so holders of a concurrency key overlap here through
dead holders (a worker killed with its slot held keeps it until its lease ends): the workflow counts
its own holders, live ones inside the step and dead ones until their node's lease ends, and never
sees more than the limit. Real overlap on threads: tests/integration/test_limits_threads.py.
Every harness runs the acceptance line's 50 runs with duplicate delivery in make test (15-30 s a
case on the moto transports); delivered once, on them, with --exhaustive (make test-full).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest

from stepchain import StepContext, Workflow
from stepchain.define.flow import Concurrency, RateLimit
from stepchain.engine import limits
from stepchain.exceptions import RetryableError, ValidationError
from stepchain.testing import Harness, InjectedCrash, SfnHarness, SqsHarness

HARNESSES: dict[str, tuple[Callable[..., Harness], int]] = {
    "memory": (lambda *wfs, **kw: Harness(*wfs, backend="memory", **kw), 50),
    "moto": (lambda *wfs, **kw: Harness(*wfs, backend="moto", **kw), 50),
    "sqs": (lambda *wfs, **kw: SqsHarness(*wfs, **kw), 50),
    "sfn": (lambda *wfs, **kw: SfnHarness(*wfs, **kw), 50),
}
LIMIT = 3
#: the acceptance line's runs sharing the key
FULL = 50


class Holders:
    """The workflow's own count: at each step's start, holders = itself + dead holders whose lease
    has not ended (a dead holder's slot is leased with its node)."""

    def __init__(self) -> None:
        self.dead_until: list[int] = []
        self.most = 0
        self.entries: list[int] = []
        self.starts: dict[int, list[int]] = {}  # input n -> its step's start times

    def enter(self, ctx: StepContext, n: int) -> int:
        now = ctx._services.clock.now_ms()
        rec = ctx._services.store.get_node(ctx.run_id, ctx.key)
        assert rec is not None
        self.most = max(self.most, 1 + sum(1 for until in self.dead_until if until >= now))
        self.entries.append(now)
        self.starts.setdefault(n, []).append(now)
        return rec.lease_until_ms


H = Holders()
CRASH: set[int] = set()  # inputs ``n`` whose first holder dies with its slot held
limited = Workflow("limited")


@limited.step(timeout_s=10, limits=Concurrency(LIMIT, key=lambda ctx, x: x["model"], name="model", poll_s=5))
def call_model(ctx: StepContext, x: dict[str, Any]) -> dict[str, Any]:
    lease = H.enter(ctx, x["n"])
    time.sleep(2)  # virtual: the call takes 2 s
    if x["n"] in CRASH:
        CRASH.discard(x["n"])
        H.dead_until.append(lease)
        raise InjectedCrash("the worker dies: no handler runs, its slot stays held")
    return x


@limited.step()
def after(ctx: StepContext, x: dict[str, Any]) -> int:
    return int(x["n"])


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    global H
    H = Holders()
    CRASH.clear()
    yield
    CRASH.clear()


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_fifty_runs_on_a_key_of_three_never_have_more_than_three_holders_with_dead_holders_and_duplicates(
    kind: str,
) -> None:
    """The acceptance line: 50 runs, every message delivered twice, the first three holders die with
    their slots held (15-30 s a case on the moto transports)."""
    holders_with_dead_holders(kind, True, HARNESSES[kind][1])


@pytest.mark.exhaustive
@pytest.mark.parametrize("kind", [k for k in HARNESSES if k != "memory"])
def test_fifty_runs_on_a_key_of_three_delivered_once(kind: str) -> None:
    """The same, each message once (--exhaustive, make test-full; make test runs it in memory)."""
    holders_with_dead_holders(kind, False, FULL)


def test_fifty_runs_on_a_key_of_three_delivered_once_in_memory() -> None:
    holders_with_dead_holders("memory", False, FULL)


def holders_with_dead_holders(kind: str, dup: bool, runs: int) -> None:
    make = HARNESSES[kind][0]
    CRASH.update(range(LIMIT))  # the first three holders die: the key is full of dead holders
    with make(limited, duplicate_delivery=dup) as h:
        ids = [h.start("limited", {"model": "m1", "n": i}) for i in range(runs)]
        h.run()
        statuses = Counter(h.status(r) for r in ids)
        assert statuses == {"SUCCEEDED": runs}, statuses
        assert [h.output(r) for r in ids] == list(range(runs))
        assert 1 <= H.most <= LIMIT
        assert len(H.dead_until) == LIMIT  # the dead holders' slots came back when their leases ended
        if kind != "sfn":  # SfnHarness moves its clock past a dead invocation's lease at once (its retry interval)
            assert any(i.outcome == "WAIT" for i in h.invocations), "the limit never throttled"
        left = h.store.slot_holders("LIMIT#model#m1")
        assert all(until < h.clock.now_ms() for until in left.values())  # no live slot leaked


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_steps_wait_while_other_workers_hold_every_slot(kind: str) -> None:
    """Three live holders elsewhere (another deployment sharing the key) hold the key for 30 s: no
    step starts before their leases end, and every run's step waits without a running Lambda."""
    make, _ = HARNESSES[kind]
    with make(limited) as h:
        now = h.clock.now_ms()
        for i in range(LIMIT):
            assert h.store.acquire_slot("LIMIT#model#m4", f"elsewhere-{i}", LIMIT, now + 30_000, now).acquired
        ids = [h.start("limited", {"model": "m4", "n": i}) for i in range(4)]
        h.run()
        assert [h.status(r) for r in ids] == ["SUCCEEDED"] * 4
        assert min(H.entries) > now + 30_000
        assert sum(1 for i in h.invocations if i.outcome == "WAIT") >= 4


def test_a_throttled_step_is_visible_with_its_key_and_expected_start() -> None:
    CRASH.update(range(LIMIT))
    with Harness(limited) as h:
        ids = [h.start("limited", {"model": "m2", "n": i}) for i in range(LIMIT + 1)]
        h.run(max_activations=LIMIT + 1)  # three holders die, the fourth is throttled
        view = h.view(ids[LIMIT])
        node = next(n for n in view.nodes if n.node == "call_model")
        assert node.throttled is not None and node.throttled["key"] == "m2" and node.throttled["limit"] == "model"
        assert node.throttled["until_ms"] > h.clock.now_ms()
        assert node.attempts == 1  # a throttled activation is no attempt
        from stepchain.observe.timeline import render_text

        assert "throttled" in render_text(view)
        h.run()
        assert [h.status(r) for r in ids] == ["SUCCEEDED"] * (LIMIT + 1)


def test_a_step_without_limits_makes_no_limit_request() -> None:
    free = Workflow("free-steps")
    free.step(name="one")(lambda ctx, x: x)
    with Harness(free, backend="moto") as h:
        h.start("free-steps", 1)
        h.run()
        n_free = sum(h.api_calls.values())
    lim = Workflow("limited-steps")
    lim.step(name="one", limits=Concurrency(2, name="c"))(lambda ctx, x: x)
    with Harness(lim, backend="moto") as h:
        h.start("limited-steps", 1)
        h.run()
        assert sum(h.api_calls.values()) == n_free + 2  # acquire + release: the 2 extra calls


def test_a_step_with_three_limits_takes_and_gives_them_back_in_two_requests() -> None:
    """A concurrency limit (the workflow's), a request and an unestimated token limit (the step's): ONE
    transaction admits the step, ONE gives the slot back and charges the tokens; limits hold as one by one."""

    def tokens(ctx: StepContext, x: int) -> int:
        ctx.record_cost(input_tokens=70, output_tokens=30)
        return x + 1

    def chain(n: int) -> Workflow:
        wf = Workflow(f"three-limits-{n}", limits=Concurrency(5, name=f"tenant{n}"))
        rpm, tpm = RateLimit(10**6, per_s=60, name=f"rpm{n}"), RateLimit(10**8, per_s=60, unit="tokens", name=f"tpm{n}")
        for i in range(n):
            wf.step(name=f"s{i}", limits=(rpm, tpm))(tokens)
        return wf

    counts = []
    for n in (2, 6):
        with Harness(chain(n), backend="moto") as h:
            h.start(f"three-limits-{n}", 0)
            assert h.run() == "SUCCEEDED"
            counts.append(Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")}))
            assert h.store.slot_holders(f"LIMIT#tenant{n}#*") == {}  # every slot given back
            # the token bucket was charged what the steps used: 100 tokens a step, 0.6 us a token
            tat, now_us = h.store.bucket_tat(f"LIMIT#tpm{n}#*"), h.clock.now_ms() * 1000
            assert tat is not None and tat - now_us == n * 60
    per_step = {k: (counts[1][k] - counts[0][k]) / 4 for k in counts[1] | counts[0]}
    # the claim and the checkpoint, then the limits' admission and release
    assert per_step == {"dynamodb.UpdateItem": 2.0, "dynamodb.TransactWriteItems": 2.0}, per_step


# -- rate limits ----------------------------------------------------------------------------------
STARTS: list[tuple[int, int]] = []  # (virtual ms, units) of each admitted step
rpm = Workflow("rpm-limited")
for name in ("a", "b", "c", "d"):

    def call(ctx: StepContext, x: int) -> int:
        STARTS.append((ctx._services.clock.now_ms(), 1))
        return x

    rpm.step(name=name, limits=RateLimit(60, per_s=60, key=lambda ctx, x: "provider", name="rpm"))(call)


def windows(starts: list[tuple[int, int]], width_ms: int) -> int:
    """The most units that started in any window of ``width_ms`` (each window opens at a start)."""
    times = sorted(starts)
    return max(sum(u for t, u in times if t0 <= t < t0 + width_ms) for t0, _ in times)


@pytest.mark.parametrize("kind", ["memory", "sqs"])
def test_sixty_a_minute_over_five_minutes_within_five_percent_and_never_over(kind: str) -> None:
    STARTS.clear()
    make, _ = HARNESSES[kind]
    runs = 100 if kind == "memory" else 10  # SQS on moto: 40 requests (40 s), to keep it quick
    with make(rpm) as h:
        t0 = h.clock.now_ms()
        ids = [h.start("rpm-limited", i) for i in range(runs)]
        h.run(until_ms=t0 + 300_000)
        in_five = [s for s in STARTS if s[0] < t0 + 300_000]
        expected = min(300, 4 * runs)
        assert 0.95 * expected <= len(in_five) <= expected, len(in_five)
        assert windows(STARTS, 60_000) <= 60
        h.run()
        assert Counter(h.status(r) for r in ids) == {"SUCCEEDED": runs}
        assert len(STARTS) == 4 * runs


def test_a_rate_limited_step_waits_in_a_step_functions_wait_state() -> None:
    """SfnHarness runs executions to their end (no ``until_ms``): 5 runs of 4 steps at 1 a second. Its
    executions share one virtual clock that each Wait state moves forward, so a step may wake late: a
    reservation used up to 1 s late still counts (one more in a window), a later one is taken again."""
    STARTS.clear()
    with SfnHarness(rpm) as h:
        ids = [h.start("rpm-limited", i) for i in range(5)]
        h.run()
        assert [h.status(r) for r in ids] == ["SUCCEEDED"] * 5
    assert len(STARTS) == 20
    assert windows(STARTS, 10_000) <= 11
    assert windows(STARTS, 5_000) <= 6


def _token_workflow(name: str, estimate: int, usage: Callable[[], int], steps: int = 10) -> Workflow:
    """Each run: ``steps`` LLM calls in a chain, sharing one TPM key (100 runs x 1 step would do the
    same; fewer runs keep the unestimated case's re-checks, one per waiting run per start, cheap)."""
    wf = Workflow(name)
    lim = RateLimit(6_000, per_s=60, unit="tokens", estimate=estimate, key=lambda ctx, x: "llm", name=f"tpm-{name}")
    for i in range(steps):

        def think(ctx: StepContext, x: int) -> int:
            used = usage()
            ctx.record_cost(input_tokens=used // 2, output_tokens=used - used // 2)
            STARTS.append((ctx._services.clock.now_ms(), used))
            return x

        wf.step(name=f"think{i}", limits=lim)(think)
    return wf


@pytest.mark.parametrize("estimate", [100, 0], ids=["estimated", "unestimated"])
def test_a_token_limit_charged_by_recorded_usage_holds(estimate: int) -> None:
    STARTS.clear()
    wf = _token_workflow(f"tpm-{estimate}", estimate, lambda: 100)
    with Harness(wf) as h:
        t0 = h.clock.now_ms()
        ids = [h.start(wf.name, i) for i in range(40)]  # 400 calls of 100 tokens: 6.7 minutes at 6,000/min
        h.run(until_ms=t0 + 300_000)
        tokens = sum(u for t, u in STARTS if t < t0 + 300_000)
        assert 0.95 * 30_000 <= tokens <= 30_000, tokens
        assert windows(STARTS, 60_000) <= 6_000
        h.run()
        assert Counter(h.status(r) for r in ids) == {"SUCCEEDED": 40}
        assert sum(u for _, u in STARTS) == 40_000


@pytest.mark.parametrize("alone", [True, False], ids=["token-limit", "with-a-slot"])
def test_a_fresh_worker_that_guessed_nothing_still_waits_for_a_busy_token_bucket(alone: bool) -> None:
    """Every Lambda container starts with no guess of a bucket's state: an unestimated token limit is
    tested by a write, never assumed idle (steps of several runs, the guesses forgotten before each)."""
    STARTS.clear()
    wf = Workflow(f"tpm-fresh-{int(alone)}", limits=() if alone else Concurrency(5, name=f"fresh-slot-{alone}"))
    lim = RateLimit(600, per_s=60, unit="tokens", name=f"tpm-fresh-{alone}")  # 100 ms a token

    @wf.step(limits=lim)
    def think(ctx: StepContext, x: int) -> int:
        STARTS.append((ctx._services.clock.now_ms(), 300))
        ctx.record_cost(input_tokens=300)  # 30 s of the bucket
        return x

    with Harness(wf) as h:
        for i in range(4):
            h.start(wf.name, i)
        while (head := h.handoff.peek()) is not None:
            limits._seen.clear()  # a new container serves each activation
            h.run(max_activations=1)
            assert head is not None
    assert len(STARTS) == 4
    assert [b - a >= 30_000 for (a, _), (b, _) in pairwise(sorted(STARTS))] == [True] * 3, STARTS


def test_a_token_limit_with_varied_usage_stays_within_one_step_of_the_limit() -> None:
    """Without an estimate, a throttled step asks again at its expected start (no reservation): each
    start sees every earlier step's recorded usage, so no window holds more than the limit + one step."""
    STARTS.clear()
    rng = random.Random(19)
    sizes = [rng.randint(50, 150) for _ in range(400)]
    wf = _token_workflow("tpm-varied", 0, lambda: sizes[len(STARTS)])
    with Harness(wf) as h:
        t0 = h.clock.now_ms()
        for i in range(40):
            h.start(wf.name, i)
        h.run(until_ms=t0 + 300_000)
        tokens = sum(u for t, u in STARTS if t < t0 + 300_000)
        assert 0.95 * 30_000 <= tokens <= 30_000 + max(sizes), tokens
        assert windows(STARTS, 60_000) <= 6_000 + max(sizes)


def test_a_providers_429_slows_the_whole_key() -> None:
    STARTS.clear()
    wf = Workflow("rate-429")
    seen: list[int] = []

    @wf.step(limits=RateLimit(600, per_s=60, key=lambda ctx, x: "p", name="p429"))
    def call(ctx: StepContext, x: int) -> int:
        now = ctx._services.clock.now_ms()
        seen.append(now)
        if x == 0 and ctx.attempt == 1:
            raise RetryableError("429 from the provider", retry_after_s=30)
        return x

    with Harness(wf) as h:
        t0 = h.clock.now_ms()
        h.start("rate-429", 0)
        h.run()  # run 0 got a 429: the key is held for 30 s
        ids = [h.start("rate-429", i) for i in range(1, 4)]
        h.run()
        assert all(h.status(r) == "SUCCEEDED" for r in ids)
        assert min(seen[1:]) >= t0 + 30_000  # the other runs waited for the key, not just run 0


def test_bad_limits_are_refused_when_declared() -> None:
    with pytest.raises(ValidationError):
        Concurrency(0)
    with pytest.raises(ValidationError):
        RateLimit(10, unit="requests", estimate=5)
    with pytest.raises(ValidationError):
        Workflow("bad-limits").step(limits=["not a limit"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        Concurrency(1, name="bad name!")


def test_one_limit_name_with_two_sets_of_numbers_is_refused_when_registered() -> None:
    """The numbers live in the code, not with the key: two workflows of one deployment declaring "rpm"
    as 60 and as 600 a minute would each enforce their own on one bucket. Refused; the same numbers
    (another key function, another poll) are one limit shared."""
    a, b, c = Workflow("shares-a"), Workflow("shares-b"), Workflow("shares-c")
    a.step(name="s", limits=RateLimit(60, per_s=60, name="shared-rpm"))(lambda ctx, x: x)
    b.step(name="s", limits=RateLimit(600, per_s=60, name="shared-rpm"))(lambda ctx, x: x)
    c.step(name="s", limits=RateLimit(60, per_s=60, name="shared-rpm", key=lambda ctx, x: "k"))(lambda ctx, x: x)
    with pytest.raises(
        ValidationError, match=r"limit 'shared-rpm' is RateLimit\(60, .* in workflow 'shares-a' but RateLimit\(600"
    ):
        Harness(a, b)
    with Harness(a, c) as h:
        ids = [h.start("shares-a", 1), h.start("shares-c", 2)]
        h.run()
        assert [h.output(r) for r in ids] == [1, 2]


def test_a_key_function_that_raises_fails_the_step_with_a_message() -> None:
    wf = Workflow("bad-key")
    wf.step(name="one", limits=Concurrency(1, key=lambda ctx, x: x["missing"]))(lambda ctx, x: x)
    with Harness(wf) as h:
        rid = h.start("bad-key", {})
        assert h.run() == "FAILED"
        err = h.view(rid).error or {}
        assert "key function" in err.get("message", "")


def test_a_dead_holders_lease_is_what_brings_its_slot_back() -> None:
    """The takeover of the dead holder's node and a new run's acquire both wait for the same lease."""
    CRASH.update(range(LIMIT))
    with Harness(limited) as h:
        for i in range(LIMIT + 1):
            h.start("limited", {"model": "m3", "n": i})
        h.run()
        lease_end = min(H.dead_until)
        [fourth] = H.starts[LIMIT]  # it found the key full of dead holders
        assert lease_end < fourth <= lease_end + 5_000  # it started within one poll_s of the first lease's end


def test_the_sqs_heartbeat_extends_a_slot_with_its_node_lease() -> None:
    """V = 20 s: a claim's lease (and so its slot's) ends about 19 s out; a 60 s step keeps its slot
    live because each beat extends the slot with the node's lease."""
    from stepchain.engine.heartbeat import HeartbeatPolicy

    seen: list[tuple[int, int]] = []  # (now, the slot's lease end) every 10 s of the step
    wf = Workflow("limited-long")

    @wf.step(timeout_s=900, limits=Concurrency(1, name="long"))
    def slow(ctx: StepContext, x: int) -> int:
        for _ in range(6):
            time.sleep(10)  # virtual
            [until] = ctx._services.store.slot_holders("LIMIT#long#*").values()
            seen.append((ctx._services.clock.now_ms(), until))
        return x

    with SqsHarness(wf, heartbeat=HeartbeatPolicy(visibility_s=20, interval_s=5)) as h:
        rid = h.start("limited-long", 1)
        assert h.run(rid) == "SUCCEEDED"
        assert h.store.slot_holders("LIMIT#long#*") == {}
    assert len(seen) == 6 and all(until > now for now, until in seen)  # never lapsed: extended by each beat
    assert seen[-1][1] > seen[0][1] + 40_000


fleet = Workflow("limited-fleet", limits=Concurrency(2, name="fleet"))  # every step and map item of it
ITEM_STARTS: list[int] = []


@fleet.step()
def split(ctx: StepContext, n: int) -> list[int]:
    ITEM_STARTS.append(ctx._services.clock.now_ms())
    return list(range(n))


@fleet.map()
def square(ctx: StepContext, i: int) -> int:
    ITEM_STARTS.append(ctx._services.clock.now_ms())
    return i * i


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_a_workflows_limits_hold_its_steps_and_map_items(kind: str) -> None:
    ITEM_STARTS.clear()
    make, _ = HARNESSES[kind]
    with make(fleet) as h:
        now = h.clock.now_ms()
        for i in range(2):  # the fleet's key is full for 20 s (another deployment's holders)
            assert h.store.acquire_slot("LIMIT#fleet#*", f"elsewhere-{i}", 2, now + 20_000, now).acquired
        rid = h.start("limited-fleet", 4)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == [0, 1, 4, 9]
        left = h.store.slot_holders("LIMIT#fleet#*")
        assert all(until < h.clock.now_ms() for until in left.values())  # only the ended outside leases
    assert len(ITEM_STARTS) == 5 and min(ITEM_STARTS) > now + 20_000


ORDER: list[int] = []
queued = Workflow("limited-queue")


@queued.step(
    limits=Concurrency(
        1,
        name="queue",
        poll_s=5,
        priority=lambda ctx, x: 60 if x.get("urgent") else 0,  # an urgent run moves a minute ahead
    )
)
def serve_one(ctx: StepContext, x: dict[str, Any]) -> int:
    ORDER.append(int(x["n"]))
    time.sleep(3)  # virtual: holds its slot 3 s
    return int(x["n"])


@pytest.mark.parametrize("dup", [False, True], ids=["once", "duplicates"])
@pytest.mark.parametrize("kind", ["memory", "sqs"])
def test_waiting_steps_start_in_arrival_order_and_priority_moves_one_ahead(kind: str, dup: bool) -> None:
    ORDER.clear()
    make, _ = HARNESSES[kind]
    with make(queued, duplicate_delivery=dup) as h:
        now = h.clock.now_ms()
        # the key (1 slot) is held elsewhere for 10 s: every run queues; a slot goes to the queue's head
        assert h.store.acquire_slot("LIMIT#queue#*", "elsewhere", 1, now + 10_000, now).acquired
        ids = []
        for n in range(8):
            ids.append(h.start("limited-queue", {"n": n, "urgent": n == 5}))
            h.run(max_activations=2 if dup else 1)  # each run queues before the next starts
        h.run()
        assert [h.status(r) for r in ids] == ["SUCCEEDED"] * 8
    assert ORDER == [5, 0, 1, 2, 3, 4, 6, 7]


# -- several limits on one step: taken together in one request, or one by one when one is busy ------
MULTI: list[tuple[int, int]] = []  # (virtual ms, tokens) of each admitted call
multi = Workflow("multi-limited", limits=Concurrency(LIMIT, key=lambda ctx, x: x["model"], name="mm", poll_s=5))


@multi.step(limits=(RateLimit(20, per_s=60, name="mrpm"), RateLimit(2_000, per_s=60, unit="tokens", name="mtpm")))
def call_multi(ctx: StepContext, x: dict[str, Any]) -> int:
    lease = H.enter(ctx, x["n"])
    MULTI.append((ctx._services.clock.now_ms(), x["tokens"]))
    ctx.record_cost(input_tokens=x["tokens"])
    time.sleep(2)
    if x["n"] in CRASH:
        CRASH.discard(x["n"])
        H.dead_until.append(lease)
        raise InjectedCrash("the worker dies holding its slot and its reservations")
    return int(x["n"])


@pytest.mark.parametrize("dup", [False, True], ids=["once", "duplicates"])
@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_a_step_with_three_limits_never_exceeds_any_of_them(kind: str, dup: bool) -> None:
    """Seeded: runs of random token sizes through a step with a key of three, 20 requests and 2,000
    tokens a minute; the first holders die with everything held. No more than three holders, 20 + 1
    (a late reservation) starts or 2,000 + one call's tokens in any minute, and every run finishes."""
    MULTI.clear()
    rng = random.Random(1919)
    runs = 24 if kind == "memory" else 8
    CRASH.update(rng.sample(range(runs), 2))
    make, _ = HARNESSES[kind]
    with make(multi, duplicate_delivery=dup) as h:
        ids = [h.start("multi-limited", {"model": "m", "n": i, "tokens": rng.randint(50, 400)}) for i in range(runs)]
        h.run()
        assert Counter(h.status(r) for r in ids) == {"SUCCEEDED": runs}
        assert [h.output(r) for r in ids] == list(range(runs))
    assert 1 <= H.most <= LIMIT
    assert windows([(t, 1) for t, _ in MULTI], 60_000) <= 21
    assert windows(MULTI, 60_000) <= 2_000 + 400
    assert len(MULTI) == runs + 2  # each dead holder's call ran once more, nothing else twice


# -- priority on a rate key ----------------------------------------------------------------------
PRIO: list[tuple[int, int]] = []  # (virtual ms, priority) of each admitted call
prio = Workflow("rate-priority")


@prio.step(limits=RateLimit(60, per_s=60, name="prio-rpm", priority=lambda ctx, x: x["p"]))
def urgent_or_not(ctx: StepContext, x: dict[str, Any]) -> int:
    PRIO.append((ctx._services.clock.now_ms(), x["p"]))
    return int(x["n"])


@pytest.mark.parametrize(("kind", "dup"), [("memory", False), ("memory", True), ("sqs", True)])
def test_a_rate_keys_higher_priority_steps_start_before_lower_ones_that_wait(kind: str, dup: bool) -> None:
    """Runs of priority 0 queue on a 60/min key (12; 8 on SQS), then some of priority 30 s arrive (4; 3):
    they reserve within their 30 s and start next, before every waiting priority-0 run; the key never
    runs over."""
    PRIO.clear()
    make, _ = HARNESSES[kind]
    n_low, n_high = (12, 4) if kind == "memory" else (8, 3)  # each waiting low run re-asks every second
    with make(prio, duplicate_delivery=dup) as h:
        low = [h.start("rate-priority", {"p": 0, "n": i}) for i in range(n_low)]
        h.run(until_ms=h.clock.now_ms() + 500)  # the first goes, the others wait for the key (1 s)
        high = [h.start("rate-priority", {"p": 30, "n": 100 + i}) for i in range(n_high)]
        h.run()
        assert [h.status(r) for r in low + high] == ["SUCCEEDED"] * (n_low + n_high)
    starts = sorted(PRIO)
    assert len(starts) == n_low + n_high
    order = [p for _, p in starts]
    # the first low run went before the highs came; then every high one before any waiting low one
    assert order[0] == 0 and order[1 : 1 + n_high] == [30] * n_high, order
    # 1 a second; SQS delays are whole seconds, so a reservation may be used late: one more at most
    assert windows([(t, 1) for t, _ in starts], 10_000) <= (10 if kind == "memory" else 11)
