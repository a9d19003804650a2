"""stepchain.deploy.samgen: grouping steps into functions, the per-function and per-workflow resources, overrides,
and `stepchain template [--check]` (no SAM CLI here: tests/template lints and transforms generated apps)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stepchain.cli import main
from stepchain.define.workflow import Workflow
from stepchain.deploy.asl import dumps, to_asl
from stepchain.deploy.samgen import _states_arn, build, overrides_path, plan
from stepchain.deploy.samgen_base import load_cfn, merge
from stepchain.engine.queue_routes import route_key
from stepchain.exceptions import ValidationError


def noop(ctx: Any, value: Any) -> Any:
    return value


def shop() -> Workflow:
    """a, b and e agree (default settings), c differs (memory), d asks for its own function."""
    wf = Workflow("shop")
    wf.step(name="a")(noop)
    wf.map(name="b")(noop)
    wf.step(name="c", memory_mb=2048, environment={"MODE": "fast"}, reserved_concurrency=3)(noop)
    wf.wait_for_event("paid")
    wf.step(name="d", function="LonelyFunction")(noop)
    wf.sleep(60, name="nap")
    wf.step(name="e")(noop)
    return wf


def resources_of(tpl: dict[str, Any], kind: str) -> dict[str, Any]:
    return {lid: r for lid, r in tpl["Resources"].items() if r["Type"] == kind}


def test_steps_whose_settings_agree_share_a_function_and_the_asl_placeholders_map_to_it() -> None:
    wf = shop()
    app = plan([wf])
    assert [(f.logical_id, f.nodes) for f in app.functions] == [
        ("AFunction", ["a", "b", "e"]),
        ("CFunction", ["c"]),
        ("LonelyFunction", ["d"]),
        ("ControlFunction", []),
    ]
    tpl = build([wf], code_uri="src/")
    functions = resources_of(tpl, "AWS::Serverless::Function")
    assert set(functions) == {"AFunction", "CFunction", "LonelyFunction", "ControlFunction", "ApiFunction",
                              "SweeperFunction"}  # fmt: skip
    sm = tpl["Resources"]["ShopStateMachine"]["Properties"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", dumps(to_asl(wf))))
    assert placeholders == set(sm["DefinitionSubstitutions"])  # every placeholder, nothing else
    subs = {k: v["Fn::GetAtt"][0] for k, v in sm["DefinitionSubstitutions"].items()}
    assert subs == {"AFunctionArn": "AFunction", "BFunctionArn": "AFunction", "EFunctionArn": "AFunction",
                    "CFunctionArn": "CFunction", "LonelyFunctionArn": "LonelyFunction",
                    "ControlFunctionArn": "ControlFunction"}  # fmt: skip
    invoke = sm["Policies"][0]["Statement"][0]
    assert [r["Fn::GetAtt"][0] for r in invoke["Resource"]] == [
        "AFunction", "CFunction", "LonelyFunction", "ControlFunction"
    ]  # fmt: skip
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    a, c = route_key(wf.nodes[0]), route_key(wf.nodes[2])  # one entry per function, none per node
    assert a.startswith("s-") and a != c and route_key(wf.nodes[1]) == route_key(wf.nodes[-1]) == a
    assert env["STEPCHAIN_QUEUES"] == {
        "Fn::Sub": f'{{"{a}":"${{AQueue}}","{c}":"${{CQueue}}","LonelyFunction":"${{LonelyQueue}}",'
        '"*":"${ControlQueue}"}'
    }
    assert env["STEPCHAIN_STATE_MACHINE_PREFIX"]["Fn::Sub"].endswith(":stateMachine:${AWS::StackName}-")


def test_step_settings_become_the_functions_settings() -> None:
    tpl = build([shop()], code_uri="src/")
    res, params, conds = tpl["Resources"], tpl["Parameters"], tpl["Conditions"]
    c = res["CFunction"]["Properties"]
    assert (c["MemorySize"], c["Timeout"]) == (2048, 60)
    assert c["Environment"]["Variables"] == {"STEPCHAIN_FUNCTION": "CFunction", "MODE": "fast"}
    assert c["ReservedConcurrentExecutions"] == {
        "Fn::If": ["ReserveC", {"Ref": "CReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert params["CReservedConcurrency"]["Default"] == "3" and params["AReservedConcurrency"]["Default"] == ""
    assert {"ReserveA", "ReserveC", "ReserveLonely", "ReserveControl"} <= set(conds)
    assert res["AQueue"]["Properties"]["VisibilityTimeout"] == 360
    assert res["ControlQueue"]["Properties"]["VisibilityTimeout"] == 180
    assert {f"{q}Url" for q in ("AQueue", "CQueue", "LonelyQueue", "ControlQueue")} <= set(tpl["Outputs"])
    mappings = resources_of(tpl, "AWS::Lambda::EventSourceMapping")
    assert {m["Properties"]["FunctionName"]["Ref"] for m in mappings.values()} == {
        "AFunction", "CFunction", "LonelyFunction", "ControlFunction"
    }  # fmt: skip
    send = res["StepHandoffPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"]
    assert [r["Fn::GetAtt"][0] for r in send] == ["AQueue", "CQueue", "LonelyQueue", "ControlQueue"]
    groups = {r["Properties"]["LogGroupName"]["Fn::Sub"] for r in resources_of(tpl, "AWS::Logs::LogGroup").values()}
    for fn in ("AFunction", "CFunction", "LonelyFunction", "ControlFunction", "ApiFunction", "SweeperFunction"):
        assert f"/aws/lambda/${{{fn}}}" in groups


def test_extra_policies_follow_the_function_policies() -> None:
    extra = {"Statement": [{"Sid": "ReadThings", "Effect": "Allow", "Action": "s3:GetObject",
                            "Resource": "arn:aws:s3:::things/*"}]}  # fmt: skip
    wf = Workflow("pol")
    wf.step(name="reader", policies=[extra])(noop)
    policies = build([wf], code_uri="src/")["Resources"]["ReaderFunction"]["Properties"]["Policies"]
    assert policies[:2] == [{"Ref": "StepWorkerPolicy"}, {"Ref": "StepHandoffPolicy"}]
    assert policies[2]["Statement"][0]["Sid"] == "PollOwnQueue" and policies[3] == extra


def test_steps_naming_one_function_must_agree() -> None:
    wf = Workflow("clash")
    wf.step(name="a", function="Shared")(noop)
    wf.step(name="b", function="Shared", timeout_s=300)(noop)
    with pytest.raises(ValidationError, match="different function settings"):
        plan([wf])


def test_a_node_id_in_two_workflows_needs_one_function() -> None:
    one, two = Workflow("one"), Workflow("two")
    one.step(name="work")(noop)
    two.step(name="work", function="OtherFunction")(noop)
    with pytest.raises(ValidationError, match="SQS handoff routes by node id"):
        plan([one, two])
    three = Workflow("three")
    three.wait_for_event("work")  # a wait node `work`: served by the control function
    with pytest.raises(ValidationError, match="SQS handoff routes by node id"):
        plan([one, three])
    with pytest.raises(ValidationError, match="SQS handoff routes by node id"):
        plan([three, one])


def test_several_workflows_get_a_state_machine_each_and_the_api_may_drive_all() -> None:
    one, two = Workflow("one"), Workflow("two-b")
    one.step(name="x")(noop)
    two.step(name="y", timeout_s=10)(noop)
    two.wait_for_event("go")
    tpl = build([one, two], code_uri="src/")
    res = tpl["Resources"]
    assert {"OneStateMachine", "TwoBStateMachine", "OneStateMachineLogGroup", "TwoBStateMachineLogGroup"} <= set(res)
    assert {"OneStateMachineArn", "TwoBStateMachineArn"} <= set(tpl["Outputs"])
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert "STEPCHAIN_STATE_MACHINE_ARN" not in env and "STEPCHAIN_STATE_MACHINES" not in env
    prefix = env["STEPCHAIN_STATE_MACHINE_PREFIX"]["Fn::Sub"]  # + the workflow's name: its state machine's ARN
    for wf, lid in ((one, "OneStateMachine"), (two, "TwoBStateMachine")):
        assert {"Fn::Sub": prefix + wf.name} == _states_arn("stateMachine", wf)
        assert res[lid]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-" + wf.name}
    api = {s["Sid"]: s for p in res["ApiFunction"]["Properties"]["Policies"] if "Statement" in p
           for s in p["Statement"]}  # fmt: skip
    starts = [r["Fn::Sub"] for r in api["StartRunExecutions"]["Resource"]]
    assert [s.split(":stateMachine:")[1] for s in starts] == ["${AWS::StackName}-one", "${AWS::StackName}-two-b"]
    sweeper = {s["Sid"]: s for p in res["SweeperFunction"]["Properties"]["Policies"] if "Statement" in p
               for s in p["Statement"]}  # fmt: skip
    assert len(sweeper["InspectRunExecutions"]["Resource"]) == 2
    assert '"STATE_MACHINES"' not in json.dumps(tpl) and '"EXECUTIONS"' not in json.dumps(tpl)  # placeholders


def test_merge_adds_replaces_and_removes() -> None:
    base = {"A": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "B": 2}
    out = merge(base, {"A": {"y": [3], "z": {"j": 2}, "x": None}, "C": {"Ref": "X"}})
    assert out == {"A": {"y": [3], "z": {"k": 1, "j": 2}}, "B": 2, "C": {"Ref": "X"}}
    assert base == {"A": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "B": 2}  # not changed


def test_load_cfn_reads_short_form_tags() -> None:
    doc = load_cfn("a: !GetAtt Q.Arn\nb: !If [C, !Ref X, !Sub 'y-${Z}']\nc: !Equals [!Ref P, v]\n")
    assert doc == {
        "a": {"Fn::GetAtt": ["Q", "Arn"]},
        "b": {"Fn::If": ["C", {"Ref": "X"}, {"Fn::Sub": "y-${Z}"}]},
        "c": {"Fn::Equals": [{"Ref": "P"}, "v"]},
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"memory_mb": 64}, "memory_mb"), ({"reserved_concurrency": -1}, "reserved_concurrency"),
     ({"environment": {"1BAD": "x"}}, "environment variable names")],
)  # fmt: skip
def test_step_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Workflow("bad").step(name="a", **kwargs)


# ------------------------------------------------------------------------------ the command
APP = """
from stepchain import Workflow

