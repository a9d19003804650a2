"""The run ledger (``RunView``) and the restart tax avoided, on whole runs in the Harness.

Steps spend known virtual durations and record known costs, so every expected number is computed
here from first principles: what a naive loop restarting from scratch at each crash would have
spent again (the seconds and dollars of every piece of work finished before the crash).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import StepContext, Workflow
from stepchain.observe.ledger import RunView
from stepchain.testing import Harness

#: AWS Lambda on-demand prices (x86): per GB-second and per request; the functions have 512 MB
GB_SECOND_USD = 0.0000166667
REQUEST_USD = 0.0000002
MEMORY_GB = 512 / 1024

DURATIONS_MS = {"s1": 1000, "s2": 2000, "s3": 3000, "s4": 500}
COSTS_USD = {"s1": 0.01, "s2": 0.02, "s3": 0.03, "s4": 0.04}
ORDER = list(DURATIONS_MS)


class Env:
    h: Harness | None = None


ENV = Env()


def spend(ms: float) -> None:
    assert ENV.h is not None
    ENV.h.clock.advance(ms)


@contextmanager
def harness(*workflows: Workflow, **kwargs: Any) -> Iterator[Harness]:
    kwargs.setdefault("backend", "moto")  # these tests check the DynamoDB adapter's behaviour too
    with Harness(*workflows, **kwargs) as h:
        ENV.h = h
        try:
            yield h
        finally:
            ENV.h = None


def lambda_usd(duration_ms: int, invocations: int) -> float:
    return duration_ms / 1000 * MEMORY_GB * GB_SECOND_USD + invocations * REQUEST_USD


def make_step(name: str) -> Any:
    def step(ctx: StepContext, x: int) -> int:
        ctx.record_cost(usd=COSTS_USD[name], input_tokens=10, output_tokens=1)
        spend(DURATIONS_MS[name])
        return x + 1

    return step


chain = Workflow("chain")
for _name in ORDER:
    chain.step(name=_name, timeout_s=10)(make_step(_name))


def naive_tax(done_before_each_crash: list[list[str]]) -> tuple[float, float]:
    """Seconds and dollars a restart-from-scratch loop re-spends: at every crash, all finished steps."""
    seconds = usd = 0.0
    for done in done_before_each_crash:
        seconds += sum(DURATIONS_MS[s] for s in done) / 1000
        usd += sum(COSTS_USD[s] + lambda_usd(DURATIONS_MS[s], 1) for s in done)
    return seconds, usd


def by_key(view: RunView) -> dict[str, Any]:
    return {n.key: n for n in view.nodes}


# ------------------------------------------------------------------------------------ restart tax
@pytest.mark.parametrize(
    ("backend", "k"), [("memory", 1), ("memory", 2), ("memory", 3), ("moto", 3)], ids=lambda v: str(v)
)
def test_restart_tax_after_k_completed_steps(backend: str, k: int) -> None:
    crashed = ORDER[k]  # the worker dies right after claiming step k+1
    with harness(chain, backend=backend) as h:
        h.crash_at("after_claim", node=crashed)
        rid = h.start("chain", 0)
        h.run()
        assert h.output(rid) == 4
        view = h.view(rid)

    seconds, usd = naive_tax([ORDER[:k]])
    # ... and the AWS requests of those steps (issue 10.5; none in memory)
    orchestration = sum(by_key(view)[s].orchestration_usd for s in ORDER[:k])
    assert (orchestration > 0) == (backend == "moto")
    usd += orchestration
    tax = view.restart_tax_avoided
    assert tax.crashes == 1
    assert tax.seconds == pytest.approx(seconds)
    assert tax.usd == pytest.approx(usd, abs=1e-9)
    assert [c["kind"] for c in view.crash_events] == ["takeover"]
    assert view.crash_events[0]["node"] == crashed

    nodes = by_key(view)
    assert {key: n.resumed for key, n in nodes.items()} == {s: s == crashed for s in ORDER}
    assert (nodes[crashed].crashes, nodes[crashed].attempts, nodes[crashed].invocations) == (1, 2, 2)
    assert [e["outcome"] for e in nodes[crashed].history] == ["crashed", "succeeded"]
    for s in ORDER:
        assert nodes[s].duration_ms == DURATIONS_MS[s]
        assert nodes[s].cost_usd == pytest.approx(COSTS_USD[s])
        assert nodes[s].compute_usd == pytest.approx(lambda_usd(DURATIONS_MS[s], nodes[s].invocations), abs=1e-9)
        assert nodes[s].checkpoint_hits == 0

    t = view.totals
    assert (t["nodes"], t["succeeded"], t["crashes"], t["resumed_nodes"], t["checkpoint_hits"]) == (4, 4, 1, 1, 0)
    assert (t["invocations"], t["attempts"]) == (5, 5)
    assert t["compute_ms"] == sum(DURATIONS_MS.values())
    assert t["cost_usd"] == pytest.approx(sum(COSTS_USD.values()))
    assert (t["input_tokens"], t["output_tokens"]) == (40, 4)
    assert t["compute_usd"] == pytest.approx(sum(nodes[s].compute_usd for s in ORDER), abs=1e-9)
    # wall time: the work, plus the wait for the dead worker's lease before the takeover
    assert t["wall_ms"] >= sum(DURATIONS_MS.values()) + 10_000
    assert view.status == "SUCCEEDED" and view.ended_ms is not None


def test_restart_tax_adds_up_over_several_crashes() -> None:
    with harness(chain, backend="memory") as h:
        h.crash_at("after_claim", node="s2")
        h.crash_at("after_claim", node="s4")
        rid = h.start("chain", 0)
        h.run()
        view = h.view(rid)
    seconds, usd = naive_tax([["s1"], ["s1", "s2", "s3"]])
    assert view.restart_tax_avoided.crashes == 2
    assert view.restart_tax_avoided.seconds == pytest.approx(seconds) == 7.0
    assert view.restart_tax_avoided.usd == pytest.approx(usd, abs=1e-9)
    assert view.totals["resumed_nodes"] == 2


def test_lost_handoff_is_a_crash_and_a_checkpoint_hit() -> None:
    with harness(chain, backend="moto") as h:
        h.crash_at("after_checkpoint", node="s2")  # s2 is saved, then its worker dies before the handoff
        rid = h.start("chain", 0)
        h.run()
        assert h.output(rid) == 4
        assert h.executions["s2"] == 1  # served from its checkpoint, never re-run
        view = h.view(rid)
    assert [c["kind"] for c in view.crash_events] == ["lost_handoff"]
    seconds, usd = naive_tax([["s1", "s2"]])
    usd += sum(by_key(view)[s].orchestration_usd for s in ("s1", "s2"))  # their AWS requests (issue 10.5)
    assert view.restart_tax_avoided.seconds == pytest.approx(seconds)
    assert view.restart_tax_avoided.usd == pytest.approx(usd, abs=1e-9)
    nodes = by_key(view)
    assert (nodes["s2"].checkpoint_hits, nodes["s2"].resumed, nodes["s2"].crashes) == (1, True, 0)
    assert [n.resumed for n in view.nodes] == [False, True, False, False]
    assert view.totals["checkpoint_hits"] == 1


def test_duplicates_are_checkpoint_hits_but_not_crashes() -> None:
    short = Workflow("short")
    for name in ("s1", "s2", "s3"):
        short.step(name=name, timeout_s=10)(make_step(name))
    with harness(short, backend="memory", duplicate_delivery=True) as h:
        rid = h.start("short", 0)
        h.run()
        view = h.view(rid)
        assert all(c == 1 for c in h.executions.values())
    assert view.crash_events == [] and view.restart_tax_avoided.seconds == 0
    assert view.restart_tax_avoided.usd == 0
    hits = [n.checkpoint_hits for n in view.nodes]
    assert all(x > 0 for x in hits)
    assert view.totals["checkpoint_hits"] == sum(hits)
    assert view.totals["resumed_nodes"] == 3
    assert view.totals["compute_ms"] == 6000  # duplicates cost no compute in the ledger


# ------------------------------------------------------------------------------------ ctx.each progress
paged = Workflow("paged")


@paged.step(name="s1", timeout_s=10)
def paged_first(ctx: StepContext, x: int) -> int:
    return make_step("s1")(ctx, x)  # type: ignore[no-any-return]


@paged.step(timeout_s=30)
def pages(ctx: StepContext, x: int) -> list[int]:
    def one(i: int) -> int:
        spend(700)
        return i

    return ctx.each(list(range(4)), one)


def test_checkpointed_items_of_an_unfinished_step_count_in_the_tax() -> None:
    with harness(paged, backend="moto") as h:
        h.crash_at("mid_item", node="pages", skip=2)  # dies before item 2: items 0 and 1 are saved
        rid = h.start("paged", 0)
        h.run()
        assert h.output(rid) == [0, 1, 2, 3]
        assert dict(h.probe.items) == {f"pages/@1:{i}": 1 for i in range(4)}
        view = h.view(rid)
    saved_ms = 2 * 700
    seconds = (DURATIONS_MS["s1"] + saved_ms) / 1000
    usd = COSTS_USD["s1"] + lambda_usd(DURATIONS_MS["s1"], 1) + lambda_usd(saved_ms, 0)
    usd += by_key(view)["s1"].orchestration_usd  # the finished step's AWS requests (issue 10.5)
    assert view.restart_tax_avoided.seconds == pytest.approx(seconds)
    assert view.restart_tax_avoided.usd == pytest.approx(usd, abs=1e-9)
    node = by_key(view)["pages"]
    assert (node.items_checkpointed, node.crashes, node.resumed) == (4, 1, True)
    assert node.duration_ms == 2 * 700  # only the invocation that finished the step is billed here


# ------------------------------------------------------------------------------------ maps
mapped = Workflow("mapped")


@mapped.step(name="s1", timeout_s=10)
def mapped_first(ctx: StepContext, x: int) -> list[int]:
    make_step("s1")(ctx, x)
    return [100, 200, 300]


@mapped.map(timeout_s=10)
def item(ctx: StepContext, ms: int) -> int:
    ctx.record_cost(usd=ms / 10_000)
    spend(ms)
    return ms


@mapped.step(name="s4", timeout_s=10)
def mapped_last(ctx: StepContext, x: list[int]) -> int:
    return make_step("s4")(ctx, sum(x))  # type: ignore[no-any-return]


def test_map_items_are_the_leaves_of_the_ledger() -> None:
    with harness(mapped, backend="memory") as h:
        h.crash_at("after_claim", node="s4")
        rid = h.start("mapped", 0)
        h.run()
        view = h.view(rid)
    parent = by_key(view)["item"]
    assert [i.key for i in parent.items] == ["item#00000", "item#00001", "item#00002"]
    assert parent.duration_ms == 600 and parent.cost_usd == pytest.approx(0.06)  # the sum of its items
    # the tax counts the items once (not again through their parent)
    seconds = (DURATIONS_MS["s1"] + 600) / 1000
    usd = (
        COSTS_USD["s1"]
        + lambda_usd(DURATIONS_MS["s1"], 1)
        + sum(ms / 10_000 + lambda_usd(ms, 1) for ms in (100, 200, 300))
    )
    assert view.restart_tax_avoided.seconds == pytest.approx(seconds)
    assert view.restart_tax_avoided.usd == pytest.approx(usd, abs=1e-9)
    t = view.totals
    assert t["compute_ms"] == DURATIONS_MS["s1"] + 600 + DURATIONS_MS["s4"]
    assert t["cost_usd"] == pytest.approx(COSTS_USD["s1"] + 0.06 + COSTS_USD["s4"])
    assert (t["nodes"], t["succeeded"]) == (3, 3)


@pytest.mark.parametrize("node", ["item", "s4"])
def test_lost_handoff_after_any_checkpoint_is_a_crash_event(node: str) -> None:
    """A worker that dies between a checkpoint and its handoff is resumed from the checkpoint by the
    late redelivery; that is a crash event whatever the node (a map item, the last step), as it is
    for a plain step (test_lost_handoff_is_a_crash_and_a_checkpoint_hit)."""
    with harness(mapped, backend="memory") as h:
        h.crash_at("after_checkpoint", node=node)
        rid = h.start("mapped", 0)
        h.run()
        assert h.status(rid) == "SUCCEEDED"
        assert len(h.probe.crashes) == 1
        view = h.view(rid)
    assert [c["kind"] for c in view.crash_events] == ["lost_handoff"], view.crash_events
    assert view.restart_tax_avoided.seconds > 0
