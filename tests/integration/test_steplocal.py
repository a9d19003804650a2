"""Step-local operations (``ctx.each``, ``ctx.once``) outside the research agent's patterns.

Identity by position (two unnamed loops, a ``once`` inside an item, nested loops, reused names,
changed items), ``once``'s in-progress marker and its crash window, redrive with a replaced input,
bounded resume reads, a cancel noticed by a running loop, and items skipped on resume in the ledger.
Steps spend virtual time with ``time.sleep`` (the harness patches it).
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lambda_context import ApiLambdaContext

from stepchain import RetryPolicy, StepContext, TerminalError, Workflow
from stepchain.api import handle_api_event
from stepchain.testing import BOUNDARIES, Harness, SqsHarness

EVENTS = Path(__file__).resolve().parents[2] / "events"

#: what the steps below reach from inside a run (reset by ``fresh``)
WORLD: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    WORLD.clear()
    WORLD.update(payments=[], priced=[], calls=Counter(), hooks={})
    yield
    WORLD.clear()


def hook(name: str, *args: Any) -> Any:
    fn = WORLD["hooks"].get(name)
    return None if fn is None else fn(*args)


def error_type(h: Harness, run_id: str) -> str | None:
    err = h.engine.get_run(run_id).error
    return None if err is None else err["type"]


# ============================================================== identity by position
two_loops = Workflow("two-loops")


@two_loops.step(timeout_s=5)
def both(ctx: StepContext, n: int) -> dict[str, list[int]]:
    def square(i: int) -> int:
        time.sleep(1)  # 1 s items in a 5 s invocation: continuations fall inside and between the loops
        return i * i

    def cube(i: int) -> int:
        time.sleep(1)
        return i**3

    squares = ctx.each(list(range(n)), square)
    cubes = ctx.each(list(range(n)), cube)
    return {"squares": squares, "cubes": cubes}


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_two_unnamed_loops_in_one_step_keep_their_own_results(backend: str) -> None:
    with Harness(two_loops, backend=backend) as h:
        rid = h.start("two-loops", 4)
        h.run()
        assert h.output(rid) == {"squares": [0, 1, 4, 9], "cubes": [0, 1, 8, 27]}
        outcomes = [i.outcome for i in h.invocations if i.key == "both"]
        assert outcomes.count("CONTINUE") >= 2, outcomes  # the step really continued between items
        assert h.probe.items == Counter({f"both/@{op}:{i}": 1 for op in (1, 2) for i in range(4)})


shop = Workflow("shop")


def provider_charge(order: dict[str, Any], key: str) -> dict[str, Any]:
    """A payment provider: records every charge it takes, with the idempotency key it was given."""
    WORLD["payments"].append((order["id"], key))
    return {"order": order["id"], "charged": order["amount"]}


@shop.step(timeout_s=3)
def charge_all(ctx: StepContext, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def charge(order: dict[str, Any]) -> dict[str, Any]:
        time.sleep(1)
        return ctx.once("charge", lambda: provider_charge(order, ctx.idempotency_key))

    return ctx.each(orders, charge)


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_a_named_once_inside_each_item_runs_per_item(backend: str) -> None:
    orders = [{"id": f"o{i}", "amount": 10 + i} for i in range(5)]
    with Harness(shop, backend=backend) as h:
        rid = h.start("shop", orders)
        h.run()
        assert h.output(rid) == [{"order": o["id"], "charged": o["amount"]} for o in orders]
        assert [p[0] for p in WORLD["payments"]] == [o["id"] for o in orders]  # every payment taken, once
        keys = [p[1] for p in WORLD["payments"]]
        assert len(set(keys)) == len(orders)  # a provider deduplicating by key keeps them apart
        assert keys[2] == f"{rid}:charge_all:@1/2/charge"
        assert h.effects == Counter({f"charge_all/@1/{i}/charge": 1 for i in range(5)})


keys = Workflow("keys")


@keys.step(retry=RetryPolicy(max_attempts=2, backoff_s=0))
def show_keys(ctx: StepContext, _: Any) -> dict[str, Any]:
    if ctx.attempt == 1 and WORLD.get("fail_first"):
        raise TerminalError("first attempt fails")
    inside = ctx.each(["a"], lambda _: [ctx.idempotency_key, ctx.idempotency_key_for("fx")])[0]
    return {
        "step": ctx.idempotency_key,
        "for": ctx.idempotency_key_for("fx"),
        "once": ctx.once("fx", lambda: ctx.idempotency_key),
        "item": inside,
    }


def test_idempotency_keys_name_the_operation_and_the_progress_generation() -> None:
    WORLD["fail_first"] = True
    with Harness(keys, backend="memory") as h:
        rid = h.start("keys", None)
        h.run()
        assert h.status(rid) == "FAILED"
        WORLD["fail_first"] = False
        h.engine.redrive(rid, input=None, replace_input=True)  # a new input: progress discarded, generation 1
        h.run()
        base = f"{rid}:show_keys:g1"
        assert h.output(rid) == {
            "step": base,
            "for": f"{base}:fx",
            "once": f"{base}:fx",  # what idempotency_key_for announced
            "item": [f"{base}:@1/0", f"{base}:@1/0/fx"],
        }


nested = Workflow("nested")


@nested.step(timeout_s=4)
def grid(ctx: StepContext, n: int) -> list[list[int]]:
    def row(r: int) -> list[int]:
        def cell(c: int) -> int:
            time.sleep(0.5)
            return 10 * r + c

        return ctx.each(list(range(n)), cell)

    return ctx.each(list(range(n)), row)


def test_nested_unnamed_loops_are_scoped_by_item() -> None:
    with Harness(nested, backend="memory") as h:
        rid = h.start("nested", 3)
        h.run()
        assert h.output(rid) == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
        assert h.probe.items[f"grid/@1/2/@1:{1}"] == 1
        assert sum(h.probe.items.values()) == 3 + 9


reuse = Workflow("reuse")


@reuse.step()
def twice(ctx: StepContext, kind: str) -> Any:
    if kind == "each":
        return ctx.each([1, 2], lambda x: x, name="rows") + ctx.each([3, 4], lambda x: 10 * x, name="rows")
    if kind == "mixed":
        return [ctx.once("rows", lambda: 1), ctx.each([3], lambda x: x, name="rows")]
    if kind == "bad-name":
        return ctx.once("a#b", lambda: 1)
    return [ctx.once("fx", lambda: "a"), ctx.once("fx", lambda: "b")]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("each", "OperationNameReused"),
        ("once", "OperationNameReused"),
        ("mixed", "OperationNameReused"),
        ("bad-name", "ValidationError"),
    ],
)
def test_a_reused_or_unsafe_name_fails_the_step_instead_of_sharing_a_checkpoint(kind: str, error: str) -> None:
    with Harness(reuse, backend="memory") as h:
        rid = h.start("reuse", kind)
        h.run()
        assert h.status(rid) == "FAILED"
        assert error_type(h, rid) == error
        assert h.engine.get_run(rid).error is not None
        assert len([i for i in h.invocations if i.key == "twice"]) == 1  # a terminal error: not retried


changing = Workflow("changing")


@changing.step(timeout_s=60, retry=RetryPolicy(max_attempts=3, backoff_s=0))
def walk(ctx: StepContext, _: Any) -> list[str]:
    def up(x: str) -> str:
        hook("item", x)
        return x.upper()

    return ctx.each(list(WORLD["items"]), up)


@pytest.mark.parametrize("new_items", [["x", "y", "z", "w"], ["a"]])
def test_resuming_each_with_different_items_is_an_error_not_stale_results(new_items: list[str]) -> None:
    WORLD["items"] = ["a", "b", "c", "d"]

    def change(x: str) -> None:  # the list the step computes is different on its next attempt
        if x == "b":
            WORLD["items"] = new_items

    WORLD["hooks"]["item"] = change
    with Harness(changing, backend="memory") as h:
        h.crash_at("mid_item", node="walk", skip=2)  # dies before item 2; items 0 and 1 are checkpointed
        rid = h.start("changing", None)
        h.run()
        assert h.status(rid) == "FAILED"
        assert error_type(h, rid) == "EachItemsChanged"


# ============================================================== ctx.once: the effect window
pay = Workflow("pay")


@pay.step(timeout_s=60)
def settle(ctx: StepContext, amount: int) -> dict[str, Any]:
    def effect() -> dict[str, Any]:
        WORLD["payments"].append((ctx.idempotency_key, ctx.effect_restarted))
        return {"charged": amount}

    def reconcile() -> dict[str, Any] | None:
        WORLD["calls"]["reconcile"] += 1
        assert ctx.effect_restarted
        return hook("reconcile", ctx.idempotency_key)  # type: ignore[no-any-return]

    return ctx.once("charge", effect, reconcile=reconcile if "reconcile" in WORLD["hooks"] else None)


def test_effect_window_boundary_exists_for_users() -> None:
    assert "effect_window" in BOUNDARIES and "item_window" in BOUNDARIES


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_a_crash_in_the_effect_window_runs_the_effect_again_and_says_so(backend: str) -> None:
    with Harness(pay, backend=backend) as h:
        h.crash_at("effect_window", node="settle")
        rid = h.start("pay", 42)
        h.run()
        assert h.output(rid) == {"charged": 42}
        assert h.effects == Counter({"settle/charge": 2})  # the harness sees the double
        key = f"{rid}:settle:charge"
        assert WORLD["payments"] == [(key, False), (key, True)]  # same key both times: a provider can dedupe
        node = h.view(rid).nodes[0]
        assert node.effect_reruns == 1 and node.crashes == 1


def test_reconcile_decides_whether_an_unfinished_effect_happened() -> None:
    def found(key: str) -> dict[str, Any] | None:  # ask the provider whether it saw this key
        return next(({"charged": 42, "found": True} for k, _ in WORLD["payments"] if k == key), None)

    WORLD["hooks"]["reconcile"] = found
    with Harness(pay, backend="memory") as h:
        h.crash_at("effect_window", node="settle")
        rid = h.start("pay", 42)
        h.run()
        assert h.output(rid) == {"charged": 42, "found": True}  # reconcile's answer is the checkpointed result
        assert h.effects == Counter({"settle/charge": 1})  # the effect did not run again
        assert WORLD["calls"]["reconcile"] == 1


def test_reconcile_returning_none_runs_the_effect_again() -> None:
    WORLD["hooks"]["reconcile"] = lambda key: None  # "it did not happen"
    with Harness(pay, backend="memory") as h:
        h.crash_at("after_claim", node="settle")  # no effect started: no reconcile either
        h.crash_at("effect_window", node="settle")
        rid = h.start("pay", 7)
        h.run()
        assert h.output(rid) == {"charged": 7}
        assert h.effects == Counter({"settle/charge": 2})
        assert WORLD["calls"]["reconcile"] == 1


def test_a_checkpointed_effect_is_never_repeated_and_counts_as_a_checkpoint_hit() -> None:
    with Harness(pay, backend="memory") as h:
        h.crash_at("after_checkpoint", node="settle")  # the step's checkpoint is lost, the effect's is not
        rid = h.start("pay", 5)
        h.run()
        assert h.output(rid) == {"charged": 5}
        assert h.effects == Counter({"settle/charge": 1})
        assert h.view(rid).nodes[0].checkpoint_hits >= 1


# ============================================================== redrive
fix = Workflow("fix")


@fix.step(timeout_s=60)
def prices(ctx: StepContext, order: dict[str, Any]) -> dict[str, Any]:
    currency = ctx.once("currency", lambda: order["currency"])

    def price(sku: str) -> dict[str, Any]:
        if sku.startswith("bad") and not WORLD.get("fixed"):
            raise TerminalError(f"unknown sku {sku}")
        WORLD["priced"].append(sku)
        return {"sku": sku, "price": len(sku)}

    return {"currency": currency, "lines": ctx.each(order["skus"], price)}


def failed_run(h: Harness) -> str:
    rid = h.start("fix", {"skus": ["a", "bb", "bad"], "currency": "EUR"})
    h.run()
    assert h.status(rid) == "FAILED" and WORLD["priced"] == ["a", "bb"]
    return rid


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_redrive_with_a_replaced_input_discards_the_partial_progress(backend: str) -> None:
    with Harness(fix, backend=backend) as h:
        rid = failed_run(h)
        h.engine.redrive(rid, input={"skus": ["ccc", "d", "ee"], "currency": "USD"}, replace_input=True)
        h.run()
        assert h.output(rid) == {
            "currency": "USD",
            "lines": [{"sku": "ccc", "price": 3}, {"sku": "d", "price": 1}, {"sku": "ee", "price": 2}],
        }
        assert WORLD["priced"] == ["a", "bb", "ccc", "d", "ee"]
        node = h.view(rid).nodes[0]
        assert node.items_checkpointed == 3  # the discarded generation's items are not counted


def test_redrive_without_input_resumes_the_partial_progress() -> None:
    with Harness(fix, backend="memory") as h:
        rid = failed_run(h)
        WORLD["fixed"] = True  # e.g. the sku was added to the catalogue
        h.engine.redrive(rid)
        h.run()
        assert h.output(rid)["lines"][2] == {"sku": "bad", "price": 3}
        assert WORLD["priced"] == ["a", "bb", "bad"]  # items 0 and 1 were not priced again
        assert h.effects == Counter({"prices/currency": 1})


def test_redrive_with_a_replaced_input_can_keep_the_progress() -> None:
    with Harness(fix, backend="memory") as h:
        rid = failed_run(h)
        corrected = {"skus": ["a", "bb", "cccc"], "currency": "EUR"}
        h.engine.redrive(rid, input=corrected, replace_input=True, keep_progress=True)
        h.run()
        assert [line["sku"] for line in h.output(rid)["lines"]] == ["a", "bb", "cccc"]
        assert WORLD["priced"] == ["a", "bb", "cccc"]


def test_redrive_keeping_progress_that_does_not_match_the_new_items_fails_clearly() -> None:
    with Harness(fix, backend="memory") as h:
        rid = failed_run(h)
        h.engine.redrive(rid, input={"skus": ["x", "y"], "currency": "EUR"}, replace_input=True, keep_progress=True)
        h.run()
        assert h.status(rid) == "FAILED" and error_type(h, rid) == "EachItemsChanged"



def test_api_redrive_passes_keep_progress() -> None:
    event = json.loads((EVENTS / "api-redrive-run.json").read_text())

    def redrive(h: Harness, rid: str, body: dict[str, Any]) -> dict[str, Any]:
        e = copy.deepcopy(event)
        e["path"] = f"/runs/{rid}/redrive"
        e["pathParameters"] = {"run_id": rid}
        e["requestContext"]["path"] = "/v1" + e["path"]
        e["body"] = json.dumps(body)
        return handle_api_event(h.engine, e, ApiLambdaContext())

    with Harness(fix, backend="memory") as h:
        rid = failed_run(h)
        body = {"input": {"skus": ["a", "bb", "cccc"], "currency": "EUR"}, "keep_progress": True}
        assert redrive(h, rid, body)["statusCode"] == 202
        h.run()
        assert WORLD["priced"] == ["a", "bb", "cccc"]  # kept: items 0 and 1 were not priced again

    WORLD["priced"] = []
    with Harness(fix, backend="memory") as h:
        rid = failed_run(h)
        body = {"input": {"skus": ["a", "bb", "cccc"], "currency": "EUR"}}  # default with an input: discard
        assert redrive(h, rid, body)["statusCode"] == 202
        h.run()
        assert WORLD["priced"] == ["a", "bb", "a", "bb", "cccc"]


# ============================================================== bounded resume reads
long_loop = Workflow("long-loop")


@long_loop.step(timeout_s=4)
def crawl(ctx: StepContext, n: int) -> list[int]:
    def page(i: int) -> int:
        WORLD.get("sleep", time.sleep)(1)  # two items per 4 s invocation
        hook("page", i)
        return i

    return ctx.each(list(range(n)), page)


def test_resuming_each_reads_one_item_per_continuation_and_all_once_at_the_end() -> None:
    n = 20
    with Harness(long_loop, backend="moto") as h:
        read: Counter[str] = Counter()

        def count(parsed: dict[str, Any], **_: Any) -> None:
            read["queries"] += 1
            read["items"] += len(parsed.get("Items", []))

        h.store.client.meta.events.register("after-call.dynamodb.Query", count)  # type: ignore[attr-defined]
        rid = h.start("long-loop", n)
        h.run()
        assert h.output(rid) == n  # the next step counted every page
        k = len([i for i in h.invocations if i.key == "crawl"])
        assert k >= 8  # many continuations
        # one Query per invocation (the last item: 0 or 1 read), plus one that reads every item at the end
        assert read["queries"] == k + 1, (read, k)
        assert read["items"] == (k - 1) + n, (read, k)  # before: 0 + 2 + 4 + ... = K(K-1) items


two_long_loops = Workflow("two-long-loops")


@two_long_loops.step(timeout_s=4)
def pages_then_notes(ctx: StepContext, n: int) -> dict[str, list[int]]:
    def fast(i: int) -> int:
        return i

    def slow(i: int) -> int:
        time.sleep(1)
        return -i

    return {"fast": ctx.each(list(range(n)), fast), "slow": ctx.each(list(range(n)), slow)}


def test_a_loop_completed_before_a_continuation_is_read_as_one_item_afterwards() -> None:
    n = 20
    with Harness(two_long_loops, backend="moto") as h:
        items_read: list[int] = []

        def count(parsed: dict[str, Any], **_: Any) -> None:
            items_read.append(len(parsed.get("Items", [])))

        h.store.client.meta.events.register("after-call.dynamodb.Query", count)  # type: ignore[attr-defined]
        rid = h.start("two-long-loops", n)
        h.run()
        assert h.output(rid) == {"fast": list(range(n)), "slow": [-i for i in range(n)]}
        k = len([i for i in h.invocations if i.key == "pages_then_notes"])
        assert k >= 8
        # per continuation: the first loop's summary (1 item) + the second loop's last item (1 item);
        # at the end the second loop's items once. Without the summary: + n items per continuation.
        assert sum(items_read) <= 2 * k + n, (items_read, k)
        assert max(items_read) == n
        assert h.view(rid).nodes[0].items_checkpointed == 2 * n  # summaries are not items


# ============================================================== cancel and the ledger
@long_loop.step(name="after", timeout_s=4)
def after_crawl(ctx: StepContext, pages: list[int]) -> int:
    return len(pages)


@pytest.mark.parametrize("transport", [Harness, SqsHarness])
def test_a_running_each_notices_a_cancel_at_its_next_item_checkpoint(transport: type[Harness]) -> None:
    with transport(long_loop, backend="memory", budget_ms=600_000) as h:
        if transport is SqsHarness:  # its steps' time.sleep is real: spend virtual time explicitly
            WORLD["sleep"] = lambda s: h.clock.advance(s * 1000)
        rid = h.start("long-loop", 50)
        WORLD["hooks"]["page"] = lambda i: h.engine.cancel(rid) if i == 3 else None  # the user cancels meanwhile
        h.run()
        assert h.status(rid) == "CANCELLED"
        node = h.view(rid).nodes[0]
        assert node.status == "CANCELLED"  # not CONTINUING, not SUCCEEDED
        assert node.history[-1]["outcome"] == "cancelled"
        done = sum(h.probe.items.values())
        assert 4 <= done <= 4 + 1, done  # stopped within a second (one 1 s item) of the cancel
        assert node.items_checkpointed == done


def test_items_skipped_on_resume_count_as_checkpoint_hits() -> None:
    with Harness(long_loop, backend="memory", budget_ms=600_000) as h:
        h.crash_at("mid_item", node="crawl", skip=3)  # dies before item 3: items 0..2 are checkpointed
        rid = h.start("long-loop", 6)
        h.run()
        assert h.output(rid) == 6
        crawl_view = h.view(rid).nodes[0]
        assert crawl_view.checkpoint_hits == 3 and crawl_view.crashes == 1
        assert all(c == 1 for c in h.probe.items.values())


def test_a_crash_in_the_item_window_runs_that_item_again() -> None:
    with Harness(long_loop, backend="memory", budget_ms=600_000) as h:
        h.crash_at("item_window", node="crawl", skip=1)  # item 1 ran, its checkpoint was never written
        rid = h.start("long-loop", 3)
        h.run()
        assert h.output(rid) == 3
        assert h.probe.items == Counter({"crawl/@1:0": 1, "crawl/@1:1": 2, "crawl/@1:2": 1})
