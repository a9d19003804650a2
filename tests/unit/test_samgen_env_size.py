"""The generated environment stays inside Lambda's 4 KB limit (keys + values of one function's variables)
whatever the number of steps: it grows with the worker functions (queues), never with the nodes.

Every ``Ref``/``GetAtt``/``${X}`` is resolved to a worst-case 110-character value (real queue URLs are
~90-110), the pseudo parameters to long realistic ones, so what is asserted is what CreateFunction sees."""

from __future__ import annotations

import json
import re
from typing import Any

from stepchain.define.workflow import Workflow
from stepchain.deploy.samgen import build, plan
from stepchain.engine.queue_routes import node_queues

LAMBDA_ENV_LIMIT = 4096
MARGIN = 1024  # room for a user's overrides and per-step environment
RESOLVED = "x" * 110  # a Ref / GetAtt / ${Resource}: a queue URL, an ARN
PSEUDO = {
    "AWS::Partition": "aws-us-gov",
    "AWS::Region": "ap-southeast-2",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "s" * 60,
    "AWS::URLSuffix": "amazonaws.com",
}


def noop(ctx: Any, value: Any) -> Any:
    return value


def app(workflows: int = 3, steps: int = 40) -> list[Workflow]:
    """``workflows`` chains of ``steps`` steps, with long node ids: most share the default function, every
    fifth one has its own settings (one function per distinct memory size) and every seventh names a
    function shared across workflows; each workflow also sleeps and waits (the control function)."""
    out = []
    for w in range(workflows):
        wf = Workflow(f"workflow-number-{w}")
        for s in range(steps):
            name = f"wf{w}_step_number_{s:03d}_with_a_long_name"
            if s % 7 == 3:
                wf.step(name=name, function=f"Shared{s % 3}Function")(noop)
            elif s % 5 == 0:
                wf.step(name=name, memory_mb=256 + 64 * (s % 4))(noop)
            else:
                wf.step(name=name)(noop)
            if s == steps // 2:
                wf.sleep(5, name=f"wf{w}_nap")
                wf.wait_for_event("go", name=f"wf{w}_wait")
        out.append(wf)
    return out