wf = Workflow("tiny")


@wf.step(memory_mb=256)
def hello(ctx, name):
    return f"hello {name}"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tinyapp.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run(*args: str) -> int:
    return main(["template", "tinyapp:wf", "--pythonpath", ".", *args])


def test_overrides_survive_regeneration_and_check_reports_a_stale_template(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = project / "template.yaml"
    assert overrides_path(out) == project / "template.overrides.yaml"
    assert run("--out", str(out)) == 0
    first = load_cfn(out.read_text())
    assert first["Resources"]["HelloFunction"]["Properties"]["MemorySize"] == 256
    assert run("--out", str(out), "--check") == 0
    # a hand-made resource, a changed generated value and a removed generated key, in the overrides file
    overrides_path(out).write_text(
        "Resources:\n"
        "  AlarmTopic:\n    Type: AWS::SNS::Topic\n"
        "  HelloFunction:\n    Properties:\n      Description: greets\n      Layers: [!Ref ExtraLayer]\n"
        "  ApiUsagePlan: ~\n"
    )
    assert run("--out", str(out), "--check") == 1  # the overrides changed: the template on disk is stale
    err = capsys.readouterr().err
    assert "template.yaml is stale" in err and "lines differ" in err
    assert "added: Resources.AlarmTopic" in err and "removed: Resources.ApiUsagePlan" in err
    assert "changed: Resources.HelloFunction" in err
    assert run("--out", str(out)) == 0
    tpl = load_cfn(out.read_text())
    assert tpl["Resources"]["AlarmTopic"] == {"Type": "AWS::SNS::Topic"}
    hello = tpl["Resources"]["HelloFunction"]["Properties"]
    assert hello["Description"] == "greets" and hello["Layers"] == [{"Ref": "ExtraLayer"}]
    assert hello["MemorySize"] == 256  # the generated keys not overridden stay
    assert "ApiUsagePlan" not in tpl["Resources"]
    # a hand edit of the generated file is caught, and undone by regenerating
    out.write_text(out.read_text().replace("MemorySize: 256", "MemorySize: 128"))
    assert run("--out", str(out), "--check") == 1
    assert "-      MemorySize: 128" in capsys.readouterr().err
    assert run("--out", str(out)) == 0 and run("--out", str(out), "--check") == 0
    assert load_cfn(out.read_text()) == tpl


def test_check_fails_when_the_template_is_missing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--out", "nothere.yaml", "--check") == 1
    assert "nothere.yaml is stale" in capsys.readouterr().err
    assert not (project / "nothere.yaml").exists()


def test_a_short_timeout_function_gets_a_short_queue_visibility_and_no_heartbeat() -> None:
    """Issue 10.1/10.6: T + 5 s <= V (20 s) -> the queue's VisibilityTimeout is T + 5 s and the function is
    told so (its worker skips the heartbeat); longer functions keep 6 x T and the heartbeat. Kill -> resumed
    <= 30 s for every function either way (+ ~1 s poll, ~1 s cold start)."""
    from stepchain.engine.heartbeat import HeartbeatPolicy
    from stepchain.engine.short_queues import ENV_QUEUE_VISIBILITY, sqs_policy_from_env

    wf = Workflow("mixed")
    wf.step(name="quick", timeout_s=10)(noop)
    wf.step(name="edge", timeout_s=15)(noop)
    wf.step(name="slow", timeout_s=60)(noop)
    tpl = build([wf], code_uri="src/")
    res = tpl["Resources"]
    got = {q: res[q]["Properties"]["VisibilityTimeout"] for q in ("QuickQueue", "EdgeQueue", "SlowQueue")}
    assert got == {"QuickQueue": 15, "EdgeQueue": 20, "SlowQueue": 360}
    v = tpl["Parameters"]["MessageVisibilitySeconds"]["Default"]
    h = tpl["Parameters"]["HeartbeatSeconds"]["Default"]
    for fn in resources_of(tpl, "AWS::Lambda::EventSourceMapping").values():
        lid = fn["Properties"]["FunctionName"]["Ref"]
        props = res[lid]["Properties"]
        q = res[fn["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]["VisibilityTimeout"]
        assert q >= props["Timeout"]  # AWS refuses the mapping otherwise
        env = {"STEPCHAIN_SQS_VISIBILITY_S": str(v), "STEPCHAIN_HEARTBEAT_S": str(h)}
        env.update({k: str(x) for k, x in props["Environment"]["Variables"].items()})
        policy = sqs_policy_from_env(env)
        if ENV_QUEUE_VISIBILITY in props["Environment"]["Variables"]:
            assert int(env[ENV_QUEUE_VISIBILITY]) == q and policy is None
            assert q >= props["Timeout"] + 2 + 3  # the lease (deadline + 2 s) ends before the message returns
            assert q + 1 + 1 <= 30
        else:
            assert policy == HeartbeatPolicy(v, h) and policy.visibility_s + 1 + 1 <= 30
    assert {lid for lid, r in res.items() if ENV_QUEUE_VISIBILITY in r["Properties"].get("Environment", {})
            .get("Variables", {})} == {"QuickFunction", "EdgeFunction"}  # fmt: skip
