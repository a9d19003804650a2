"""The building blocks of the generated state machines (:mod:`stepchain.deploy.asl` assembles them):
task payloads, the Lambda task with its retriers and signal Catch, the Choice/Wait/Pass loop a
task runs in, and the names of the states and errors they share."""

from __future__ import annotations

import math
from typing import Any

from stepchain.define.routing import END
from stepchain.define.workflow import Node, RetryPolicy

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

#: the fields of every task result (``stepchain.runtimes.aws.sfn_worker`` always returns all of them)
STATE_FIELDS = ("run_id", "workflow", "version", "node", "index", "status", "wake_at", "items", "error")
#: ... and the successor's loop iteration, input's node, input, state and node (``stepchain.engine.routing``)
ROUTE_FIELDS = ("iteration", "src", "input", "state", "route")


def placeholder(function_name: str) -> str:
    """The DefinitionSubstitutions placeholder of a function's ARN: ``${PlanFunctionArn}``."""
    return "${" + function_name + "Arn}"


def _ids(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ids: dict[str, Any] = {"run_id.$": "$.run_id", "workflow.$": "$.workflow", "version.$": "$.version"}
    return {**ids, "iteration.$": "$.iteration", **(extra or {})}


def _input(extra: dict[str, Any]) -> dict[str, Any]:
    """A node's own task payload: its ids, and the input its predecessor handed on (a reference)."""
    return _ids({"src.$": "$.src", "input.$": "$.input", "state.$": "$.state", **extra})


def _add_goto(states: dict[str, Any], node: Node, nxt: str, exits: tuple[str, ...] = ()) -> str:
    """A routing step's Choice on the route its task returned (``$.route``): the chosen node, or
    the end of the run; a plain value goes down the chain (``nxt``). Returns the Choice's name.
    ``exits``: where the task may leave to after fusing the steps after it (stepchain.engine.fusion):
    a step without routes gets the same Choice (``.fused``) over them."""
    name = f"{node.id}.goto" if node.routes else f"{node.id}.fused"
    states[name] = {
        "Type": "Choice",
        "Choices": [
            {"Variable": "$.route", "StringEquals": to, "Next": SUCCEEDED if to == END else to}
            for to in sorted(set(node.routes) | set(exits))
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
        "ResultSelector": {f"{f}.$": f"$.Payload.{f}" for f in STATE_FIELDS + ROUTE_FIELDS},
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
