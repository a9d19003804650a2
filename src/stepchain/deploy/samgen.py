"""``stepchain template``: the SAM template of an application, generated from its workflow definitions.

The fixed part (stack parameters, table, bucket, layer, API, sweeper) is ``sam_base.yaml``; this module adds
what the workflows decide:

* one worker function per group of user steps whose function settings agree (``timeout_s``, ``memory_mb``,
  ``reserved_concurrency``, ``environment``, ``policies``): a step with the same settings as an earlier step
  of the app runs in the earlier step's function; ``function=`` on a step names its function explicitly
  (steps naming the same function must agree). The control function serves sleeps, waits and failures;
* per function: its SQS queue (dead letters to the shared DeadLetterQueue), the event source mapping
  (enabled with ``Transport=sqs``), a ``<Name>ReservedConcurrency`` parameter and its condition, a log group,
  the queue URL output, least-privilege IAM (StepWorkerPolicy, StepHandoffPolicy, PollOwnQueue on its own
  queue, the step's extra policies);
* per workflow: a state machine from ``stepchain asl``'s file, whose DefinitionSubstitutions map every
  ``${<node function>Arn}`` placeholder to the function that serves the node, and its log group;
* the global environment (STEPCHAIN_QUEUES, STEPCHAIN_STATE_MACHINE_PREFIX) and the API and sweeper permissions on
  every workflow's state machine.

Then ``template.overrides.yaml`` (next to the output), if present, is merged in (:func:`merge`): what a user
adds or changes by hand lives there and survives regeneration.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepchain.define.workflow import Workflow
from stepchain.deploy.asl import CONTROL_FUNCTION, asl_path
from stepchain.deploy.samgen_base import arn, base_template, dump_template, handoff_policy, merge, ref, tls_policy
from stepchain.deploy.samgen_children import add_child_runs_policy, with_children
from stepchain.engine import fusion
from stepchain.engine.queue_routes import route_key
from stepchain.engine.short_queues import DEFAULT_VISIBILITY_S, ENV_QUEUE_VISIBILITY, queue_visibility_s
from stepchain.exceptions import ValidationError
from stepchain.handoff.sqs import CONTROL_BATCH_SIZE, MAX_RECEIVE_COUNT, STEP_BATCH_SIZE

CONTROL_TIMEOUT_S = 30
CONTROL_MEMORY_MB = 256
RESERVED_PATTERN = "^[0-9]*$"


@dataclass
class FunctionPlan:
    """One worker Lambda function and the nodes it serves."""

    logical_id: str
    timeout_s: int
    memory_mb: int
    reserved: int | None = None
    environment: tuple[tuple[str, Any], ...] = ()
    policies: tuple[Any, ...] = ()
    nodes: list[str] = field(default_factory=list)
    #: the largest ``Workflow(fuse=...)`` cap of the plain steps it serves (1: it fuses none)
    fuse_max_steps: int = 1

    @property
    def stem(self) -> str:
        return self.logical_id.removesuffix("Function")

    @property
    def queue(self) -> str:
        return f"{self.stem}Queue"

    def settings(self) -> str:
        return json.dumps([self.timeout_s, self.memory_mb, self.reserved, self.environment, self.policies])


#: the settings that decide which function serves a step (one definition: the fusion predicate reads it too)
_settings = fusion.settings_key


@dataclass
class AppPlan:
    workflows: list[Workflow]
    functions: list[FunctionPlan]  # worker functions, the control function last
    served_by: dict[tuple[str, str], str]  # (workflow, node function_name placeholder) -> serving function

    @property
    def control(self) -> FunctionPlan:
        return self.functions[-1]


def plan(workflows: Sequence[Workflow]) -> AppPlan:
    """Group the user steps of ``workflows`` (and their child workflows) into worker functions (see
    the module docstring)."""
    if not workflows:
        raise ValidationError("stepchain template needs at least one workflow")
    workflows = with_children(workflows)
    names = [wf.name for wf in workflows]
    if len(set(names)) != len(names):
        raise ValidationError(f"workflow names must differ: {names}")
    by_id: dict[str, FunctionPlan] = {}
    shared: dict[str, FunctionPlan] = {}  # settings -> the default-named function with those settings
    served_by: dict[tuple[str, str], str] = {}
    node_fn: dict[str, tuple[str, str]] = {}  # node id -> (workflow, function): the SQS handoff routes by node id
    control = FunctionPlan(CONTROL_FUNCTION, CONTROL_TIMEOUT_S, CONTROL_MEMORY_MB)
    for wf in workflows:
        for node in wf.nodes:
            if not node.runs_user_code:
                served_by[(wf.name, node.function_name)] = CONTROL_FUNCTION
                other = node_fn.setdefault(node.id, (wf.name, CONTROL_FUNCTION))
                if other[1] != CONTROL_FUNCTION:
                    raise ValidationError(_clash(node.id, other[0], wf.name))
                continue
            key = _settings(node)
            if node.function:
                fn = by_id.get(node.function)
                if fn is not None and fn.settings() != key:
                    raise ValidationError(
                        f"{wf.name}.{node.id} runs in {node.function}, whose other steps have different function "
                        "settings (timeout_s, memory_mb, reserved_concurrency, environment, policies)"
                    )
            else:
                fn = shared.get(key)
            if fn is None:
                lid = node.function_name
                if lid in by_id or lid == CONTROL_FUNCTION or lid in ("ApiFunction", "SweeperFunction"):
                    raise ValidationError(f"{wf.name}.{node.id}: function name {lid} is taken; pass function=")
                fn = FunctionPlan(
                    lid, node.timeout_s, node.memory_mb, node.reserved_concurrency, node.environment, node.policies
                )
                by_id[lid] = fn
                if not node.function:
                    shared[key] = fn
            previous = served_by.setdefault((wf.name, node.function_name), fn.logical_id)
            if previous != fn.logical_id:  # two nodes share an explicit placeholder name: same function
                raise ValidationError(f"{wf.name}.{node.id}: {node.function_name} is served by {previous}")
            other = node_fn.setdefault(node.id, (wf.name, fn.logical_id))
            if other[1] != fn.logical_id:
                raise ValidationError(_clash(node.id, other[0], wf.name))
            if node.id not in fn.nodes:
                fn.nodes.append(node.id)
            fn.fuse_max_steps = max(fn.fuse_max_steps, fusion.node_max_steps(wf, node))
        served_by.setdefault((wf.name, CONTROL_FUNCTION), CONTROL_FUNCTION)
    return AppPlan(list(workflows), [*by_id.values(), control], served_by)


def _clash(node_id: str, one: str, other: str) -> str:
    return (
        f"node id {node_id!r} is in workflows {one!r} and {other!r} with different functions "
        "(the SQS handoff routes by node id): rename one or give both the same function="
    )


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def _states_arn(kind: str, wf: Workflow) -> dict[str, str]:
    tail = ":*" if kind == "execution" else ""
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:{kind}:"
                       f"${{AWS::StackName}}-{wf.name}{tail}"}  # fmt: skip


def _log_group(name: dict[str, str]) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {
            "LogGroupName": name,
            "RetentionInDays": ref("LogRetentionDays"),
            "KmsKeyId": {"Fn::If": ["HasLogsKmsKey", ref("LogsKmsKeyArn"), ref("AWS::NoValue")]},
        },
    }


def _function(fn: FunctionPlan, control: bool) -> dict[str, Any]:
    poll = {
        "Sid": "PollOwnQueue",
        "Effect": "Allow",
        # ChangeMessageVisibility: the SQS heartbeat (stepchain.engine.heartbeat) keeps its own messages'
        # visibility short
        "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
        "Resource": arn(fn.queue),
    }
    policies: list[Any]
    if control:  # checkpoints and task tokens, never a payload (no S3), never a Query (measured: tests/template)
        checkpoints = {
            "Sid": "CheckpointItems",
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            "Resource": arn("CheckpointTable"),
        }
        tokens = {"Sid": "CompleteTaskTokens", "Effect": "Allow", "Action": "states:SendTaskSuccess", "Resource": "*"}
        policies = [ref("StepHandoffPolicy"), {"Statement": [checkpoints, poll, tokens]}]
        description = "stepchain control - fan-out/fan-in, sleeps, event waits, failure marking"
    else:
        policies = [ref("StepWorkerPolicy"), ref("StepHandoffPolicy"), {"Statement": [poll]}]
        policies += copy.deepcopy(list(fn.policies))
        description = f"stepchain step - {', '.join(fn.nodes)}"
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Description": description,
            "Handler": "app.step_handler",
            "Timeout": _timeout(fn, control),
            "MemorySize": fn.memory_mb,
            "Environment": {"Variables": {"STEPCHAIN_FUNCTION": fn.logical_id, **dict(fn.environment)}},
            "ReservedConcurrentExecutions": {
                "Fn::If": [f"Reserve{fn.stem}", ref(f"{fn.stem}ReservedConcurrency"), ref("AWS::NoValue")]
            },
            "Policies": policies,
        },
    }


def _timeout(fn: FunctionPlan, control: bool) -> int:
    """A worker function that fuses steps (a workflow defined with ``fuse`` has a plain step in it)
    runs twice its steps' timeout (stepchain.engine.fusion.function_timeout_s)."""
    return fn.timeout_s if control or fn.fuse_max_steps <= 1 else min(900, 2 * fn.timeout_s)


