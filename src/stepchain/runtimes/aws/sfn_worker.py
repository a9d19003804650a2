"""The Step Functions worker: one task of the generated state machine = one ``Engine.process``.

The event is the task's ``Payload`` (see :mod:`stepchain.deploy.asl`): the run's ids, the node, and for
map items the index, for wait nodes the task token, for control tasks an ``action`` (``join``,
``expire``, ``fail``). The return value is the small state the state machine routes on; it
always has the same fields (``STATE_FIELDS`` + ``ROUTE_FIELDS``, ``None`` when not applicable) so
the task's ``ResultSelector`` can pick them. A step's output travels in it only as the successor's
``input`` reference when that is at most 4,096 characters (``stepchain.engine.routing``).

An outcome other than DONE or FANOUT (:data:`~stepchain.deploy.asl.SIGNALLED`) is raised as a
:class:`TaskSignal` whose error name is ``stepchain.<Status>`` (its errorMessage: the wake_at time for
WAIT/BUSY), so the task's Catch routes it and the happy path needs no Choice state. Lambda reports
an unhandled error's ``errorType`` as the exception class's ``__name__``: the classes are named so.

A wait node's task (``.waitForTaskToken``) ignores what the function returns: whenever such an
activation ends in anything but SUSPENDED (the event was there already, the node completed
before, another invocation holds it), the worker reports the state through SendTaskSuccess.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

from stepchain.deploy.asl import RETURNED, ROUTE_FIELDS, SIGNALLED, STATE_FIELDS, signal_error
from stepchain.engine import Engine
from stepchain.engine.heartbeat import HeartbeatPolicy, SqsHeartbeat
from stepchain.engine.shared import key_of
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind, iso_seconds
from stepchain.handoff.stepfunctions import StepFunctionsHandoff
from stepchain.logs import LambdaContextLike, logger
from stepchain.runtimes.serve import serve
from stepchain.store.records import NodeStatus

#: Step Functions error fields are cut to this length in the run's error
MAX_ERROR_CHARS = 1000


class TaskSignal(Exception):
    """A task's outcome other than DONE/FANOUT, raised so that the task's Catch routes it."""

    status = ""

    def __init__(self, message: str, state: dict[str, Any]) -> None:
        super().__init__(message)
        self.state = state


#: ``stepchain.Continue``, ``stepchain.Wait`` ...: one TaskSignal subclass per signalled status
SIGNALS: dict[str, type[TaskSignal]] = {
    s: type(signal_error(s), (TaskSignal,), {"status": s, "__module__": __name__}) for s in SIGNALLED
}


def signal(engine: Engine, state: dict[str, Any]) -> TaskSignal:
    """The signal to raise for a task state (WAIT/BUSY: the message is its wake_at time)."""
    status = str(state["status"])
    cls = SIGNALS.get(status, SIGNALS["DROPPED"])
    if status in ("WAIT", "BUSY"):
        return cls(str(state.get("wake_at") or iso_seconds(engine.clock.now_ms())), state)
    return cls(str(state.get("error") or status)[:MAX_ERROR_CHARS], state)


def parse_event(event: Any) -> Activation:
    """The activation a task payload names; a ValidationError says what is wrong."""
    if not isinstance(event, dict):
        raise ValidationError(f"a Step Functions task payload must be a JSON object, got {type(event).__name__}")
    missing = [k for k in ("run_id", "workflow", "version", "node") if not event.get(k)]
    if missing:
        raise ValidationError(f"not a stepchain task payload: missing {', '.join(missing)}")
    return Activation.from_dict(event)


def task_state(msg: Activation, outcome: Outcome) -> dict[str, Any]:
    """``outcome.to_state(msg)`` with every field present and nothing else."""
    raw = outcome.to_state(outcome.at or msg)  # a fused chain: the state of its last activation
    state = {f: raw.get(f) for f in STATE_FIELDS + ROUTE_FIELDS}
    if state["items"] is None:
        state["items"] = []
    return state


def mark_failed(engine: Engine, msg: Activation, error: Any) -> Outcome:
    """The state machine gave up on a node (its retries ran out): fail the node and the run."""
    err = {"node": key_of(msg), "type": "StepFunctionsError", "message": "the state machine gave up on the node"}
    if isinstance(error, dict):
        err["type"] = str(error.get("Error") or err["type"])[:200]
        err["message"] = str(error.get("Cause") or err["message"])[:MAX_ERROR_CHARS]
    return engine.runs.fail_node(msg.run_id, key_of(msg), err)


def _expired_after_delivery(engine: Engine, msg: Activation, outcome: Outcome) -> Outcome:
    """An ``expire`` that finds the wait completed (the event came, its SendTaskSuccess was lost):
    the run goes on instead of failing."""
    if outcome.kind is OutcomeKind.DROPPED:
        rec = engine.store.get_node(msg.run_id, key_of(msg))
        if rec is not None and rec.status is NodeStatus.SUCCEEDED:
            return Outcome(OutcomeKind.DONE, detail="event delivered before the deadline")
    return outcome


def handle_sfn_task(
    engine: Engine,
    event: Any,
    context: LambdaContextLike,
    *,
    heartbeat: HeartbeatPolicy | Literal["env"] | None = "env",
) -> dict[str, Any]:
    """Serve one Step Functions task; returns the small state the state machine routes on.

    With a heartbeat policy (default: from the environment, as on SQS) the node's lease is V - 1 s
    and a heartbeat extends it every H seconds while the step runs: a killed invocation's node can be
    taken over V seconds after the kill (the task's Retry, then BUSY -> Wait until the lease ends),
    not when the whole function timeout would have run out."""
    msg = parse_event(event)
    if msg.action == "fail":
        outcome = mark_failed(engine, msg, event.get("error"))
        return task_state(msg, outcome)
    handoff = engine.handoff
    sfn = isinstance(handoff, StepFunctionsHandoff)
    if not sfn:  # a queue transport would send messages the state machine also acts on: not applied
        logger.warning("Step Functions task served by an engine without the Step Functions handoff")

    def settle(m: Activation, outcome: Outcome) -> Outcome:
        return _expired_after_delivery(engine, m, outcome) if m.action == "expire" else outcome

    # With the Step Functions handoff no message goes out (the state machine moves on), but the
    # boundary is reached as on any transport: a crash there is after the checkpoint, before the handoff.
    policy = HeartbeatPolicy.from_env() if heartbeat == "env" else heartbeat
    hb = SqsHeartbeat.lease_only(policy, engine.store, engine.clock) if isinstance(policy, HeartbeatPolicy) else None
    with hb or nullcontext(), hb.serving("") if hb is not None else nullcontext():
        outcome = serve(engine, msg, context, settle=settle, apply=sfn)
    state = task_state(msg, outcome)
    if msg.token and outcome.kind is not OutcomeKind.SUSPENDED and isinstance(handoff, StepFunctionsHandoff):
        handoff.send_task_success(msg.token, state)
    logger.debug("task done", extra={"run_id": msg.run_id, "node": msg.node, "status": state["status"]})
    if msg.token or state["status"] in RETURNED:  # a callback task's result is its SendTaskSuccess
        return state
    raise signal(engine, state)


__all__ = [
    "SIGNALS",
    "STATE_FIELDS",
    "TaskSignal",
    "handle_sfn_task",
    "mark_failed",
    "parse_event",
    "signal",
    "task_state",
]
