"""The API shows loop iterations: each iteration of a node is its own row of the run view (with
its iteration and the route it took), the totals count iterations, and one iteration of a step
is read as ``GET /runs/{id}/steps/think~00003``."""

from __future__ import annotations

from typing import Any

from tests.functional.test_api import call

from stepchain import END, Workflow, goto
from stepchain.testing import Harness

wf = Workflow("count-up")


@wf.step(routes=("count", END))
def count(ctx: Any, n: int) -> Any:
    return goto(END, n) if n >= 3 else goto("count", n + 1)


def test_the_run_view_and_the_step_endpoint_show_iterations() -> None:
    with Harness(wf, backend="memory") as h:
        rid = h.start("count-up", 0)
        assert h.run(rid) == "SUCCEEDED"
        r = call(h, "get-run", path=f"/runs/{rid}")
        assert r.status == 200, r.raw
        rows = [(n["key"], n["iteration"], n["route"]) for n in r.json["nodes"]]
        assert rows == [
            ("count", 0, "count"),
            ("count~00001", 1, "count"),
            ("count~00002", 2, "count"),
            ("count~00003", 3, END),
        ]
        assert r.json["totals"]["iterations"] == 4 and r.json["totals"]["nodes"] == 4
        step = call(h, "get-step", path=f"/runs/{rid}/steps/count~00002", query=None)
        assert step.status == 200, step.raw
        assert step.json["key"] == "count~00002" and step.json["output"] == 3
        missing = call(h, "get-step", path=f"/runs/{rid}/steps/count~00009", query=None)
        assert missing.status == 404
