"""Amazon States Language for a workflow: Step Functions drives the chain, Lambda does the work.

``to_asl(wf)`` turns a :class:`~stepchain.define.workflow.Workflow` into a state machine definition whose
Lambda ARNs are ``${<FunctionLogicalId>Arn}`` placeholders (``${PlanFunctionArn}``,
``${ControlFunctionArn}``), filled in by the template's ``DefinitionSubstitutions``.

Shape (a node's main state is named after the node id, so the ASL state, the checkpoint key and
the function name all share one stable id)::

    Route (Choice on $.start_at: a redrive starts at its node; default: the first node)
    <step>            Task lambda:invoke; DONE (returned) -> next node: ONE state transition per step.
                      Other outcomes: the function raises ``stepchain.<Status>``, a Catch routes it:
                      Continue -> <step>.again (Pass) -> <step> | Wait, Busy -> <step>.wake (Pass: parse
                      the Cause, its errorMessage is wake_at) -> <step>.wait -> <step> | Failed | Dropped
    <map>             Task (FANOUT + items, or DONE) -> <map>.route (Choice) -> <map>.items | next node
    <map>.items       Map over $.items (MaxConcurrency), each item a Task (DONE -> Succeed; others caught)
    <map>.join        Task (action "join"), DONE -> next node; <sleep>: a Task on the ControlFunction
    <wait>            Task lambda:invoke.waitForTaskToken -> <wait>.route (Choice on $.status: the state
                      comes from SendTaskSuccess); States.Timeout -> <wait>.expire
    <step> (routes)   as <step>, but DONE -> <step>.goto (Choice on $.route) -> the chosen node | Succeeded
    <call>/<parallel> Task lambda:invoke.waitForTaskToken (starts the child runs' executions; the
                      join sends the token DONE or FAILED) -> <node>.route
    <node>.failed     (Catch of any other error) -> MarkFailed (ControlFunction, action "fail") -> Failed

The signals' retrier (``MaxAttempts: 0``) comes first (``States.TaskFailed`` matches any error name);
their Catch keeps the task's input (``ResultPath: $.error``). Every task's payload is a small
reference (run id, workflow, version, node, index): outputs stay in the checkpoint store. The
engine's own retries (a step that raised) come back as WAIT and loop through the Wait state; the
task ``Retry`` only covers the invocation dying (crash, Lambda timeout, throttling), after which
the engine takes the node over once the dead invocation's lease has run out (BUSY until then).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stepchain.define.workflow import Node, NodeKind, RetryPolicy, Workflow
from stepchain.deploy.asl_parts import (  # noqa: F401  (re-exported: the names callers import from stepchain.deploy.asl)
    CONTROL_FUNCTION,
    DROPPED,
    FAILED,
    LAMBDA_ERRORS,
    LAMBDA_INVOKE,
    LAMBDA_INVOKE_CALLBACK,
    MARK_FAILED,
    RETURNED,
    ROUTE,
    ROUTE_FIELDS,
    SIGNAL_ERRORS,
    SIGNALLED,
    STATE_FIELDS,
    SUCCEEDED,
    TASK_TIMEOUT_MARGIN_S,
    _add_goto,
    _choice,
    _ids,
    _input,
    _loop,
    _retry,
    _signals,
    _task,
    _wait,
    placeholder,
    signal_error,
)


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
        _loop(
            states,
            node.id,
            node.function_name,
            ref,
            on_done=f"{node.id}.route",  # FANOUT and DONE are both returned
            timeout_s=timeout,
            policy=node.retry,
            catch_to=failed,
        )
        states[f"{node.id}.route"] = {
            "Type": "Choice",
            "Choices": [{"Variable": "$.status", "StringEquals": "FANOUT", "Next": items}],
            "Default": nxt,  # DONE: no items, or joined before: go on
        }
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


def _callback_task(
    states: dict[str, Any], node: Node, nxt: str, payload: dict[str, Any], catch: list[Any], **extra: Any
) -> None:
    """A ``.waitForTaskToken`` task (a wait, a call, a parallel) whose state comes back through
    SendTaskSuccess: a Choice on ``$.status`` routes it (its Wait state loops back to the task)."""
    states[node.id] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE_CALLBACK,
        "Parameters": {"FunctionName": placeholder(node.function_name), "Payload": payload},
        **extra,
        "Retry": _retry(node.retry, LAMBDA_ERRORS),
        "Catch": catch,
        "Next": f"{node.id}.route",
    }
    states[f"{node.id}.route"] = _choice(node.id, nxt, wait=f"{node.id}.wait", failed=FAILED, dropped=DROPPED)
    states[f"{node.id}.wait"] = _wait(node.id)


def _add_wait(states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
    """The wait task sleeps in Step Functions until SendTaskSuccess (the event) or its timeout."""
    expire = f"{node.id}.expire"
    # Retry: not States.Timeout (that is the event's deadline: it goes to <wait>.expire)
    catch = [
        {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": expire},
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed},
    ]
    payload = _input({"node": node.id, "token.$": "$$.Task.Token"})
    _callback_task(states, node, nxt, payload, catch, TimeoutSeconds=node.seconds)
    timeout = node.timeout_s + TASK_TIMEOUT_MARGIN_S
    # DONE: the event did arrive (its SendTaskSuccess was lost); any signal: the run failed
    states[expire] = _task(
        node.function_name,
        _ids({"node": node.id, "action": "expire"}),
        next_state=nxt,
        timeout_s=timeout,
        policy=node.retry,
        catch_to=failed,
        signals=[{"ErrorEquals": list(SIGNAL_ERRORS), "ResultPath": "$.error", "Next": FAILED}],
    )


def _add_children(states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
    """A call/parallel node: its task starts the child runs (their own executions) and waits for
    its token, which the join completes when the children have ended (engine/nodes/children.py)."""
    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}]
    _callback_task(states, node, nxt, _ids({"node": node.id, "token.$": "$$.Task.Token"}), catch)


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


__all__ = ["RETURNED", "SIGNALLED", "SIGNAL_ERRORS", "STATE_FIELDS", "asl_path", "dumps", "function_names"]
__all__ += ["CONTROL_FUNCTION", "ROUTE_FIELDS", "placeholder", "signal_error", "substitute", "to_asl", "write_asl"]
