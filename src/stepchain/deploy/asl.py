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
from dataclasses import replace
from pathlib import Path
from typing import Any

from stepchain.define.workflow import Node, RetryPolicy, Workflow
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
from stepchain.engine import fusion
from stepchain.engine.nodes import handler_for


def _failed_pass(node: Node) -> dict[str, Any]:
    """The Catch target of a node's tasks: name the node for MarkFailed."""
    return {
        "Type": "Pass",
        "Parameters": _ids({"node": node.id, "error.$": "$.error"}),
        "Next": MARK_FAILED,
    }


def _add_node(states: dict[str, Any], node: Node, nxt: str, exits: list[str]) -> None:
    """The node's states: its kind's fragment (:meth:`~stepchain.engine.nodes.base.NodeKindHandler.
    asl_states`), after its routes' ``.goto`` Choice (or, for a step that may fuse the steps after
    it, its ``.fused`` Choice on where its task left off) and with its ``.failed`` Catch target."""
    failed = f"{node.id}.failed"
    states[failed] = _failed_pass(node)
    if node.routes or exits:
        nxt = _add_goto(states, node, nxt, tuple(exits))
    handler_for(node).asl_states(states, node, nxt, failed)


def to_asl(wf: Workflow) -> dict[str, Any]:
    """The state machine definition of ``wf`` (placeholders for the Lambda ARNs). When ``wf`` fuses
    steps (``Workflow(fuse=...)``, as the template deploys its functions): a task that ran a fused
    chain returns the node it left off at, and a Choice jumps there (no state transitions for the
    fused steps)."""
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
        exits = fusion.exits(wf, node)  # empty unless wf fuses
        # a fusing function runs up to twice its steps' timeout: so may its task (TimeoutSeconds)
        task_node = replace(node, timeout_s=fusion.function_timeout_s(node, wf.fuse_max_steps))
        _add_node(states, task_node, nodes[i + 1].id if i + 1 < len(nodes) else SUCCEEDED, exits)
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
