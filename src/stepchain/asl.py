"""Amazon States Language for a workflow: Step Functions drives the chain, Lambda does the work.

``to_asl(wf)`` turns a :class:`~stepchain.workflow.Workflow` into a state machine definition whose
Lambda ARNs are ``${<FunctionLogicalId>Arn}`` placeholders (``${PlanFunctionArn}``,
``${ControlFunctionArn}``), filled in by the template's ``DefinitionSubstitutions``.

Shape (a node's main state is named after the node id, so the ASL state, the checkpoint key and
the function name all share one stable id)::

    Route (Choice on $.start_at: a redrive starts at its node; default: the first node)
    <step>            Task lambda:invoke -> <step>.route
    <step>.route      Choice on $.status: DONE -> next node | CONTINUE -> <step>
                      WAIT, BUSY -> <step>.wait (Wait until $.wake_at) -> <step>
                      FAILED -> Failed | DROPPED (or anything else) -> Dropped
    <map>             Task (fan-out, returns FANOUT + items) -> <map>.route
    <map>.items       Map over $.items (MaxConcurrency), each item a Task + Choice loop
    <map>.join        Task (action "join") -> <map>.join.route -> next node
    <sleep>           Task on the ControlFunction: WAIT -> Wait -> again; DONE -> next node
    <wait>            Task lambda:invoke.waitForTaskToken; States.Timeout -> <wait>.expire
    <call>/<parallel> Task lambda:invoke.waitForTaskToken (starts the child runs' executions; the
                      join sends the token DONE or FAILED) -> <node>.route
    <node>.failed     (Catch of any task) -> MarkFailed (ControlFunction, action "fail") -> Failed

Every task's payload is a small reference (run id, workflow, version, node, index, status,
wake_at): outputs stay in the checkpoint store. The engine's own retries (a step that raised)
come back as WAIT and loop through the Wait state; the task ``Retry`` only covers the
invocation dying (crash, Lambda timeout, throttling), after which the engine takes the node
over once the dead invocation's lease has run out (BUSY until then).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from stepchain.routing import END
from stepchain.workflow import Node, NodeKind, RetryPolicy, Workflow

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_INVOKE_CALLBACK = "arn:aws:states:::lambda:invoke.waitForTaskToken"
CONTROL_FUNCTION = "ControlFunction"

#: added to a node's ``timeout_s`` for the task's TimeoutSeconds (Lambda times out first)
TASK_TIMEOUT_MARGIN_S = 30

#: the invocation died or Lambda refused it: run the task again (the engine takes over)
LAMBDA_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "States.TaskFailed",
)

ROUTE = "Route"
MARK_FAILED = "MarkFailed"
FAILED = "Failed"
DROPPED = "Dropped"
SUCCEEDED = "Succeeded"

#: the fields of every task result (``stepchain.aws.sfn_worker`` always returns all of them)
STATE_FIELDS = ("run_id", "workflow", "version", "node", "index", "status", "wake_at", "items", "error")
#: ... and the successor's loop iteration, input's node, input and node (``stepchain.engine.routing``)
ROUTE_FIELDS = ("iteration", "src", "input", "route")


def placeholder(function_name: str) -> str:
    """The DefinitionSubstitutions placeholder of a function's ARN: ``${PlanFunctionArn}``."""
    return "${" + function_name + "Arn}"


