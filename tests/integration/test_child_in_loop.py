"""A child workflow called from inside a loop (routing + ``wf.call``), unlike the research agent: a
``batches`` run works through its input list one batch per loop iteration, each batch a child run of
``double``. Each iteration's call node has its own key (``work~0000n``), so each iteration gets its own
child (ids derived from the key), joined back into that iteration; a crash at any worker boundary or a
duplicate delivery starts no second child for one iteration. The child runs belong to the parent's
caller (run ownership)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import END, StepContext, Workflow, goto
from stepchain.testing import WORKER_BOUNDARIES, Harness, SfnHarness, SqsHarness

COUNTS: Counter[str] = Counter()


def workflows() -> tuple[Workflow, Workflow]:
    double = Workflow("double")

    @double.step()
    def twice(ctx: StepContext, batch: list[int]) -> list[int]:
        COUNTS[f"double/{batch}"] += 1
        return [2 * x for x in batch]

    wf = Workflow("batches", max_iterations=20)

    @wf.step()
    def take(ctx: StepContext, state: dict[str, Any]) -> dict[str, Any]:
        return {"todo": state["todo"][1:], "done": state["done"], "batch": state["todo"][0]}

    @wf.step()
    def pick(ctx: StepContext, state: dict[str, Any]) -> list[int]:
        ctx.once("remember", lambda: COUNTS.update({"state": 1}))
        STATE[ctx.key] = state
        return list(state["batch"])

    wf.call(double, name="work")

    @wf.step(routes=("take", END))
    def collect(ctx: StepContext, doubled: list[int]) -> Any:
        COUNTS["collect"] += 1
        state = STATE[ctx.key.replace("collect", "pick")]
        nxt = {"todo": state["todo"], "done": [*state["done"], *doubled]}
        return goto("take", nxt) if nxt["todo"] else goto(END, nxt["done"])

    return wf, double


#: what each iteration's ``pick`` saw (the steps of one iteration share it in-process)
STATE: dict[str, dict[str, Any]] = {}


@contextmanager
def harness(kind: str) -> Iterator[Harness]:
    wf, double = workflows()
    if kind == "memory":
        h: Harness = Harness(wf, double, backend="memory")
    elif kind == "sqs":
        h = SqsHarness(wf, double, backend="memory")
    else:
        h = SfnHarness(wf, double, backend="memory", poll_timeout_s=6.0)
    COUNTS.clear()
    STATE.clear()
    with h:
        yield h


INPUT = {"todo": [[1, 2], [3], [4, 5, 6]], "done": []}


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_each_loop_iteration_calls_its_own_child_once(kind: str) -> None:
    with harness(kind) as h:
        run_id = h.start("batches", INPUT, owner="team-a")
        assert h.run(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        assert h.output(run_id) == [2, 4, 6, 8, 10, 12]
        children = h.engine.store.list_runs("double", limit=50).runs
        assert len(children) == 3  # one child per iteration, never two
        assert {c.owner for c in children} == {"team-a"}  # the parent's caller owns its children
        assert {c.parent.split("/")[1] for c in children if c.parent} == {"work", "work~00001", "work~00002"}
        assert all(n == 1 for k, n in COUNTS.items() if k.startswith("double/"))


@pytest.mark.parametrize("boundary", WORKER_BOUNDARIES)
def test_a_crash_inside_an_iteration_starts_no_second_child(boundary: str) -> None:
    with harness("memory") as h:
        h.crash_at(boundary, node="work")
        run_id = h.start("batches", INPUT)
        status = h.run(run_id)
        for _ in range(5):  # recover as a deployment does: time passes, redeliveries, the sweeper
            if status == "SUCCEEDED":
                break
            h.advance(400_000)
            h.sweep()
            status = h.run(run_id)
        assert status == "SUCCEEDED", h.engine.get_run(run_id).error
        assert h.output(run_id) == [2, 4, 6, 8, 10, 12]
        assert len(h.engine.store.list_runs("double", limit=50).runs) == 3
        assert all(n == 1 for k, n in COUNTS.items() if k.startswith("double/")), COUNTS
