"""Step Functions handoff: one execution per run; the state machine (``stepchain.deploy.asl``) drives it.

Transitions between nodes are the state machine's job: every task returns a small state
(``status``, ``wake_at``) and the generated Choice/Wait/Map states act on it. So ``_send`` does
nothing: an activation the engine names as "next" is exactly the task the state machine runs
after this one, and a duplicate message from here would race the execution. What this adapter
does is everything that happens *outside* an execution:

* ``start``: StartExecution named after the run id (a retried start with the same input
  returns the same execution; a finished one with that name raises ExecutionAlreadyExists,
  which is what a late retry should find).
* ``resume_wait``: an event arrived for a wait node: SendTaskSuccess to its task token.
* ``rejoin``: a child run ended: the parent node is joined here and its task token completed.
* ``cancel``: StopExecution of the run's latest execution.
* ``recover`` (the sweeper): DescribeExecution of the run's latest execution; one that never
  started (the API died before StartExecution) is started now, at the earliest stuck node; one
  still RUNNING drives its own tasks (a lost wait callback is re-sent by the engine's event path);
  one that ended while the run is active asks the caller for a new execution name.
* ``redrive``: a new execution ``<run_id>-r<n>`` that starts at the top failed node (the
  ``Route`` Choice reads ``start_at``); completed nodes on the way are served from checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from stepchain.exceptions import ValidationError
from stepchain.handoff.base import Handoff, JoinHere, RunLifecycle
from stepchain.handoff.messages import Activation, OutcomeKind, route_state
from stepchain.logs import logger
from stepchain.requests import instrument
from stepchain.store.records import RunRecord, node_key, parse_node_key

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


def execution_name(run_id: str, redrive: int = 0) -> str:
    """The run's first execution is named ``run_id``; redrive ``n`` is ``<run_id>-r<n>``."""
    return run_id if redrive == 0 else f"{run_id}-r{redrive}"


def execution_arn(state_machine_arn: str, name: str) -> str:
    """arn:aws:states:r:a:stateMachine:M -> arn:aws:states:r:a:execution:M:<name>."""
    parts = state_machine_arn.split(":")
    if len(parts) < 7 or parts[5] != "stateMachine":
        raise ValidationError(f"not a state machine ARN: {state_machine_arn!r}")
    return ":".join([*parts[:5], "execution", parts[6], name])


def execution_input(run: RunRecord, start_at: str, src: str | None = None) -> str:
    """Deterministic JSON (StartExecution is idempotent only for an identical input string).

    ``start_at`` is the node the ``Route`` Choice jumps to: the first node, or a redrive's or the
    sweeper's; ``src`` the node whose output is its input (a routing step's goto target: not its
    chain predecessor, which may never have run).
    """
    node, iteration, _ = parse_node_key(start_at)  # a redrive inside a loop starts at its iteration
    doc = {"run_id": run.run_id, "workflow": run.workflow, "version": run.version, "start_at": node}
    doc.update(route_state(Activation(run.run_id, run.workflow, run.version, node, iteration=iteration, src=src)))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


