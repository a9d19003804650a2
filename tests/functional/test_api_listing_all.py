"""Issue 16.11: ``GET /runs`` without ``workflow`` (openapi.json marks it optional) answered 400
``workflow_required`` when several workflows are deployed; now it lists every workflow's runs, newest
first, page by page with a signed cursor, per caller under ownership. And a control character in a path
(``/events/approve%0A``) no longer reaches the route as ``approve``."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.functional.test_api import Reply, approval, call, fanout

from stepchain.testing import Harness


@pytest.fixture
def h() -> Any:
    with Harness(approval, fanout, backend="memory") as harness:
        yield harness


def _all(h: Harness, limit: int, **query: str) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        q = {"limit": str(limit), **query, **({"cursor": cursor} if cursor else {})}
        r = call(h, "list-runs", query=q)
        assert r.status == 200, r.raw
        seen += [x["run_id"] for x in r.json["runs"]]
        cursor = r.json["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("too many pages")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_listing_without_workflow_merges_every_workflow_newest_first(h: Harness, seed: int) -> None:
    rng = random.Random(seed)
    started = []
    for _ in range(23):
        h.clock.advance(rng.choice([0, 1, 5]))  # equal timestamps too: the run id breaks the tie
        wf = rng.choice(["approval", "fanout"])
        started.append(h.start(wf, 1))
    expected = sorted(started, key=lambda r: (h.engine.get_run(r).created_ms, r), reverse=True)
    for limit in (1, 4, 7, 100):
        assert _all(h, limit) == expected, limit
    # a run started between two pages is neither lost nor shown twice (it is newer: it is not listed)
    first = call(h, "list-runs", query={"limit": "5"}).json
    late = h.start("approval", 2)
    rest = _all_from(h, first["next_cursor"], 5)
    assert [r["run_id"] for r in first["runs"]] + rest == expected and late not in rest


def _all_from(h: Harness, cursor: str, limit: int) -> list[str]:
    seen: list[str] = []
    for _ in range(100):
        r = call(h, "list-runs", query={"limit": str(limit), "cursor": cursor})
        seen += [x["run_id"] for x in r.json["runs"]]
        if r.json["next_cursor"] is None:
            return seen
        cursor = r.json["next_cursor"]
    raise AssertionError("too many pages")


def test_a_cursor_of_one_query_is_refused_by_the_other(h: Harness) -> None:
    for _ in range(3):
        h.start("approval", 1)
        h.start("fanout", 1)
    all_cursor = call(h, "list-runs", query={"limit": "1"}).json["next_cursor"]
    one_cursor = call(h, "list-runs", query={"limit": "1", "workflow": "approval"}).json["next_cursor"]
    r: Reply = call(h, "list-runs", query={"limit": "1", "workflow": "approval", "cursor": all_cursor})
    assert r.status == 400 and r.code == "invalid_cursor"
    r = call(h, "list-runs", query={"limit": "1", "cursor": one_cursor})
    assert r.status == 400 and r.code == "invalid_cursor"


def test_a_newline_in_the_event_name_is_not_that_event(h: Harness) -> None:
    run_id = h.start("approval", "doc")
    h.run()
    for name in ("approve\n", "approve\r", "appr\x00ove", "approve\n\n"):
        r = call(h, "send-event", path=f"/runs/{run_id}/events/{name}", body={"ok": True})
        assert r.status == 404 and r.code == "route_not_found", (name, r.raw)
    assert h.status(run_id) == "WAITING"
    assert call(h, "send-event", path=f"/runs/{run_id}/events/approve", body={"ok": True}).status == 202