def _add_function(tpl: dict[str, Any], fn: FunctionPlan, control: bool) -> None:
    res, stem, timeout_s = tpl["Resources"], fn.stem, _timeout(fn, control)
    tpl["Parameters"][f"{stem}ReservedConcurrency"] = {
        "Type": "String",
        "Default": str(fn.reserved or ""),
        "AllowedPattern": RESERVED_PATTERN,
    }
    param = ref(f"{stem}ReservedConcurrency")
    tpl["Conditions"][f"Reserve{stem}"] = {
        "Fn::Not": [{"Fn::Or": [{"Fn::Equals": [param, ""]}, {"Fn::Equals": [param, "0"]}]}]
    }
    res[fn.queue] = {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "SqsManagedSseEnabled": True,
            # 6 x the timeout (AWS's guidance), or timeout + 5 s when that is <= V (stepchain.engine.short_queues)
            "VisibilityTimeout": queue_visibility_s(timeout_s),
            "RedrivePolicy": {"deadLetterTargetArn": arn("DeadLetterQueue"), "maxReceiveCount": MAX_RECEIVE_COUNT},
        },
    }
    res[fn.logical_id] = _function(fn, control)
    env = res[fn.logical_id]["Properties"]["Environment"]["Variables"]
    if queue_visibility_s(timeout_s) <= DEFAULT_VISIBILITY_S:  # its messages come back by themselves
        env[ENV_QUEUE_VISIBILITY] = str(queue_visibility_s(timeout_s))
    if not control and fn.fuse_max_steps > 1:  # the per-invocation cap, from the definitions (an operator may lower it)
        env[fusion.ENV_MAX_STEPS] = str(fn.fuse_max_steps)
    res[f"{stem}EventSource"] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": ref(fn.logical_id),
            "EventSourceArn": arn(fn.queue),
            "BatchSize": CONTROL_BATCH_SIZE if control else STEP_BATCH_SIZE,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "Enabled": {"Fn::If": ["UseSqs", True, False]},
        },
    }


