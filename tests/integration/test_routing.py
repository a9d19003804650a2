"""Run-time routing and cycles (issue 8.2) on the in-process harness: goto/END, iteration keys,
the iteration cap, unknown routes, definition-time checks, the version hash, events/maps/sleeps
inside a loop, and the chosen route on the checkpoint (late redelivery, sweeper, redrive)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.routing_flows import RAN, SECRET, guess, review

from stepchain import END, Workflow, goto
from stepchain.exceptions import ValidationError
from stepchain.store.records import node_key, parse_node_key
from stepchain.testing import Harness


def counts(run_id: str) -> dict[str, int]:
    return {k: n for (r, k), n in RAN.items() if r == run_id}


def test_node_keys_carry_the_iteration() -> None:
    assert node_key("think") == "think" and node_key("fetch", 3) == "fetch#00003"
    assert node_key("think", None, 3) == "think~00003"
    assert node_key("fetch", 1, 2) == "fetch~00002#00001"
    for key in ("think", "fetch#00003", "think~00003", "fetch~00002#00001"):
        node, it, idx = parse_node_key(key)
        assert node_key(node, idx, it) == key


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_a_reviewer_loops_until_its_verdict_then_branches(backend: str) -> None:
    with Harness(review, backend=backend) as h:
        rid = h.start("review-loop", "essay")
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == {"published": "essay-r2-p1+essay-r2-p2", "rounds": 2}
        assert counts(rid) == {
            "brief": 1,
            "write": 1,
            "judge": 1,
            "write~00001": 1,
            "judge~00001": 1,
            "write~00002": 1,
            "judge~00002": 1,
            "publish~00002": 1,
        }
        # every iteration is its own node record, with the route it took on its checkpoint
        nodes = {n.key: n for n in h.store.list_nodes(rid)}
        assert nodes["judge"].route == "write" and nodes["judge~00002"].route == "publish"
        assert nodes["write~00001"].iteration == 1 and nodes["write"].route is None
        rejected = h.start("review-loop", "reject")
        assert h.run(rejected) == "SUCCEEDED"
        assert h.output(rejected) == {"rejected": True, "rounds": 0}
        assert nodes["judge"].node == "judge"


def test_the_iteration_cap_fails_the_run_with_a_clear_error() -> None:
    wf = Workflow("forever", max_iterations=4)

    @wf.step(routes=("spin",))
    def spin(ctx: Any, n: int) -> Any:
        return goto("spin", n + 1)

    with Harness(wf, backend="memory") as h:
        rid = h.start("forever", 0)
        assert h.run(rid) == "FAILED"
        err = h.view(rid).error or {}
        assert err["type"] == "IterationLimitExceeded"
        assert "would start iteration 4" in err["message"] and "max_iterations" in err["message"]
        assert err["node"] == "spin~00003"
        assert h.executions == {"spin": 1, "spin~00001": 1, "spin~00002": 1}  # the 4th failed


def test_a_route_not_declared_fails_the_run() -> None:
    wf = Workflow("stray")

    @wf.step(routes=("b",))
    def a(ctx: Any, x: Any) -> Any:
        return goto("c", x)

    @wf.step()
    def b(ctx: Any, x: Any) -> Any:
        return x

    @wf.step()
    def c(ctx: Any, x: Any) -> Any:
        return goto("a", x)  # c declares no routes

    with Harness(wf, backend="memory") as h:
        rid = h.start("stray", 1)
        assert h.run(rid) == "FAILED"
        assert (h.view(rid).error or {})["type"] == "UnknownRoute"


def test_a_plain_value_from_a_routing_step_goes_down_the_chain() -> None:
    wf = Workflow("plain")

    @wf.step(routes=("a", END))
    def a(ctx: Any, x: int) -> Any:
        return x + 1  # no goto: the chain's next node

    @wf.step()
    def b(ctx: Any, x: int) -> int:
        return x * 10

    with Harness(wf, backend="memory") as h:
        rid = h.start("plain", 1)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == 20


def test_routes_are_checked_when_the_workflow_is_complete() -> None:
    wf = Workflow("later")

    @wf.step(routes=("b",))  # b is defined after a: fine
    def a(ctx: Any, x: Any) -> Any:
        return goto("b", x)

    @wf.step()
    def b(ctx: Any, x: Any) -> Any:
        return x

    Harness(wf, backend="memory").close()
    bad = Workflow("bad")

    @bad.step(routes=("nowhere", END))
    def c(ctx: Any, x: Any) -> Any:
        return x

    with pytest.raises(ValidationError, match="unknown nodes"):
        Harness(bad, backend="memory")
    with pytest.raises(ValidationError, match="routes"):
        bad.step(routes="b")  # a string is not a sequence of routes


def test_the_version_hash_includes_routes() -> None:
    def make(routes: tuple[str, ...]) -> Workflow:
        wf = Workflow("v")

        @wf.step(routes=routes)
        def a(ctx: Any, x: Any) -> Any:
            return x

        return wf

    assert make(("a",)).version != make(("a", END)).version
    assert make(()).version == make(()).version


def test_events_maps_and_sleeps_inside_a_loop() -> None:
    with Harness(guess, backend="moto") as h:
        rid = h.start("guess-loop", "ann")
        assert h.run(rid) == "WAITING"
        for n in (1, 2):  # inside a loop an event names its iteration (the wait of iteration n - 1)
            assert h.send_event(rid, "guess", {"n": n}, iteration=n - 1) == "delivered"
            assert h.run(rid) == "WAITING"
            assert h.store.get_run(rid).current == node_key("guess", None, n)  # waiting in iteration n
        assert h.send_event(rid, "guess", {"n": SECRET}, iteration=2) == "delivered"
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == {"sum": 2 * sum(range(SECRET))}
        c = counts(rid)
        assert c["check~00002"] == 1 and c["spread~00002#00002"] == 1 and c["score~00002"] == 1
        assert all(n == 1 for n in c.values()), c
        keys = {n.key for n in h.store.list_nodes(rid)}
        assert {"guess", "guess~00001", "guess~00002", "pause~00002", "spread~00002"} <= keys


def test_an_event_sent_before_its_iteration_waits_is_buffered_for_it() -> None:
    with Harness(guess, backend="memory") as h:
        rid = h.start("guess-loop", "bo")
        h.run(rid)
        assert h.send_event(rid, "guess", {"n": 1}) == "delivered"
        # the next iteration's wait is not reached yet (nothing ran): the event waits for it
        assert h.send_event(rid, "guess", {"n": SECRET}, iteration=1) == "buffered"
        assert h.run(rid) == "SUCCEEDED"
        assert counts(rid)["check~00001"] == 1
