"""Bounded records on whole runs (issue 7, observed 7): however many invocations a node has and
however many crashes a run recovers from, its node and RUN items keep the same size, while the
ledger (``Harness.view`` = ``GET /runs/{id}``) still reports every invocation and crash event.

Sizes are the serialized raw item (plain JSON of its attributes), read under the adapter. On the
original code a node item grew ~57 B per invocation and the RUN item ~43 B per crash event.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.lambda_context import ApiLambdaContext

from stepchain import RetryPolicy, StepContext, Workflow
from stepchain.api import handle_api_event
from stepchain.exceptions import ContinueInNewInvocation
from stepchain.observe.timeline import render_html
from stepchain.store.dynamodb import DynamoDBStore, from_item
from stepchain.store.memory import MemoryStore
from stepchain.store.records import HISTORY_WINDOW, RUN_SK, node_sk, run_pk
from stepchain.testing import Harness

EVENTS = Path(__file__).resolve().parents[2] / "events"

LEFT: Counter[str] = Counter()  # continuations still to make, by run input tag


def item_bytes(h: Harness, pk: str, sk: str) -> int:
    store = h.store
    if isinstance(store, MemoryStore):
        item: dict[str, Any] = store._items[(pk, sk)]
    else:
        assert isinstance(store, DynamoDBStore)
        resp = store.client.get_item(TableName=store.table, Key={"pk": {"S": pk}, "sk": {"S": sk}})
        item = from_item(resp["Item"])
    return len(json.dumps(item, sort_keys=True, separators=(",", ":")))


long = Workflow("long")


@long.step(timeout_s=60)
def grind(ctx: StepContext, tag: str) -> str:
    """Continues in a fresh invocation ``LEFT[tag]`` times, then succeeds."""
    if LEFT[tag] > 0:
        LEFT[tag] -= 1
        raise ContinueInNewInvocation(f"{LEFT[tag]} to go")
    return tag


@long.step(timeout_s=60)
def after(ctx: StepContext, tag: str) -> str:
    return tag + "!"


@pytest.mark.parametrize(("backend", "n"), [("memory", 500), ("moto", 60)])
def test_a_node_item_stays_the_same_size_whatever_its_number_of_invocations(backend: str, n: int) -> None:
    with Harness(long, backend=backend) as h:
        sizes = {}
        views = {}
        for count in (20, n):
            tag = f"t{count:04d}"  # same length for both runs
            LEFT[tag] = count
            rid = h.start("long", tag)
            h.run()
            assert h.output(rid) == tag + "!"
            sizes[count] = item_bytes(h, run_pk(rid), node_sk("grind"))
            views[count] = h.view(rid)
    assert sizes[n] - sizes[20] <= 8, sizes  # a digit more in a counter or two, nothing else
    node = {v.key: v for v in views[n].nodes}["grind"]
    outcomes = [e["outcome"] for e in node.history]
    assert outcomes == ["continued"] * n + ["succeeded"]  # the full history, read back from H# items
    assert node.invocations == n + 1
    starts = [e["started_ms"] for e in node.history]
    assert starts == sorted(starts)


def test_the_happy_path_writes_no_history_items_and_makes_no_extra_call() -> None:
    with Harness(long, backend="moto") as h:
        LEFT["tiny"] = HISTORY_WINDOW - 1  # the window exactly full: still nothing to move out
        rid = h.start("long", "tiny")
        h.api_calls.clear()
        h.run()
        calls = {k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")}
        assert h.output(rid) == "tiny!"
        view = h.view(rid)
    # grind: HISTORY_WINDOW invocations of a claim and a checkpoint (UpdateItems); after: the same
    # (its input comes with its activation: no GetItem); the run's end (UpdateItem). No PutItem (H#), no Query.
    assert calls == {"dynamodb.UpdateItem": 2 * HISTORY_WINDOW + 2 + 1}, calls
    assert len({v.key: v for v in view.nodes}["grind"].history) == HISTORY_WINDOW


crashy = Workflow("crashy")


@crashy.step(timeout_s=30, retry=RetryPolicy(max_attempts=60))
def flaky(ctx: StepContext, x: int) -> int:
    return x + 1


@crashy.step(timeout_s=30)
def last(ctx: StepContext, x: int) -> int:
    return x * 2


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_the_run_item_stays_the_same_size_whatever_its_number_of_crash_events(backend: str) -> None:
    crashes = 40
    with Harness(crashy, backend=backend) as h:
        calm = h.start("crashy", 1)
        h.run()
        h.crash_at("after_claim", node="flaky", times=crashes)
        stormy = h.start("crashy", 1)
        h.run()
        assert h.output(stormy) == h.output(calm) == 4
        sizes = [item_bytes(h, run_pk(r), RUN_SK) for r in (calm, stormy)]
        view = h.view(stormy)
    assert sizes[1] == sizes[0], sizes
    assert [c["kind"] for c in view.crash_events] == ["takeover"] * crashes
    assert view.restart_tax_avoided.crashes == view.totals["crashes"] == crashes
    node = {v.key: v for v in view.nodes}["flaky"]
    assert [e["outcome"] for e in node.history] == ["crashed"] * crashes + ["succeeded"]
    assert (node.crashes, node.attempts) == (crashes, crashes + 1)



def _api_get(h: Harness, path: str) -> Any:
    """GET ``path`` through the API handler (the sample event of GET /runs/{id}/steps/{step})."""
    event = json.loads((EVENTS / "api-get-step.json").read_text())
    event["path"] = path
    event["requestContext"]["path"] = "/v1" + path
    event["pathParameters"] = None  # routed from the path
    out = handle_api_event(h.engine, event, ApiLambdaContext(aws_request_id="req-1"))
    assert out["statusCode"] == 200, out
    return json.loads(out["body"])


def test_the_api_and_the_timeline_show_every_invocation_and_crash() -> None:
    n = 3 * HISTORY_WINDOW
    with Harness(long, crashy, backend="memory") as h:
        LEFT["api"] = n
        rid = h.start("long", "api")
        h.crash_at("after_claim", node="flaky", times=3)
        crashed = h.start("crashy", 1)
        h.run()
        step = _api_get(h, f"/runs/{rid}/steps/grind")
        run = _api_get(h, f"/runs/{rid}")
        crash_run = _api_get(h, f"/runs/{crashed}")
        view = h.view(rid)
    assert [e["outcome"] for e in step["history"]] == ["continued"] * n + ["succeeded"]
    grind = next(node for node in run["nodes"] if node["key"] == "grind")
    assert grind["history"] == step["history"]
    assert [c["kind"] for c in crash_run["crash_events"]] == ["takeover"] * 3
    assert render_html(view).count('class="bar"') == n + 1 + 1  # a bar per invocation: grind's and after's
