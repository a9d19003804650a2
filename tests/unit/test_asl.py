"""The generated Amazon States Language: structure, placeholders, determinism, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stepchain import RetryPolicy, Workflow
from stepchain.cli import main
from stepchain.deploy.asl import (
    LAMBDA_INVOKE,
    LAMBDA_INVOKE_CALLBACK,
    SIGNAL_ERRORS,
    SIGNALLED,
    dumps,
    function_names,
    signal_error,
    substitute,
    to_asl,
    write_asl,
)

STATE_TYPES = {"Task", "Choice", "Wait", "Map", "Pass", "Fail", "Succeed"}


def make_workflow() -> Workflow:
    wf = Workflow("asl-demo")

    @wf.step(retry=RetryPolicy(max_attempts=5, backoff_s=2, backoff_rate=3.0, max_backoff_s=60))
    def plan(ctx: Any, q: Any) -> Any:
        return q

    @wf.step(timeout_s=120)
    def fetch_pages(ctx: Any, p: Any) -> Any:
        return p

    @wf.map(max_concurrency=4)
    def summarize(ctx: Any, page: Any) -> Any:
        return page

    wf.wait_for_event("approval", timeout_s=7200)
    wf.sleep(600)

    @wf.step()
    def draft(ctx: Any, x: Any) -> Any:
        return x

    return wf


WF = make_workflow()
DOC = to_asl(WF)
STATES: dict[str, Any] = DOC["States"]


def all_states(states: dict[str, Any]) -> dict[str, Any]:
    """Every state, the Map's item processor included."""
    found = dict(states)
    for st in states.values():
        if st["Type"] == "Map":
            found.update(all_states(st["ItemProcessor"]["States"]))
    return found


def transitions(state: dict[str, Any]) -> list[str]:
    targets = [state["Next"]] if "Next" in state else []
    targets += [c["Next"] for c in state.get("Choices", [])]
    targets += [c["Next"] for c in state.get("Catch", [])]
    if "Default" in state:
        targets.append(state["Default"])
    return targets


def test_every_node_has_its_state_and_the_route_reaches_each() -> None:
    for node in WF.nodes:
        assert node.id in STATES
    assert DOC["StartAt"] == "Route"
    route = STATES["Route"]
    assert route["Default"] == "plan"
    assert [c["Next"] for c in route["Choices"]] == [n.id for n in WF.nodes]
    for choice in route["Choices"]:
        present, equals = choice["And"]
        assert present == {"Variable": "$.start_at", "IsPresent": True}
        assert equals["StringEquals"] == choice["Next"]


def test_document_is_structurally_valid() -> None:
    """Every transition names a state of its own scope; every state has a known type; every
    non-terminal state has a way out; every state is reachable from StartAt."""

    def check(scope: dict[str, Any], start: str) -> None:
        assert start in scope
        for name, st in scope.items():
            assert st["Type"] in STATE_TYPES, name
            assert len(name) <= 80
            outs = transitions(st)
            if st["Type"] in ("Fail", "Succeed"):
                assert not outs
            else:
                assert outs, f"{name} has no transition"
            for target in outs:
                assert target in scope, f"{name} -> {target} is not a state"
            if st["Type"] == "Map":
                proc = st["ItemProcessor"]
                check(proc["States"], proc["StartAt"])
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(transitions(scope[name]))
        assert seen == set(scope), f"unreachable: {set(scope) - seen}"

    check(STATES, DOC["StartAt"])


def test_placeholders_are_the_function_logical_ids() -> None:
    text = dumps(DOC)
    found = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))
    expected = {n.function_name + "Arn" for n in WF.nodes} | {"ControlFunctionArn"}
    assert found == expected
    assert "PlanFunctionArn" in found and "FetchPagesFunctionArn" in found
    assert STATES["plan"]["Parameters"]["FunctionName"] == "${PlanFunctionArn}"
    assert STATES["sleep_4"]["Parameters"]["FunctionName"] == "${ControlFunctionArn}"
    assert STATES["approval"]["Parameters"]["FunctionName"] == "${ControlFunctionArn}"
    assert function_names(WF) == sorted(f[: -len("Arn")] for f in expected)