def _ids(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ids: dict[str, Any] = {"run_id.$": "$.run_id", "workflow.$": "$.workflow", "version.$": "$.version"}
    return {**ids, "iteration.$": "$.iteration", **(extra or {})}


def _input(extra: dict[str, Any]) -> dict[str, Any]:
    """A node's own task payload: its ids, and the input its predecessor handed on (a reference)."""
    return _ids({"src.$": "$.src", "input.$": "$.input", **extra})


def _add_goto(states: dict[str, Any], node: Node, nxt: str) -> str:
    """A routing step's Choice on the route its task returned (``$.route``): the chosen node, or
    the end of the run; a plain value goes down the chain (``nxt``). Returns the Choice's name."""
    name = f"{node.id}.goto"
    states[name] = {
        "Type": "Choice",
        "Choices": [
            {"Variable": "$.route", "StringEquals": to, "Next": SUCCEEDED if to == END else to}
            for to in sorted(set(node.routes))
        ],
        "Default": nxt,
    }
    return name


def _retry(policy: RetryPolicy, errors: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {
            "ErrorEquals": list(errors),
            "IntervalSeconds": max(1, math.ceil(policy.backoff_s)),
            "MaxAttempts": policy.max_attempts,
            "BackoffRate": float(policy.backoff_rate),
            "MaxDelaySeconds": max(1, math.ceil(policy.max_backoff_s)),
        }
    ]


def _task(
    function: str,
    payload: dict[str, Any],
    *,
    next_state: str,
    timeout_s: int,
    policy: RetryPolicy,
    catch_to: str | None,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {"FunctionName": placeholder(function), "Payload": payload},
        # Only the reference fields pass on, whatever the function returned.
        "ResultSelector": {f"{f}.$": f"$.Payload.{f}" for f in STATE_FIELDS + ROUTE_FIELDS},
        "TimeoutSeconds": timeout_s,
        "Retry": _retry(policy, (*LAMBDA_ERRORS, "States.Timeout")),
        "Next": next_state,
    }
    if catch_to is not None:
        state["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_to}]
    return state


def _choice(task: str, on_done: str, *, wait: str, failed: str, dropped: str, extra: Any = ()) -> dict[str, Any]:
    def when(status: str, nxt: str) -> dict[str, Any]:
        return {"Variable": "$.status", "StringEquals": status, "Next": nxt}

    return {
        "Type": "Choice",
        "Choices": [
            when("DONE", on_done),
            *extra,
            when("CONTINUE", task),
            when("WAIT", wait),
            when("BUSY", wait),
            when("FAILED", failed),
        ],
        "Default": dropped,
    }


def _wait(task: str) -> dict[str, Any]:
    return {"Type": "Wait", "TimestampPath": "$.wake_at", "Next": task}


def _loop(
    states: dict[str, Any],
    name: str,
    function: str,
    payload: dict[str, Any],
    *,
    on_done: str,
    timeout_s: int,
    policy: RetryPolicy,
    catch_to: str | None,
    failed: str = FAILED,
    dropped: str = DROPPED,
    extra: Any = (),
) -> None:
    """A task, the Choice on its status and the Wait it loops through (WAIT, BUSY)."""
    states[name] = _task(
        function, payload, next_state=f"{name}.route", timeout_s=timeout_s, policy=policy, catch_to=catch_to
    )
    states[f"{name}.route"] = _choice(name, on_done, wait=f"{name}.wait", failed=failed, dropped=dropped, extra=extra)
    states[f"{name}.wait"] = _wait(name)


def _failed_pass(node: Node) -> dict[str, Any]:
    """The Catch target of a node's tasks: name the node for MarkFailed."""
    return {
        "Type": "Pass",
        "Parameters": _ids({"node": node.id, "error.$": "$.error"}),
        "Next": MARK_FAILED,
    }


def _item_processor(node: Node) -> dict[str, Any]:
    states: dict[str, Any] = {}
    item = f"{node.id}.item"
    _loop(
        states,
        item,
        node.function_name,
        _ids({"node": node.id, "index.$": "$.index"}),
        on_done=f"{item}.done",
        timeout_s=node.timeout_s + TASK_TIMEOUT_MARGIN_S,
        policy=node.retry,
        catch_to=None,  # the error fails the Map state, whose Catch marks the run failed
        failed=f"{item}.failed",
        dropped=f"{item}.failed",
    )
    states[f"{item}.done"] = {"Type": "Succeed"}
    states[f"{item}.failed"] = {"Type": "Fail", "Error": "stepchain.ItemFailed", "Cause": f"an item of {node.id}"}
    return {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": item, "States": states}


def _add_node(states: dict[str, Any], node: Node, nxt: str) -> None:
    failed = f"{node.id}.failed"
    states[failed] = _failed_pass(node)
    timeout = node.timeout_s + TASK_TIMEOUT_MARGIN_S
    ref = _input({"node": node.id})
    if node.routes:
        nxt = _add_goto(states, node, nxt)
    if node.kind in (NodeKind.STEP, NodeKind.SLEEP):
        _loop(
            states, node.id, node.function_name, ref, on_done=nxt, timeout_s=timeout, policy=node.retry, catch_to=failed
        )
    elif node.kind is NodeKind.MAP:
        items, join = f"{node.id}.items", f"{node.id}.join"
        fanout = {"Variable": "$.status", "StringEquals": "FANOUT", "Next": items}
        _loop(
            states,
            node.id,
            node.function_name,
            ref,
            on_done=nxt,  # no items, or joined before: go on
            timeout_s=timeout,
            policy=node.retry,
            catch_to=failed,
            extra=(fanout,),
        )
        states[items] = {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": node.max_concurrency,
            "ItemSelector": _ids({"index.$": "$$.Map.Item.Value"}),
            "ItemProcessor": _item_processor(node),
            "ResultPath": None,
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}],
            "Next": join,
        }
        _loop(
            states,
            join,
            node.function_name,
            _ids({"node": node.id, "action": "join"}),
            on_done=nxt,
            timeout_s=timeout,
            policy=node.retry,
            catch_to=failed,
        )
    elif node.kind is NodeKind.WAIT:
        _add_wait(states, node, nxt, failed)
    elif node.kind in (NodeKind.CALL, NodeKind.PARALLEL):
        _add_children(states, node, nxt, failed)
    else:  # pragma: no cover - NodeKind is closed
        raise AssertionError(node.kind)


def _add_wait(states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
    """The wait task sleeps in Step Functions until SendTaskSuccess (the event) or its timeout."""
    expire = f"{node.id}.expire"
    states[node.id] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE_CALLBACK,
        "Parameters": {
            "FunctionName": placeholder(node.function_name),
            "Payload": _input({"node": node.id, "token.$": "$$.Task.Token"}),
        },
        "TimeoutSeconds": node.seconds,
        # not States.Timeout: that is the event's deadline
        "Retry": _retry(node.retry, LAMBDA_ERRORS),
        "Catch": [
            {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": expire},
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed},
        ],
        "Next": f"{node.id}.route",
    }
    states[f"{node.id}.route"] = _choice(node.id, nxt, wait=f"{node.id}.wait", failed=FAILED, dropped=DROPPED)
    states[f"{node.id}.wait"] = _wait(node.id)
    timeout = node.timeout_s + TASK_TIMEOUT_MARGIN_S
    states[expire] = _task(
        node.function_name,
        _ids({"node": node.id, "action": "expire"}),
        next_state=f"{expire}.route",
        timeout_s=timeout,
        policy=node.retry,
        catch_to=failed,
    )
    # DONE: the event did arrive (its SendTaskSuccess was lost); anything else: the run failed
    states[f"{expire}.route"] = {
        "Type": "Choice",
        "Choices": [{"Variable": "$.status", "StringEquals": "DONE", "Next": nxt}],
        "Default": FAILED,
    }


def _add_children(states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
    """A call/parallel node: its task starts the child runs (their own executions) and waits for
    its token, which the join completes when the children have ended (engine/nodes/children.py)."""
    states[node.id] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE_CALLBACK,
        "Parameters": {
            "FunctionName": placeholder(node.function_name),
            "Payload": _ids({"node": node.id, "token.$": "$$.Task.Token"}),
        },
        "Retry": _retry(node.retry, LAMBDA_ERRORS),
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}],
        "Next": f"{node.id}.route",
    }
    states[f"{node.id}.route"] = _choice(node.id, nxt, wait=f"{node.id}.wait", failed=FAILED, dropped=DROPPED)
    states[f"{node.id}.wait"] = _wait(node.id)


