"""A step's input in ``GET /runs/{id}/steps/{step}`` (issue 18, the live view's click-through): served
like its output (inline, a presigned URL when offloaded, ``input_omitted`` when nested too deeply),
for the first node, a chain successor, a map and its items, a wait, a call, and a node reached by a
route back (the next loop iteration)."""

from __future__ import annotations

from tests.functional.test_api import call
from tests.integration.lifecycle_flow import ITERATIONS, N, child, wf

from stepchain.testing import Harness


def step(h: Harness, run_id: str, name: str, index: int | None = None) -> dict:  # type: ignore[type-arg]
    query = None if index is None else {"index": str(index)}
    reply = call(h, "get-step", path=f"/runs/{run_id}/steps/{name}", query=query)
    assert reply.status == 200, reply.json
    return reply.json  # type: ignore[no-any-return]


def test_inputs_of_every_kind_and_of_a_route_back() -> None:
    with Harness(wf, child, backend="memory") as h:
        rid = h.start("tour", N)
        for it in range(ITERATIONS):
            assert h.run(rid) == "WAITING"
            h.send_event(rid, "go", {"it": it}, iteration=it)
        assert h.run(rid) == "SUCCEEDED"
        items = list(range(N))
        assert step(h, rid, "plan")["input"] == N  # the run's input
        assert step(h, rid, "work")["input"] == items  # plan's output
        assert step(h, rid, "work", 1)["input"] == 1  # the item
        assert step(h, rid, "go")["input"] == [i + 1 for i in items]
        assert step(h, rid, "delegate")["input"] == {"it": 0}  # the event's payload
        assert step(h, rid, "both")["input"] == {"it": 0}
        assert step(h, rid, "decide")["input"] == {"a": {"it": 0}, "b": {"it": 0}}
        again = step(h, rid, "plan~00001")  # routed back to by decide (goto("plan", N))
        assert again["has_input"] is True and again["input"] == N
        assert step(h, rid, "delegate~00001")["input"] == {"it": 1}


def test_an_offloaded_input_is_a_presigned_url() -> None:
    with Harness(wf, child, backend="moto", inline_limit=64) as h:
        rid = h.start("tour", N)
        h.run(rid)
        h.send_event(rid, "go", {"pad": "x" * 200}, iteration=0)
        h.run(rid)
        big = step(h, rid, "delegate")  # the event's payload: over 64 bytes, offloaded
        assert big["has_input"] is True and big["input"] is None and "Signature=" in big["input_url"]
        small = step(h, rid, "work", 0)
        assert small["input"] == 0 and small["input_url"] is None