def test_substitute_fills_every_placeholder_or_says_which_is_missing() -> None:
    arns = {fn: f"arn:aws:lambda:us-east-1:1:function:{fn}" for fn in function_names(WF)}
    text = substitute(DOC, arns)
    assert "${" not in text and json.loads(text)["StartAt"] == "Route"
    with pytest.raises(ValueError, match="DraftFunction"):
        substitute(DOC, {k: v for k, v in arns.items() if k != "DraftFunction"})


def test_step_task_payload_is_a_reference_and_results_are_selected() -> None:
    task = STATES["fetch_pages"]
    assert task["Resource"] == LAMBDA_INVOKE
    assert task["Parameters"]["Payload"] == {
        "run_id.$": "$.run_id",
        "workflow.$": "$.workflow",
        "version.$": "$.version",
        "node": "fetch_pages",
        # the loop iteration, and the reference to its input the predecessor's task handed on
        "iteration.$": "$.iteration",
        "src.$": "$.src",
        "input.$": "$.input",
    }
    fields = ("run_id", "workflow", "version", "node", "index", "status", "wake_at", "items", "error")
    assert set(task["ResultSelector"]) == {f"{f}.$" for f in (*fields, "iteration", "src", "input", "route")}
    assert all(v.startswith("$.Payload.") for v in task["ResultSelector"].values())
    assert task["TimeoutSeconds"] > 120  # the node's timeout plus a margin
    assert task["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "fetch_pages.failed"}
    assert STATES["fetch_pages.failed"]["Next"] == "MarkFailed"
    mark = STATES["MarkFailed"]
    assert mark["Parameters"]["Payload"]["action"] == "fail" and mark["Next"] == "Failed"
    assert STATES["Failed"]["Type"] == "Fail"


def caught(task: dict[str, Any]) -> dict[str, str]:
    """Error name -> the state its Catch goes to (first match wins, as in Step Functions)."""
    out: dict[str, str] = {}
    for c in task.get("Catch", []):
        for err in c["ErrorEquals"]:
            out.setdefault(err, c["Next"])
    return out


def test_done_goes_straight_to_the_next_node_and_other_outcomes_leave_through_catch() -> None:
    """One state transition per step on the happy path (issue 10.2): no Choice after a step's Task."""
    assert STATES["plan"]["Next"] == "fetch_pages"
    assert "plan.route" not in STATES
    assert caught(STATES["plan"]) == {
        "stepchain.Continue": "plan.again",
        "stepchain.Wait": "plan.wake",
        "stepchain.Busy": "plan.wake",
        "stepchain.Failed": "Failed",
        "stepchain.Dropped": "Dropped",
        "stepchain.Suspended": "Dropped",
        "States.ALL": "plan.failed",
    }
    assert all(c["ResultPath"] == "$.error" for c in STATES["plan"]["Catch"])  # the input's ids pass on
    assert STATES["plan.again"] == {"Type": "Pass", "Next": "plan"}
    wake = STATES["plan.wake"]
    assert wake["Type"] == "Pass" and wake["Next"] == "plan.wait" and wake["ResultPath"] == "$.signal"
    assert wake["Parameters"] == {"cause.$": "States.StringToJson($.error.Cause)"}
    assert STATES["plan.wait"] == {"Type": "Wait", "TimestampPath": "$.signal.cause.errorMessage", "Next": "plan"}
    assert STATES["draft"]["Next"] == "Succeeded"
    assert STATES["Succeeded"] == {"Type": "Succeed"}


def test_signals_are_never_retried() -> None:
    """States.TaskFailed matches every error name: the signals' MaxAttempts 0 retrier must come first."""
    first = STATES["plan"]["Retry"][0]
    assert first == {"ErrorEquals": list(SIGNAL_ERRORS), "MaxAttempts": 0}
    assert set(SIGNAL_ERRORS) == {signal_error(s) for s in SIGNALLED} and "stepchain.Continue" in SIGNAL_ERRORS


def test_retry_comes_from_the_node_policy() -> None:
    _signals, retrier = STATES["plan"]["Retry"]
    assert retrier["MaxAttempts"] == 5
    assert retrier["IntervalSeconds"] == 2
    assert retrier["BackoffRate"] == 3.0
    assert retrier["MaxDelaySeconds"] == 60
    assert set(retrier["ErrorEquals"]) == {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "States.TaskFailed",
        "States.Timeout",
    }
    _signals, default = STATES["draft"]["Retry"]
    assert default["MaxAttempts"] == 3 and default["IntervalSeconds"] == 1


def test_map_fans_out_iterates_with_max_concurrency_and_joins() -> None:
    assert STATES["summarize"]["Next"] == "summarize.route"
    fan = {c["StringEquals"]: c["Next"] for c in STATES["summarize.route"]["Choices"]}
    assert fan == {"FANOUT": "summarize.items"} and STATES["summarize.route"]["Default"] == "approval"
    m = STATES["summarize.items"]
    assert m["Type"] == "Map" and m["MaxConcurrency"] == 4
    assert m["ItemsPath"] == "$.items" and m["ResultPath"] is None
    assert m["ItemSelector"]["index.$"] == "$$.Map.Item.Value"
    assert m["Next"] == "summarize.join"
    inner = m["ItemProcessor"]["States"]
    item = inner[m["ItemProcessor"]["StartAt"]]
    assert item["Parameters"]["Payload"]["index.$"] == "$.index"
    assert item["Parameters"]["FunctionName"] == "${SummarizeFunctionArn}"
    assert item["Next"] == "summarize.item.done" and inner["summarize.item.done"]["Type"] == "Succeed"
    assert caught(item)["stepchain.Failed"] == "summarize.item.failed" and "States.ALL" not in caught(item)
    assert inner["summarize.item.wait"]["TimestampPath"] == "$.signal.cause.errorMessage"
    join = STATES["summarize.join"]
    assert join["Parameters"]["Payload"]["action"] == "join"
    assert join["Next"] == "approval"


def test_wait_for_event_uses_a_task_token_and_expires_on_timeout() -> None:
    wait = STATES["approval"]
    assert wait["Resource"] == LAMBDA_INVOKE_CALLBACK
    assert wait["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"
    assert wait["TimeoutSeconds"] == 7200
    assert "HeartbeatSeconds" not in wait
    assert all("States.Timeout" not in r["ErrorEquals"] for r in wait["Retry"])
    assert wait["Catch"][0] == {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "approval.expire"}
    expire = STATES["approval.expire"]
    assert expire["Parameters"]["Payload"]["action"] == "expire"
    assert expire["Next"] == "sleep_4"  # DONE: the event came after all (its SendTaskSuccess was lost)
    assert all(caught(expire)[e] == "Failed" for e in SIGNAL_ERRORS)
    route = {c["StringEquals"]: c["Next"] for c in STATES["approval.route"]["Choices"]}  # SendTaskSuccess's state
    assert route["DONE"] == "sleep_4" and route["WAIT"] == "approval.wait"


def test_sleep_waits_until_wake_at_then_runs_again() -> None:
    assert STATES["sleep_4"]["Next"] == "draft" and caught(STATES["sleep_4"])["stepchain.Wait"] == "sleep_4.wake"
    assert STATES["sleep_4.wait"]["Next"] == "sleep_4"


def test_output_is_deterministic() -> None:
    assert dumps(to_asl(make_workflow())) == dumps(DOC)
    text = dumps(DOC)
    assert text.endswith("\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_write_asl_and_cli_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    path = write_asl(WF, tmp_path / "sm")
    assert path == tmp_path / "sm" / "asl-demo.asl.json"
    assert json.loads(path.read_text()) == DOC
    spec = f"{__name__}:WF"
    out = tmp_path / "cli"
    assert main(["asl", spec, "--check", "--out", str(out)]) == 1  # missing file is stale
    assert main(["asl", spec, "--out", str(out)]) == 0
    assert (out / "asl-demo.asl.json").read_text() == dumps(DOC)
    assert main(["asl", spec, "--check", "--out", str(out)]) == 0
    (out / "asl-demo.asl.json").write_text("{}\n")
    assert main(["asl", spec, "--check", "--out", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not a stepchain Workflow"):
        main(["asl", f"{__name__}:STATES"])
    with pytest.raises(SystemExit, match="MODULE:ATTR"):
        main(["asl", "no-colon"])


def test_checked_in_state_machine_is_not_stale() -> None:
    """statemachine/research-agent.asl.json must be what `make asl` generates from the workflow."""
    from research_agent.workflow import wf
    from stepchain.cli import main

    out = str(Path(__file__).resolve().parents[2] / "statemachine")
    assert main(["asl", "research_agent.workflow:wf", "--out", out, "--check"]) == 0, (
        "run `make asl` and commit statemachine/"
    )
    assert wf.name == "research-agent"
