"""The deployed recovery sweeper (template.yaml's SweeperFunction) moves stuck runs on, on LocalStack.

A stack with ``Transport=stepfunctions`` is deployed with one test-only override
(``SweeperFunction`` ``STEPCHAIN_SWEEP_GRACE_S=1``, so the test need not wait five minutes). The
test plays the API Lambda dying half-way, with the real engine code pointed at the deployed table:

1. a start dies after writing the run, before StartExecution: the run is RUNNING, with no execution;
2. later, an event delivery dies after completing the wait, before SendTaskSuccess: the run is
   RUNNING, its execution blocked on the wait's task token.

Each time the deployed sweeper function is invoked directly (``lambda.invoke``, the payload the
schedule sends) until the run moves: the EventBridge rule (rate(1 minute)) is deployed and checked,
but the test does not wait on LocalStack's scheduler to fire it. Completed steps run once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.deployed import Stack, deploy_stacks, until

from research_agent.workflow import wf
from stepchain.engine import Engine
from stepchain.runtimes.aws import AwsClients, build_engine
from stepchain.settings import Settings
from stepchain.testing import InjectedCrash
from stepchain.testing.probe import HarnessProbe

pytestmark = pytest.mark.e2e

STACK = "sc-e2e-sweep"
SETS = ("SweeperFunction.Environment.Variables.STEPCHAIN_SWEEP_GRACE_S=1",)
QUESTION = "How much did battery pack prices fall in 2024?"
RUN_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def stack(localstack_endpoint: str) -> Iterator[Stack]:
    yield deploy_stacks(localstack_endpoint, {STACK: ({"Transport": "stepfunctions", "ApiAuth": "iam"}, SETS)})[STACK]


def api_engine(stack: Stack, probe: HarnessProbe) -> Engine:
    """The engine the ApiFunction runs, built from its deployed environment, with a crash probe."""
    env = stack.client("lambda").get_function_configuration(FunctionName=stack.function_name("ApiFunction"))
    clients = AwsClients(
        dynamodb=stack.client("dynamodb"), s3=stack.client("s3"), stepfunctions=stack.client("stepfunctions")
    )
    engine = build_engine([wf], Settings.from_env(env["Environment"]["Variables"]), clients=clients)
    engine.probe = engine.handoff.probe = probe
    return engine


def sweep_until(stack: Stack, moved: Any, what: str) -> int:
    """Invoke the deployed sweeper until ``moved()``; returns how many re-issues our invocations
    reported (the scheduled rule may fire in between and do it: then 0)."""
    acted = 0

    def probe() -> Any:
        nonlocal acted
        report = stack.invoke("SweeperFunction", {"source": "aws.events", "detail-type": "Scheduled Event"})
        assert not report["errors"], report
        acted += int(report["acted"])
        return moved()

    time.sleep(1.5)  # the grace period (1 s) after the dead call's last write
    until(probe, timeout_s=60, interval_s=3, what=what)
    return acted


def test_deployed_sweeper_finishes_a_dead_start_and_a_dead_event_delivery(stack: Stack) -> None:
    rule = stack.client("events").describe_rule(Name=stack._resource("SweeperFunctionEveryMinute"))
    assert rule["ScheduleExpression"] == "rate(1 minute)" and rule["State"] == "ENABLED"

    probe = HarnessProbe()
    engine = api_engine(stack, probe)
    api = stack.api()

    probe.crash("api_start")  # after the run and its first node are written, before StartExecution
    with pytest.raises(InjectedCrash):  # as the API starts it: LocalStack's IAM stack runs with RunOwnership=off
        engine.runs.start(wf.name, {"question": QUESTION, "max_sources": 2}, owner=None)
    [run] = [r for r in engine.store.list_active_runs().runs if r.workflow == wf.name]
    assert api.run(run.run_id)["status"] == "RUNNING"
    sfn = stack.client("stepfunctions")
    arn = stack.outputs["ResearchAgentStateMachineArn"]
    if sfn.list_executions(stateMachineArn=arn)["executions"]:
        # only a sweeper starts it after this crash: the deployed schedule (grace 1 s here) got there first
        assert "swept" in [c.kind for c in engine.store.list_crash_events(run.run_id)]
        by = [0]
    else:
        by = [sweep_until(stack, lambda: sfn.list_executions(stateMachineArn=arn)["executions"], "the execution")]
    api.wait_status(run.run_id, ["WAITING"], timeout_s=RUN_TIMEOUT_S)

    probe.crash("api_event", node="approval", skip=1)  # the wait completed, SendTaskSuccess not sent
    with pytest.raises(InjectedCrash):
        engine.deliver_event(run.run_id, "approval", {"approved": True, "reviewer": "e2e"})
    assert api.run(run.run_id)["status"] == "RUNNING"
    by.append(sweep_until(stack, lambda: engine.store.get_node(run.run_id, "draft"), "the successor started"))
    done = api.wait_status(run.run_id, ["SUCCEEDED"], timeout_s=RUN_TIMEOUT_S)

    statuses = {n["key"]: n["status"] for n in done["nodes"] if "#" not in n["key"]}
    assert set(statuses.values()) == {"SUCCEEDED"}, statuses
    assert all(n["invocations"] >= 1 for n in done["nodes"])
    steps = {n.key: n for n in engine.store.list_nodes(run.run_id)}
    assert steps["plan"].history and [h.outcome for h in steps["plan"].history].count("succeeded") == 1
    kinds = [c.kind for c in engine.store.list_crash_events(run.run_id)]
    assert kinds.count("swept") >= 2, kinds  # both recoveries are on the run's record
    # who moved it: our direct invocations (acted > 0), or the deployed schedule in between (0)
    print(f"\n[e2e] sweeper re-issues by direct invocation: {by} (0 = the scheduled rule got there first)")
