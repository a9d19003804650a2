"""``run.failed`` survives a crash right after the run's FAILED write (issue 18's gap): the worker whose
step failed the run dies before the event and the parent's notification; the queue's redelivery (or a
duplicate) finds the node FAILED, the run FAILED, and writes them then ("met again", as a redelivered
last step does for SUCCEEDED). Exactly one ``run.failed``; the child's parent fails too.

Not covered: a run failed by a join (a call or parallel node whose child failed) whose worker dies
right there: the join's redelivery does not meet the failure again (ARCHITECTURE, failure table)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stepchain.engine.worker as worker_module
from stepchain import TerminalError, Workflow
from stepchain.testing import Harness, InjectedCrash, SqsHarness

child = Workflow("fails-child", stream_lifecycle=True)


@child.step()
def boom(ctx: Any, x: int) -> int:
    raise TerminalError(f"no {x}")


parent = Workflow("fails-parent", stream_lifecycle=True)
parent.call(child, name="delegate")


@parent.step()
def never(ctx: Any, x: Any) -> Any:
    return x


#: Step Functions is not here: the harness's execution does not re-invoke the task the crash killed
#: before its run() returns (the child FAILED, the parent's task waiting on its token); not yet shown.
HARNESSES: dict[str, Callable[..., Harness]] = {
    "memory": lambda *wfs, **kw: Harness(*wfs, backend="memory", **kw),
    "moto": lambda *wfs, **kw: Harness(*wfs, backend="moto", **kw),
    "sqs": lambda *wfs, **kw: SqsHarness(*wfs, **kw),
}


@pytest.fixture
def crash_after_the_failed_write(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The first ``run_ended`` of a FAILED run (the child's worker, right after its FAILED write) dies."""
    crashed: list[str] = []
    real = worker_module.run_ended

    def dies_once(s: Any, run: Any) -> None:
        if run.status.value == "FAILED" and not crashed:
            crashed.append(run.run_id)
            raise InjectedCrash("the worker dies after the run's FAILED write")
        real(s, run)

    monkeypatch.setattr(worker_module, "run_ended", dies_once)
    yield crashed


@pytest.mark.parametrize("dup", [False, True], ids=["once", "duplicates"])
@pytest.mark.parametrize("kind", list(HARNESSES))
def test_run_failed_is_written_once_when_the_worker_died_right_after_the_failed_write(
    kind: str, dup: bool, crash_after_the_failed_write: list[str]
) -> None:
    with HARNESSES[kind](parent, child, duplicate_delivery=dup) as h:
        rid = h.start("fails-parent", 7)
        h.run()
        assert h.status(rid) == "FAILED"  # the child's failure reached its parent despite the crash
        (child_id,) = [r for r in h.runs() if r != rid]
        assert crash_after_the_failed_write[0] == child_id  # the crash did happen, in the child
        for run_id in (child_id, rid):
            kinds = [e["kind"] for e in h.stream(run_id) if e["node"] is None]
            assert kinds == ["run.started", "run.failed"], (run_id, kinds)
