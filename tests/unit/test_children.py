"""Child workflows and parallel branches, without I/O: the definitions (``wf.call``,
``wf.parallel``), child run ids, the ASL fragment, the generated template and ``stepchain asl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stepchain.asl import LAMBDA_INVOKE_CALLBACK, to_asl
from stepchain.cli import main
from stepchain.engine.nodes.children import child_run_id, split_parent
from stepchain.exceptions import ValidationError
from stepchain.samgen import build, plan
from stepchain.workflow import NodeKind, Registry, Workflow


def noop(ctx: Any, value: Any) -> Any:
    return value


def child(name: str) -> Workflow:
    wf = Workflow(name)
    wf.step(name="work")(noop)
    return wf


def parent() -> Workflow:
    wf = Workflow("orders")
    wf.step(name="price")(noop)
    wf.call(child("charge"), name="pay")
    wf.parallel({"inventory": child("inventory"), "email": "email"}, name="fulfil", on_error="collect")
    wf.step(name="confirm")(noop)
    return wf


def test_call_and_parallel_are_nodes_with_branches() -> None:
    wf = parent()
    pay, fulfil = wf.node("pay"), wf.node("fulfil")
    assert (pay.kind, pay.branches, pay.function_name) == (NodeKind.CALL, (("call", "charge"),), "ControlFunction")
    assert (fulfil.kind, fulfil.branches, fulfil.on_error) == (
        NodeKind.PARALLEL,
        (("inventory", "inventory"), ("email", "email")),
        "collect",
    )
    assert set(wf.children) == {"charge", "inventory"}  # Workflow objects; "email" is a name
    other = Workflow("x")
    other.call("summarize")
    assert other.nodes[0].id == "call_summarize"


@pytest.mark.parametrize(
    ("branches", "on_error", "message"),
    [
        ({}, "fail", "at least one branch"),
        ({"Bad": "a"}, "fail", "branch name"),
        ({"a": "a"}, "ignore", "on_error"),
        ({"a": "Not A Name"}, "fail", "a child workflow"),
    ],
)
def test_parallel_definitions_are_checked(branches: dict[str, Any], on_error: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Workflow("x").parallel(branches, on_error=on_error)


def test_the_version_depends_on_the_branches_and_other_nodes_sign_as_before() -> None:
    a, b = Workflow("x"), Workflow("x")
    a.call("one", name="c")
    b.call("two", name="c")
    assert a.version != b.version
    step = Workflow("y")
    step.step(name="s")(noop)
    assert set(step.nodes[0].signature()) == {"id", "kind", "seconds", "event", "max_concurrency"}


def test_registering_a_parent_registers_the_child_workflows_it_was_given() -> None:
    reg = Registry([parent()])
    assert reg.names() == ["charge", "inventory", "orders"]


def test_child_run_ids_are_derived_from_parent_node_branch_and_generation() -> None:
    run = "019b76daa800b9c9849e9bd4"
    ids = {
        child_run_id(run, key, branch, gen)
        for key in ("pay", "pay#00001", "pay~00002")
        for branch in ("call", "email")
        for gen in (0, 1)
    }
    assert len(ids) == 12
    one = child_run_id(run, "pay", "call")
    assert one == child_run_id(run, "pay", "call", 0) and len(one) == 24 and one[:12] == run[:12]
    assert int(one, 16) >= 0  # hex: a valid Step Functions execution name
    assert split_parent(f"{run}/fulfil/email") == (run, "fulfil", "email")


def test_the_asl_of_a_call_or_parallel_node_is_a_callback_task() -> None:
    states = to_asl(parent())["States"]
    for node, nxt in (("pay", "fulfil"), ("fulfil", "confirm")):
        task = states[node]
        assert task["Resource"] == LAMBDA_INVOKE_CALLBACK
        assert task["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"
        assert task["Parameters"]["Payload"]["node"] == node
        assert "TimeoutSeconds" not in task  # children may take as long as they take
        assert task["Next"] == f"{node}.route" and task["Catch"][0]["Next"] == f"{node}.failed"
        route = {c["StringEquals"]: c["Next"] for c in states[f"{node}.route"]["Choices"]}
        assert route["DONE"] == nxt and route["FAILED"] == "Failed" and route["WAIT"] == f"{node}.wait"


def test_the_template_holds_the_child_workflows_and_their_permissions() -> None:
    email = child("email")
    app = plan([parent(), email])
    assert [wf.name for wf in app.workflows] == ["orders", "email", "charge", "inventory"]
    tpl = build([parent(), email], code_uri="src/")
    res = tpl["Resources"]
    for name in ("Orders", "Email", "Charge", "Inventory"):
        assert res[f"{name}StateMachine"]["Type"] == "AWS::Serverless::StateMachine"
    policy = res["ChildRunsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    actions = {s["Sid"]: s["Action"] for s in policy}
    assert actions["StartChildRuns"] == "states:StartExecution" and actions["StopChildRuns"] == "states:StopExecution"
    assert len(policy[0]["Resource"]) == 4  # every state machine of the app
    for lid in ("ControlFunction", "PriceFunction"):
        assert {"Ref": "ChildRunsPolicy"} in res[lid]["Properties"]["Policies"]
    assert "ChildRunsPolicy" not in build([child("solo")], code_uri="src/")["Resources"]


def test_a_child_named_but_not_in_the_app_is_an_error() -> None:
    with pytest.raises(ValidationError, match="runs workflow 'email' as a child"):
        plan([parent()])


def test_stepchain_asl_writes_the_child_workflows_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "app_children.py"
    pkg.write_text(
        "from stepchain import Workflow\n"
        "kid = Workflow('kid')\n"
        "kid.step(name='work')(lambda ctx, v: v)\n"
        "wf = Workflow('boss')\n"
        "wf.call(kid, name='delegate')\n"
    )
    out = tmp_path / "sm"
    assert main(["asl", "app_children:wf", "--out", str(out), "--pythonpath", str(tmp_path)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["boss.asl.json", "kid.asl.json"]
    assert json.loads((out / "kid.asl.json").read_text())["States"]["work"]["Type"] == "Task"
    assert main(["asl", "app_children:wf", "--out", str(out), "--check", "--pythonpath", str(tmp_path)]) == 0
