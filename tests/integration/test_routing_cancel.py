"""Cancelling a looping run: the step running at the cancel finishes, and the next iteration it
hands on to never starts (the cancel's tombstones cover the run's latest iteration and the next)."""

from __future__ import annotations

from typing import Any

from stepchain import Workflow, goto
from stepchain.testing import Harness

BOX: dict[str, Any] = {}
wf = Workflow("cancel-loop")


@wf.step(routes=("spin",))
def spin(ctx: Any, n: int) -> Any:
    if n == 2:
        BOX["h"].cancel(ctx.run_id)  # the run is cancelled while iteration 2 runs
    return goto("spin", n + 1)


@wf.step()
def never(ctx: Any, n: int) -> int:
    return n


def test_a_cancel_inside_a_loop_stops_the_next_iteration() -> None:
    with Harness(wf, backend="memory", duplicate_delivery=True) as h:
        BOX["h"] = h
        rid = h.start("cancel-loop", 0)
        assert h.run(rid) == "CANCELLED"
        assert dict(h.executions) == {"spin": 1, "spin~00001": 1, "spin~00002": 1}
        nodes = {n.key: n.status.value for n in h.store.list_nodes(rid)}
        assert nodes["spin~00003"] == "CANCELLED" and nodes["never~00002"] == "CANCELLED"
