"""Run lifecycle where node kinds combine (issue 15): cancelling a parent stops its children's
executions at once, a crash inside a redrive and a crash while a parallel node starts its branches
leave every harness's ``run()`` answering the same, and an event for a retired version stops the
run's Step Functions execution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import Registry, StepContext, TerminalError, VersionNotRegistered, Workflow
from stepchain.testing import Harness, SfnHarness, SqsHarness
from stepchain.testing.probe import InjectedCrash

HARNESSES = ("memory", "sqs", "sfn")
OUTAGE = {"on": True}


def inspection(version: str | None = None) -> Workflow:
    """A child that waits for an inspector's sign-off."""
    wf = Workflow("inspection", version=version)

    @wf.step()
    def book(ctx: StepContext, site: str) -> str:
        return f"booked {site}"

    wf.wait_for_event("signed", timeout_s=7200)

    @wf.step()
    def file(ctx: StepContext, signed: Any) -> Any:
        return signed

    return wf


def survey() -> Workflow:
    wf = Workflow("survey", version="1")

    @wf.step()
    def plan(ctx: StepContext, site: str) -> str:
        return site

    wf.parallel({"north": inspection(), "south": inspection()}, name="inspect")

    @wf.step()
    def archive(ctx: StepContext, found: Any) -> Any:
        if OUTAGE["on"]:
            raise TerminalError("archive offline")
        return sorted(found)

    return wf


def tiles() -> tuple[Workflow, ...]:
    """A parallel node whose branches are one-step workflows (nothing waits)."""
    glaze, fire = Workflow("glaze"), Workflow("fire")

    @glaze.step()
    def coat(ctx: StepContext, n: int) -> int:
        return n + 1

    @fire.step()
    def bake(ctx: StepContext, n: int) -> int:
        return n * 3

    wf = Workflow("tiles")

    @wf.step()
    def mould(ctx: StepContext, n: int) -> int:
        return n

    wf.parallel({"glaze": glaze, "fire": fire}, name="finish")

    @wf.step()
    def stack(ctx: StepContext, done: dict[str, int]) -> int:
        return done["glaze"] + done["fire"]

    return wf, glaze, fire


@contextmanager
def harness(where: str, *wfs: Workflow) -> Iterator[Harness]:
    if where == "memory":
        h: Harness = Harness(*wfs)
    elif where == "sqs":
        h = SqsHarness(*wfs)
    else:
        h = SfnHarness(*wfs, poll_timeout_s=6.0)
    with h:
        yield h


def children(h: Harness, run_id: str) -> list[str]:
    return [r for r in h.runs() if r != run_id]


@pytest.mark.parametrize("where", HARNESSES)
def test_cancelling_a_parent_ends_its_childrens_executions_at_once(where: str) -> None:
    with harness(where, survey()) as h:
        run_id = h.start("survey", "quarry")
        assert h.run(run_id) == "RUNNING"  # its node waits for children that wait for events
        kids = children(h, run_id)
        assert len(kids) == 2 and {h.status(k) for k in kids} == {"WAITING"}
        h.cancel(run_id)
        assert h.status(run_id) == "CANCELLED" and {h.status(k) for k in kids} == {"CANCELLED"}
        if isinstance(h, SfnHarness):  # no sweep, no time passing: stopped by the cancel itself
            assert {h.execution_status(r) for r in (run_id, *kids)} == {"ABORTED"}


@pytest.mark.parametrize("skip", [0, 1])
@pytest.mark.parametrize("where", HARNESSES)
def test_a_crash_inside_a_redrive_then_a_sweep(where: str, skip: int) -> None:
    OUTAGE["on"] = True
    wf, glaze, fire = tiles()
    archive = survey()
    with harness(where, archive, wf, glaze, fire) as h:
        run_id = h.start("survey", "quarry")
        h.run(run_id)
        for k in children(h, run_id):
            h.send_event(k, "signed", k[-4:])
        assert h.run(run_id) == "FAILED"
        OUTAGE["on"] = False
        h.crash_at("api_redrive", skip=skip)  # after the run's write (0), after the nodes' (1)
        with pytest.raises(InjectedCrash):
            h.redrive(run_id)
        h.run(run_id)  # no execution was started: nothing moves, nothing raises
        h.advance(400)
        h.sweep()
        status = h.run(run_id)
        if skip == 0:  # the node was still FAILED: the sweeper failed the run again; redrive again
            assert status == "FAILED"
            h.redrive(run_id)
            status = h.run(run_id)
        assert status == "SUCCEEDED", h.engine.get_run(run_id).error
        assert len(h.output(run_id)) == 2


@pytest.mark.parametrize("branch_node", ["coat", "bake"])
@pytest.mark.parametrize("where", HARNESSES)
def test_run_waits_for_a_parallel_node_whose_branch_start_crashed(where: str, branch_node: str) -> None:
    """``run()`` returns when nothing moves on its own, on every harness: the parent task's retry
    restarts a branch whose start was lost, so the run finishes without a sweep."""
    for _ in range(5 if where == "sfn" else 1):  # it returned RUNNING early in 3 of 5 tries
        with harness(where, *tiles()) as h:
            h.crash_at("before_handoff", node=branch_node)
            run_id = h.start("tiles", 4)
            status = h.run(run_id)
            for _ in range(3 if where != "sfn" else 0):  # a queue transport: the redelivery comes later
                if status == "SUCCEEDED":
                    break
                h.advance(400)
                h.sweep()
                status = h.run(run_id)
            assert status == "SUCCEEDED", h.engine.get_run(run_id).error
            assert h.output(run_id) == 5 + 12


def test_an_event_for_a_retired_version_stops_the_runs_execution() -> None:
    with harness("sfn", survey()) as h:
        assert isinstance(h, SfnHarness)
        run_id = h.start("survey", "quarry")
        h.run(run_id)
        kid = children(h, run_id)[0]
        stopped: list[str] = []
        client = h.sfn_handoff.client
        stop = client.stop_execution

        def spy(**kw: Any) -> Any:
            stopped.append(kw["executionArn"].rsplit(":", 1)[1])
            return stop(**kw)

        client.stop_execution = spy  # type: ignore[method-assign]
        retired = Registry([inspection(version="2")])  # the next deployment has another version only
        h.registry = h.engine.registry = retired
        with pytest.raises(VersionNotRegistered):
            h.send_event(kid, "signed", "late")
        assert h.status(kid) == "FAILED"
        assert kid in stopped  # before: the run failed and its execution kept waiting for a callback