def _state_machine(app: AppPlan, wf: Workflow, log_group: str, asl_dir: str) -> dict[str, Any]:
    subs: dict[str, Any] = {}
    for node in [n for n in wf.nodes if n.runs_user_code] + [n for n in wf.nodes if not n.runs_user_code]:
        subs.setdefault(f"{node.function_name}Arn", arn(app.served_by[(wf.name, node.function_name)]))
    subs.setdefault(f"{CONTROL_FUNCTION}Arn", arn(CONTROL_FUNCTION))
    invoked = list(dict.fromkeys(a["Fn::GetAtt"][0] for a in subs.values()))
    logs = ["CreateLogDelivery", "GetLogDelivery", "UpdateLogDelivery", "DeleteLogDelivery", "ListLogDeliveries",
            "PutResourcePolicy", "DescribeResourcePolicies", "DescribeLogGroups"]  # fmt: skip
    return {
        "Type": "AWS::Serverless::StateMachine",
        "Properties": {
            "Name": {"Fn::Sub": f"${{AWS::StackName}}-{wf.name}"},
            "Type": "STANDARD",
            "DefinitionUri": asl_path(wf, asl_dir).as_posix(),
            "DefinitionSubstitutions": subs,
            "Policies": [
                {
                    "Statement": [
                        {
                            "Sid": "InvokeStepFunctions",
                            "Effect": "Allow",
                            "Action": "lambda:InvokeFunction",
                            "Resource": [arn(fn) for fn in invoked],
                        },
                        {
                            "Sid": "DeliverExecutionLogs",
                            "Effect": "Allow",
                            "Action": [f"logs:{a}" for a in logs],
                            "Resource": "*",
                        },
                    ]
                }
            ],
            "Logging": {
                "Level": "ERROR",
                "IncludeExecutionData": False,
                "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": arn(log_group)}}],
            },
            "Tracing": {"Enabled": True},
        },
    }