def resolve(value: Any, params: dict[str, Any]) -> str:
    """``value`` as CloudFormation would resolve it, with worst-case lengths (a stack parameter: its default)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        return re.sub(r"\$\{([\w:.]+)\}", lambda m: resolve({"Ref": m.group(1)}, params), text)
    if isinstance(value, dict) and ("Ref" in value or "Fn::GetAtt" in value):
        name = value.get("Ref")
        if name in params:
            return str(params[name].get("Default", RESOLVED))
        return PSEUDO.get(name, RESOLVED) if isinstance(name, str) else RESOLVED
    if isinstance(value, dict) and "Fn::If" in value:
        return max((resolve(v, params) for v in value["Fn::If"][1:]), key=len)
    raise AssertionError(f"unexpected environment value {value!r}")


def environments(tpl: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each function's resolved environment: the Globals' variables, then its own."""
    glob = tpl["Globals"]["Function"]["Environment"]["Variables"]
    out = {}
    for lid, res in tpl["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            own = res["Properties"].get("Environment", {}).get("Variables", {})
            out[lid] = {k: resolve(v, tpl["Parameters"]) for k, v in {**glob, **own}.items()}
    return out


def size(env: dict[str, str]) -> int:
    """What Lambda counts: the variables as JSON (keys and values, and a little more)."""
    return len(json.dumps(env, separators=(",", ":")).encode())


def test_the_app_is_as_large_as_intended() -> None:
    workflows = app()
    assert sum(len(wf.nodes) for wf in workflows) >= 3 * 40
    functions = plan(workflows).functions
    assert 7 <= len(functions) <= 12, [f.logical_id for f in functions]


def test_every_functions_environment_fits_with_a_margin_for_3_workflows_of_40_steps() -> None:
    tpl = build(app(), code_uri="src/")
    sizes = {lid: size(env) for lid, env in environments(tpl).items()}
    assert max(sizes.values()) <= LAMBDA_ENV_LIMIT - MARGIN, sizes


def test_the_environment_does_not_grow_with_the_number_of_steps() -> None:
    assert len(plan(app(steps=40)).functions) == len(plan(app(steps=200)).functions)  # the same functions
    small = environments(build(app(steps=40), code_uri="src/"))
    large = environments(build(app(steps=200), code_uri="src/"))
    assert size(large["ControlFunction"]) == size(small["ControlFunction"])
    assert size(large["ApiFunction"]) == size(small["ApiFunction"])


def test_the_environment_does_not_grow_with_the_number_of_workflows() -> None:
    assert len(plan(app(workflows=3)).functions) == len(plan(app(workflows=12)).functions)
    few = environments(build(app(workflows=3), code_uri="src/"))
    many = environments(build(app(workflows=12), code_uri="src/"))
    assert {lid: size(env) for lid, env in many.items()} == {lid: size(env) for lid, env in few.items()}


def test_the_runtime_routes_every_node_to_the_queue_of_the_function_the_template_serves_it_by() -> None:
    workflows = app()
    tpl = build(workflows, code_uri="src/")
    text = tpl["Globals"]["Function"]["Environment"]["Variables"]["STEPCHAIN_QUEUES"]["Fn::Sub"]
    env = json.loads(re.sub(r"\$\{(\w+)\}", r"https://sqs/\1", text))
    # the runtime sees its workflows in another order than the generator did: routing does not depend on it
    routes = node_queues(list(reversed(workflows)), env)
    app_plan = plan(workflows)
    served = {node: fn.queue for fn in app_plan.functions for node in fn.nodes}
    for wf in workflows:
        for node in wf.nodes:
            expected = served[node.id] if node.runs_user_code else app_plan.control.queue
            assert routes.get(node.id, routes["*"]) == f"https://sqs/{expected}", node.id


def test_an_older_environment_keyed_by_node_id_still_routes() -> None:
    wf = app(workflows=1, steps=3)[0]
    first, second = wf.nodes[0].id, wf.nodes[1].id
    routes = node_queues([wf], {first: "https://sqs/a", "*": "https://sqs/control"})
    assert routes == {first: "https://sqs/a", "*": "https://sqs/control"}
    assert routes.get(second, routes["*"]) == "https://sqs/control"


def test_the_deployed_handoffs_route_from_the_generated_environment() -> None:
    """make_handoff (every deployed function) turns the two variables into per-node queues and
    per-workflow state machines for the workflows it registers."""
    from stepchain.handoff.sqs import SqsHandoff
    from stepchain.handoff.stepfunctions import StepFunctionsHandoff
    from stepchain.runtimes.aws import AwsClients, make_handoff
    from stepchain.settings import Settings

    workflows = app(workflows=2, steps=6)
    glob = build(workflows, code_uri="src/")["Globals"]["Function"]["Environment"]["Variables"]
    queues = re.sub(r"\$\{(\w+)\}", r"https://sqs/\1", glob["STEPCHAIN_QUEUES"]["Fn::Sub"])
    prefix = glob["STEPCHAIN_STATE_MACHINE_PREFIX"]["Fn::Sub"].replace("${AWS::StackName}", "demo")
    env = {"STEPCHAIN_TABLE": "t", "STEPCHAIN_BUCKET": "b", "STEPCHAIN_QUEUES": queues,
           "STEPCHAIN_STATE_MACHINE_PREFIX": prefix}  # fmt: skip
    clients = AwsClients(sqs=object(), stepfunctions=object())
    sqs = make_handoff(Settings.from_env({**env, "STEPCHAIN_TRANSPORT": "sqs"}), clients, workflows=workflows)
    assert isinstance(sqs, SqsHandoff)
    assert isinstance(sqs, SqsHandoff)
    served = {node: fn.queue for fn in plan(workflows).functions for node in fn.nodes}
    for wf in workflows:
        for node in wf.nodes:
            expected = served.get(node.id, "ControlQueue")
            assert sqs.queue_for(node.id) == f"https://sqs/{expected}"
    sfn = make_handoff(Settings.from_env(env), clients, workflows=workflows)
    assert isinstance(sfn, StepFunctionsHandoff)
    assert sfn.state_machines == {wf.name: f"{prefix}{wf.name}" for wf in workflows}
    assert prefix.endswith(":stateMachine:demo-")
