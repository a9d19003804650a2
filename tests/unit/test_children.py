"""Child workflows and parallel branches, without I/O: the definitions (``wf.call``,
``wf.parallel``), child run ids, the ASL fragment, the generated template and ``stepchain asl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stepchain.cli import main
from stepchain.define.workflow import NodeKind, Registry, Workflow
from stepchain.deploy.asl import LAMBDA_INVOKE_CALLBACK, to_asl
from stepchain.deploy.samgen import build, plan
from stepchain.engine.nodes.children import child_run_id, split_parent
from stepchain.exceptions import ValidationError


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

    def sids(policy: str) -> dict[str, Any]:
        return {s["Sid"]: s for s in res[policy]["Properties"]["PolicyDocument"]["Statement"]}

    def attached(lid: str) -> list[Any]:
        return list(res[lid]["Properties"]["Policies"])

    # the control function serves call/parallel nodes: it starts the children (their state machines only),
    # cancels them (StopExecution, a Query of the child's partition) and, for a parallel join, reads and
    # writes their outputs
    control = sids("ChildRunsPolicy")
    assert set(control) == {"StartChildRuns", "StopChildRuns", "CancelChildNodes", "ChildPayloads"}
    started = {r["Fn::Sub"].rsplit("-", 1)[1] for r in control["StartChildRuns"]["Resource"]}
    assert started == {"email", "charge", "inventory"}  # not the parent's own state machine
    assert control["StartChildRuns"]["Action"] == "states:StartExecution"
    assert control["StopChildRuns"]["Action"] == "states:StopExecution"
    assert {"Ref": "ChildRunsPolicy"} in attached("ControlFunction")
    # the worker of the children's steps ends child runs: it completes the parent's token and, when a
    # parallel branch failed, stops the other branches
    ending = sids("EndChildRunsPolicy")
    assert set(ending) == {"CompleteParentTokens", "StopChildRuns"}
    assert {"Ref": "EndChildRunsPolicy"} in attached("PriceFunction")  # "work" shares the steps' function
    assert {"Ref": "ChildRunsPolicy"} not in attached("PriceFunction")
    assert {"Ref": "EndChildRunsPolicy"} not in attached("ControlFunction")
    # the sweeper re-joins a parallel node: it reads and writes the outputs
    assert [s["Sid"] for p in attached("SweeperFunction") if isinstance(p, dict) for s in p.get("Statement", [])][
        -1:
    ] == ["ChildPayloads"]
    assert "ChildRunsPolicy" not in build([child("solo")], code_uri="src/")["Resources"]


def test_with_call_nodes_only_the_children_s_workers_may_complete_a_parent_token() -> None:
    """A call node's join passes the child's output on (no payloads); only the functions serving the
    child's steps end child runs; a step function of the parent alone gets no child permission."""
    top = Workflow("top")
    top.step(name="first", function="TopFunction")(noop)
    top.call(child("kid"), name="delegate")
    res = build([top], code_uri="src/")["Resources"]
    control = {s["Sid"] for s in res["ChildRunsPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    assert control == {"StartChildRuns", "StopChildRuns", "CancelChildNodes"}
    ending = res["EndChildRunsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [(s["Sid"], s["Action"], s["Resource"]) for s in ending] == [
        ("CompleteParentTokens", "states:SendTaskSuccess", "*")
    ]
    kid_fn = [
        lid for lid, r in res.items() if {"Ref": "EndChildRunsPolicy"} in r.get("Properties", {}).get("Policies", [])
    ]
    assert kid_fn == ["WorkFunction"]
    assert not [p for p in res["TopFunction"]["Properties"]["Policies"] if "Child" in str(p)]


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