def _one_or_list(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def build(
    workflows: Sequence[Workflow],
    *,
    code_uri: str,
    asl_dir: str = "statemachine",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The template of an app made of ``workflows`` (code in ``code_uri``), with ``overrides`` merged in."""
    app = plan(workflows)
    base = base_template()
    head = {k: base.pop(k) for k in ("AWSTemplateFormatVersion", "Transform")}
    description = f"stepchain application: {', '.join(wf.name for wf in app.workflows)}"
    tpl = {**head, "Description": description, **base}
    res = tpl["Resources"]
    glob = tpl["Globals"]["Function"]
    glob["CodeUri"] = code_uri
    for fn in app.functions:
        _add_function(tpl, fn, control=fn is app.control)
    single = len(app.workflows) == 1
    machines, executions = [], []
    for wf in app.workflows:
        sm = f"{camel(wf.name)}StateMachine"
        log_group = "StateMachineLogGroup" if single else f"{sm}LogGroup"
        res[sm] = _state_machine(app, wf, log_group, asl_dir)
        res[log_group] = _log_group({"Fn::Sub": f"/aws/vendedlogs/states/${{AWS::StackName}}-{wf.name}"})
        tpl["Outputs"]["StateMachineArn" if single else f"{sm}Arn"] = {"Value": ref(sm)}
        machines.append(_states_arn("stateMachine", wf))
        executions.append(_states_arn("execution", wf))
    for lid in ("ApiFunction", "SweeperFunction"):
        for policy in res[lid]["Properties"]["Policies"]:
            for stmt in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if stmt["Resource"] == "STATE_MACHINES":
                    stmt["Resource"] = copy.deepcopy(_one_or_list(machines))
                elif stmt["Resource"] == "EXECUTIONS":
                    stmt["Resource"] = copy.deepcopy(_one_or_list(executions))
    env: dict[str, Any] = {}
    for key, value in glob["Environment"]["Variables"].items():
        env[key] = value
        if key == "STEPCHAIN_TRANSPORT":
            env.update(_routing_env(app, machines))
    glob["Environment"]["Variables"] = env
    if any(n.branches for wf in app.workflows for n in wf.nodes):
        add_child_runs_policy(tpl, app.workflows, app.served_by, _states_arn)
    fns = [fn.logical_id for fn in app.functions]
    res["StepHandoffPolicy"] = handoff_policy([fn.queue for fn in app.functions])
    res["QueuesTlsOnlyPolicy"] = tls_policy([fn.queue for fn in app.functions])
    for lid in [*fns, "ApiFunction", "SweeperFunction"]:
        res[f"{lid}LogGroup"] = _log_group({"Fn::Sub": f"/aws/lambda/${{{lid}}}"})
    tpl["Outputs"]["DeadLetterQueueUrl"] = {"Value": ref("DeadLetterQueue")}
    for fn in app.functions:
        tpl["Outputs"][f"{fn.queue}Url"] = {"Value": ref(fn.queue)}
    merged: dict[str, Any] = merge(tpl, overrides or {})
    return merged


def _routing_env(app: AppPlan, machines: list[Any]) -> dict[str, Any]:
    """``STEPCHAIN_QUEUES``: one entry per worker function, by its route key (stepchain.engine.queue_routes),
    ``"*"`` the control queue. Lambda caps a function's environment at 4 KB: no entry per node."""
    routes: dict[str, str] = {}
    for fn in app.functions[:-1]:
        served = [n for wf in app.workflows for n in wf.nodes if n.id in fn.nodes and n.runs_user_code]
        for key in dict.fromkeys(route_key(n) for n in served):  # one: its nodes share function= or settings
            if routes.setdefault(key, fn.queue) != fn.queue:  # a digest collision: never seen, but never silent
                raise ValidationError(f"functions {routes[key]} and {fn.queue} have one route key {key!r}")
    pairs = [f'"{key}":"${{{queue}}}"' for key, queue in routes.items()]
    queues = {"Fn::Sub": "{" + ",".join([*pairs, f'"*":"${{{app.control.queue}}}"']) + "}"}
    # the state machines' names are fixed (<stack>-<workflow>): one prefix for them all, whatever their number
    prefix = {"Fn::Sub": machines[0]["Fn::Sub"].removesuffix(app.workflows[0].name)}
    return {"STEPCHAIN_STATE_MACHINE_PREFIX": prefix, "STEPCHAIN_QUEUES": queues}


def render(workflows: Sequence[Workflow], *, code_uri: str, asl_dir: str, out: Path, command: str) -> str:
    """The template text for ``out`` (its overrides file, ``<out stem>.overrides.yaml``, merged in)."""
    from stepchain.deploy.samgen_base import load_cfn

    ov_path = overrides_path(out)
    overrides = load_cfn(ov_path.read_text()) if ov_path.exists() else None
    if overrides is not None and not isinstance(overrides, dict):
        raise ValidationError(f"{ov_path} must hold a mapping (template sections)")
    tpl = build(workflows, code_uri=code_uri, asl_dir=asl_dir, overrides=overrides)
    header = (
        f"# Generated by `{command}` from the workflow definitions: do not edit.\n"
        f"# Changes and additions belong in {ov_path.name} (merged in on every generation).\n"
    )
    return header + dump_template(tpl)


def overrides_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".yaml").removesuffix(".yml") + ".overrides.yaml")
