"""No run strands (issue 15): a node the sweeper re-issues and that never makes progress fails its
run after ``SweepPolicy.max_reissues`` re-issues (``STEPCHAIN_SWEEP_MAX_REISSUES``), with a reason
naming the node, on every harness. Before, an activation that claimed the node and released it
again (its input not found: what a routed-to call node's task did on Step Functions) reset the
"last progress" moment, so the count never reached the bound and the run was re-issued forever.
And the sweeper's Step Functions execution started at a routed-to node names its input's node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stepchain import StepContext, Workflow, goto
from stepchain.engine.sweeper import SweepPolicy
from stepchain.engine.worker import Worker
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation
from stepchain.handoff.stepfunctions import StepFunctionsHandoff
from stepchain.store.records import RunRecord, RunStatus
from stepchain.testing import Harness, SfnHarness, SqsHarness

GRACE_S = 300


def relay() -> Workflow:
    wf = Workflow("relay")

    @wf.step(routes=("detour", "anchor"))
    def start_leg(ctx: StepContext, n: int) -> Any:
        return goto("anchor", n + 1)

    @wf.step()
    def detour(ctx: StepContext, n: int) -> int:
        return -n

    @wf.step()
    def anchor(ctx: StepContext, n: int) -> int:
        return n * 2

    return wf


@contextmanager
def harness(where: str) -> Iterator[Harness]:
    if where == "memory":
        h: Harness = Harness(relay())
    elif where == "sqs":
        h = SqsHarness(relay())
    else:
        h = SfnHarness(relay(), poll_timeout_s=6.0)
    with h:
        yield h


@pytest.mark.parametrize("where", ["memory", "sqs", "sfn"])
def test_a_node_released_on_every_reissue_fails_the_run_naming_it(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Worker.input_of

    def never_ready(self: Worker, wf: Workflow, node: Any, msg: Activation, rec: Any) -> str | None:
        return None if node.id == "anchor" else real(self, wf, node, msg, rec)  # its input never found

    monkeypatch.setattr(Worker, "input_of", never_ready)
    monkeypatch.setenv("STEPCHAIN_SWEEP_MAX_REISSUES", "3")
    policy = SweepPolicy.from_env()
    with harness(where) as h:
        run_id = h.start("relay", 1)
        h.run(run_id)
        sweeps = 0
        while h.status(run_id) not in ("FAILED", "SUCCEEDED") and sweeps < 12:
            h.advance(GRACE_S + 61)
            h.sweep(policy)
            sweeps += 1
            h.run(run_id)
        run = h.engine.get_run(run_id)
        assert run.status is RunStatus.FAILED, f"still {run.status.value} after {sweeps} sweeps"
        assert run.error is not None and run.error["type"] == "SweeperGaveUp"
        assert run.error["node"] == "anchor" and "anchor" in run.error["message"]
        assert sweeps == 4  # 3 re-issues, then the 4th sweep gives up
        assert h.view(run_id).current == "anchor"


def test_the_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SweepPolicy.from_env() == SweepPolicy()
    monkeypatch.setenv("STEPCHAIN_SWEEP_MAX_REISSUES", "7")
    monkeypatch.setenv("STEPCHAIN_SWEEP_GRACE_S", "120")
    assert SweepPolicy.from_env() == SweepPolicy(grace_s=120.0, max_reissues=7)
    monkeypatch.setenv("STEPCHAIN_SWEEP_MAX_REISSUES", "0")
    with pytest.raises(ValidationError):
        SweepPolicy.from_env()


class _Sfn:
    """A Step Functions client double: no execution exists; StartExecution is recorded."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def describe_execution(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": "ExecutionDoesNotExist", "Message": "none"}}, "DescribeExecution")

    def start_execution(self, **kw: Any) -> Any:
        self.started.append(kw)
        return {}


def test_the_sweepers_execution_at_a_routed_to_node_names_its_input_node() -> None:
    client = _Sfn()
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:relay"
    handoff = StepFunctionsHandoff({"relay": arn}, client)  # type: ignore[arg-type]
    run = RunRecord("r1", "relay", "v", RunStatus.RUNNING, "{}", 0, 0)
    msg = Activation("r1", "relay", "v", "anchor", iteration=0, src="start_leg")
    assert handoff.recover(run, [msg]) == 1
    doc = json.loads(client.started[0]["input"])
    assert (doc["start_at"], doc["src"]) == ("anchor", "start_leg")  # it read detour's (never ran) before
