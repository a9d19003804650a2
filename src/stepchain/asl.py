"""Amazon States Language for a workflow: Step Functions drives the chain, Lambda does the work.

``to_asl(wf)`` turns a :class:`~stepchain.workflow.Workflow` into a state machine definition whose
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
import math
import re
from pathlib import Path
from typing import Any

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

RETURNED = ("DONE", "FANOUT")  #: outcomes a task returns (DONE: the task's Next; FANOUT: the map's Choice)
#: outcomes a task's function raises as the error :func:`signal_error` names, caught by the task
SIGNALLED = ("CONTINUE", "WAIT", "BUSY", "FAILED", "DROPPED", "SUSPENDED")


def signal_error(status: str) -> str:
    """The error name a task raises for ``status``: ``stepchain.Continue``, ``stepchain.Wait`` ..."""
    return "stepchain." + status.capitalize()


SIGNAL_ERRORS = tuple(signal_error(s) for s in SIGNALLED)

#: the fields of every task result (``stepchain.aws.sfn_worker`` always returns all of them)
STATE_FIELDS = ("run_id", "workflow", "version", "node", "index", "status", "wake_at", "items", "error")


def placeholder(function_name: str) -> str:
    """The DefinitionSubstitutions placeholder of a function's ARN: ``${PlanFunctionArn}``."""
    return "${" + function_name + "Arn}"


def _ids(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ids: dict[str, Any] = {"run_id.$": "$.run_id", "workflow.$": "$.workflow", "version.$": "$.version"}
    return {**ids, **(extra or {})}


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
    signals: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Lambda task; ``signals``: the Catch of the outcomes its function raises (never retried)."""
    retry = _retry(policy, (*LAMBDA_ERRORS, "States.Timeout"))
    if signals is not None:  # first: States.TaskFailed (next retrier) would match them too
        retry.insert(0, {"ErrorEquals": list(SIGNAL_ERRORS), "MaxAttempts": 0})
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {"FunctionName": placeholder(function), "Payload": payload},
        # Only the reference fields pass on, whatever the function returned.
        "ResultSelector": {f"{f}.$": f"$.Payload.{f}" for f in STATE_FIELDS},
        "TimeoutSeconds": timeout_s,
        "Retry": retry,
        "Next": next_state,
    }
    catch = list(signals or [])
    if catch_to is not None:
        catch.append({"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_to})
    if catch:
        state["Catch"] = catch
    return state


def _signals(again: str, *, wake: str, failed: str, dropped: str) -> list[dict[str, Any]]:
    """The Catch of a task's non-DONE outcomes; ``ResultPath`` keeps the task's input (its ids)."""

    def on(statuses: tuple[str, ...], nxt: str) -> dict[str, Any]:
        return {"ErrorEquals": [signal_error(s) for s in statuses], "ResultPath": "$.error", "Next": nxt}

    return [
        on(("CONTINUE",), again),
        on(("WAIT", "BUSY"), wake),
        on(("FAILED",), failed),
        on(("DROPPED", "SUSPENDED"), dropped),
    ]


def _choice(task: str, on_done: str, *, wait: str, failed: str, dropped: str) -> dict[str, Any]:
    """A Choice on ``$.status`` (wait nodes: their state comes back through SendTaskSuccess)."""

    def when(status: str, nxt: str) -> dict[str, Any]:
        return {"Variable": "$.status", "StringEquals": status, "Next": nxt}

    return {
        "Type": "Choice",
        "Choices": [
            *(when(k, v) for k, v in (("DONE", on_done), ("CONTINUE", task), ("WAIT", wait), ("BUSY", wait))),
            when("FAILED", failed),
        ],
        "Default": dropped,
    }


def _wait(task: str, path: str = "$.wake_at") -> dict[str, Any]:
    return {"Type": "Wait", "TimestampPath": path, "Next": task}


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
) -> None:
    """A task whose DONE goes straight to ``on_done`` (one transition per step: a routed step passes
    its route Choice), its signals caught (CONTINUE: again; WAIT, BUSY: the Pass and Wait it loops
    through)."""
    again, wake, wait = f"{name}.again", f"{name}.wake", f"{name}.wait"
    signals = _signals(again, wake=wake, failed=failed, dropped=dropped)
    states[name] = _task(
        function, payload, next_state=on_done, timeout_s=timeout_s, policy=policy, catch_to=catch_to, signals=signals
    )
    # not Catch -> the task itself: moto's and LocalStack's interpreters take that for "no Next"
    states[again] = {"Type": "Pass", "Next": name}
    # a signal's Cause is the function's error JSON; its errorMessage is wake_at
    parse = {"cause.$": "States.StringToJson($.error.Cause)"}
    states[wake] = {"Type": "Pass", "Parameters": parse, "ResultPath": "$.signal", "Next": wait}
    states[wait] = _wait(name, "$.signal.cause.errorMessage")


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
    ref = _ids({"node": node.id})
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
            "Payload": _ids({"node": node.id, "token.$": "$$.Task.Token"}),
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


def to_asl(wf: Workflow) -> dict[str, Any]:
    """The state machine definition of ``wf`` (placeholders for the Lambda ARNs)."""
    nodes = wf.nodes
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
__all__ += ["placeholder", "signal_error", "substitute", "to_asl", "write_asl"]