def to_asl(wf: Workflow) -> dict[str, Any]:
    """The state machine definition of ``wf`` (placeholders for the Lambda ARNs)."""
    nodes = wf.validate().nodes
    if not nodes:
        raise ValueError(f"workflow {wf.name!r} has no nodes")
    states: dict[str, Any] = {}
    states[ROUTE] = {
        "Type": "Choice",
        "Choices": [
            {
                "And": [
                    {"Variable": "$.start_at", "IsPresent": True},
                    {"Variable": "$.start_at", "StringEquals": n.id},
                ],
                "Next": n.id,
            }
            for n in nodes
        ],
        "Default": nodes[0].id,
    }
    for i, node in enumerate(nodes):
        _add_node(states, node, nodes[i + 1].id if i + 1 < len(nodes) else SUCCEEDED)
    states[MARK_FAILED] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {
            "FunctionName": placeholder(CONTROL_FUNCTION),
            "Payload": _ids({"node.$": "$.node", "action": "fail", "error.$": "$.error"}),
        },
        "ResultPath": None,
        "TimeoutSeconds": 30 + TASK_TIMEOUT_MARGIN_S,
        "Retry": _retry(RetryPolicy(), (*LAMBDA_ERRORS, "States.Timeout")),
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": FAILED}],
        "Next": FAILED,
    }
    states[FAILED] = {"Type": "Fail", "Error": "stepchain.RunFailed", "Cause": "the run failed; see its error"}
    states[DROPPED] = {
        "Type": "Fail",
        "Error": "stepchain.Dropped",
        "Cause": "a task reported nothing to do (the run was cancelled or finished elsewhere)",
    }
    states[SUCCEEDED] = {"Type": "Succeed"}
    return {
        "Comment": f"stepchain workflow {wf.name} (version {wf.version}); generated by `stepchain asl`, do not edit",
        "StartAt": ROUTE,
        "States": states,
    }


def dumps(doc: dict[str, Any]) -> str:
    """Deterministic text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def asl_path(wf: Workflow, directory: str | Path) -> Path:
    return Path(directory) / f"{wf.name}.asl.json"


def write_asl(wf: Workflow, directory: str | Path = "statemachine") -> Path:
    """Write ``<directory>/<workflow name>.asl.json``; returns its path."""
    path = asl_path(wf, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(to_asl(wf)))
    return path


def function_names(wf: Workflow) -> list[str]:
    """Logical ids of every function the state machine invokes (the ControlFunction included)."""
    return sorted({n.function_name for n in wf.nodes} | {CONTROL_FUNCTION})


def substitute(doc: dict[str, Any], arns: dict[str, str]) -> str:
    """The definition text with ``${<Fn>Arn}`` replaced from ``arns`` (logical id -> ARN), as
    CloudFormation's DefinitionSubstitutions does."""
    text = dumps(doc)
    for fn, arn in arns.items():
        text = text.replace(placeholder(fn), arn)
    missing = sorted(set(re.findall(r"\$\{([A-Za-z0-9]+)Arn\}", text)))
    if missing:
        raise ValueError(f"no ARN for {missing}")
    return text


__all__ = ["STATE_FIELDS", "asl_path", "dumps", "function_names", "placeholder", "substitute", "to_asl", "write_asl"]