class StepFunctionsHandoff(Handoff, RunLifecycle):
    """``state_machines`` maps a workflow name (or ``"*"``) to its state machine ARN."""

    #: the node's Task state (one transition) and its invocation
    delivery = MappingProxyType({"sfn_transition": 1, "lambda_invoke": 1})

    def __init__(self, state_machines: Mapping[str, str], client: SFNClient | None = None) -> None:
        self.state_machines = dict(state_machines)
        self._client = instrument(client)
        self.started: list[str] = []  # execution names, in order (tests look at them)

    @property
    def client(self) -> SFNClient:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # inject_host_prefix=False: SendTaskSuccess / StartSyncExecution work on emulators too
            self._client = instrument(boto3.client("stepfunctions", config=Config(inject_host_prefix=False)))
        return self._client

    def state_machine_for(self, workflow: str) -> str:
        arn = self.state_machines.get(workflow) or self.state_machines.get("*")
        if not arn:
            raise ValidationError(f"no state machine configured for workflow {workflow!r}")
        return arn

    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        """Nothing to send: the state machine runs the next task itself (see the module doc)."""
        return None

    def _start_execution(self, run: RunRecord, name: str, start_at: str, src: str | None = None) -> None:
        try:
            self.client.start_execution(
                stateMachineArn=self.state_machine_for(run.workflow),
                name=name,
                input=execution_input(run, start_at, src),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            # A retried start (or redrive) whose execution exists already: it is running the run.
            logger.info("execution exists already", extra={"run_id": run.run_id, "execution": name})
        self.started.append(name)

    def start(self, run: RunRecord, first: Activation) -> None:
        self.dispatch([first])  # no message, but the before_handoff boundary is reached
        # a fork starts at its chosen node and iteration, its input from ``src`` (stepchain.engine.fork)
        self._start_execution(run, execution_name(run.run_id), node_key(first.node, None, first.iteration), first.src)

    def resume_wait(self, wait: Activation, successor: Activation | None) -> None:
        """Complete the wait task: its output is the small state the route Choice reads."""
        if successor is not None:
            self.dispatch([successor])
        if not wait.token:
            logger.warning("wait completed without a task token", extra={"run_id": wait.run_id, "node": wait.node})
            return
        state = {**wait.with_(token=None).to_dict(), "status": "DONE", **route_state(successor, wait.iteration)}
        self.send_task_success(wait.token, state)

    def rejoin(self, join: Activation, here: JoinHere) -> None:
        """No message to send: join the parent node here and complete its task token (SUCCEEDED:
        as an event completes a wait; FAILED: the state the route Choice sends to MarkFailed)."""
        joined = here()
        if joined is None:
            return
        out, rec = joined
        if rec is None or not rec.task_token:
            return
        run = join.with_(action="run")
        if out.kind is OutcomeKind.DONE:
            self.resume_wait(run.with_(token=rec.task_token), out.next[0] if out.next else None)
        elif out.kind is OutcomeKind.FAILED:
            self.send_task_success(rec.task_token, {**out.to_state(run), "status": "FAILED"})

    def send_task_success(self, token: str, state: Mapping[str, Any]) -> bool:
        """SendTaskSuccess; a token that timed out or is unknown is logged, not raised."""
        try:
            self.client.send_task_success(taskToken=token, output=json.dumps(dict(state), separators=(",", ":")))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                raise
            logger.warning("task token no longer valid", extra={"code": code, "state": dict(state)})
            return False
        return True

    def cancel(self, run: RunRecord) -> None:
        arn = execution_arn(self.state_machine_for(run.workflow), execution_name(run.run_id, run.redrives))
        try:
            self.client.stop_execution(executionArn=arn, cause="run cancelled")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
            logger.info("no execution to stop", extra={"run_id": run.run_id})

    def recover(self, run: RunRecord, msgs: Sequence[Activation]) -> int | None:
        if not msgs:
            return 0
        name = execution_name(run.run_id, run.redrives)
        arn = execution_arn(self.state_machine_for(run.workflow), name)
        try:
            status = self.client.describe_execution(executionArn=arn)["status"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
            status = None
        if status == "RUNNING":
            return 0  # it drives its own tasks (Retry, Wait, Map): nothing was lost
        if status is not None:
            logger.warning("the run's execution ended while the run is active", extra={"execution": name})
            return None
        self.dispatch(msgs)  # no message, but the before_handoff boundary is reached
        self._start_execution(run, name, node_key(msgs[0].node, None, msgs[0].iteration), msgs[0].src)
        return len(msgs)

    def redrive(self, run: RunRecord, msgs: Sequence[Activation], top_node: str) -> None:
        self.dispatch(msgs)
        src = next((m.src for m in msgs if m.index is None and node_key(m.node, None, m.iteration) == top_node), None)
        self._start_execution(run, execution_name(run.run_id, run.redrives), top_node, src)


__all__ = ["StepFunctionsHandoff", "execution_arn", "execution_input", "execution_name"]
