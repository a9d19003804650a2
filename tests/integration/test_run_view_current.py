"""What the run view says an operator should look at (issue 15): ``current`` names the node (with its
iteration) that runs, waits or failed (it stayed at the first node except while a wait waited), and
``effect_reruns`` counts only effects that really ran again (a restart ``reconcile()`` answered is
not a double payment)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import StepContext, TerminalError, Workflow, goto
from stepchain.testing import Harness, SfnHarness, SqsHarness

HARNESSES = ("memory", "sqs", "sfn")
SENT: list[str] = []


def kiln() -> tuple[Workflow, Workflow]:
    """``heat`` adds 100 each round until ``probe`` reads 300 or more (iteration 2 from 10), then
    ``vent`` (it fails on an odd reading) and a ``cool`` child that waits for an all-clear."""
    cool = Workflow("cool")

    @cool.step()
    def drain(ctx: StepContext, t: int) -> int:
        return t

    cool.wait_for_event("all_clear", timeout_s=3600)

    wf = Workflow("kiln", max_iterations=6)

    @wf.step()
    def heat(ctx: StepContext, t: int) -> int:
        return t + 100

    @wf.step(routes=("heat", "vent"))
    def probe(ctx: StepContext, t: int) -> Any:
        return goto("vent", t) if t >= 300 else goto("heat", t)

    @wf.step()
    def vent(ctx: StepContext, t: int) -> int:
        if t % 2:
            raise TerminalError("vent stuck")
        return t

    wf.call(cool, name="settle")
    return wf, cool


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


@pytest.mark.parametrize("where", HARNESSES)
def test_current_names_the_node_that_failed_or_waits_in_its_iteration(where: str) -> None:
    with harness(where, *kiln()) as h:
        failed = h.start("kiln", 11)  # 111, 211, 311: vent~00002 fails
        assert h.run(failed) == "FAILED"
        assert h.view(failed).current == "vent~00002"  # it named heat (the first node) before
        held = h.start("kiln", 10)  # 110, 210, 310: settle~00002 waits for its child
        assert h.run(held) == "RUNNING"
        assert h.view(held).current == "settle~00002"


def test_current_follows_a_running_run_step_by_step() -> None:
    with Harness(*kiln()) as h:
        run_id = h.start("kiln", 10)
        seen = [h.view(run_id).current]
        for _ in range(7):
            h.run(run_id, max_activations=1)
            seen.append(h.view(run_id).current)
    assert seen == [
        "heat",
        "probe",
        "heat~00001",
        "probe~00001",
        "heat~00002",
        "probe~00002",
        "vent~00002",
        "settle~00002",
    ]


def charging() -> Workflow:
    wf = Workflow("till")

    @wf.step()
    def charge(ctx: StepContext, amount: int) -> Any:
        def pay() -> str:
            SENT.append(ctx.idempotency_key)
            return "paid"

        return ctx.once("pay", pay, reconcile=lambda: "paid" if SENT else None)

    return wf


@pytest.mark.parametrize("where", ["memory", "sfn"])
def test_an_effect_reconcile_answered_is_not_counted_as_a_rerun(where: str) -> None:
    SENT.clear()
    with harness(where, charging()) as h:
        h.crash_at("effect_window", node="charge")
        run_id = h.start("till", 5)
        assert h.run(run_id) == "SUCCEEDED"
        assert h.effects == Counter({"charge/pay": 1}) and len(SENT) == 1  # it ran once
        assert h.view(run_id).nodes[0].effect_reruns == 0  # it counted 1 before
