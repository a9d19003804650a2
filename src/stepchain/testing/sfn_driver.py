"""``SfnHarness``: run workflows through real Step Functions executions on moto, in virtual time.

The generated state machine (:mod:`stepchain.deploy.asl`) runs in moto's Step Functions interpreter
(``execute_state_machine``); its Lambda tasks invoke moto functions whose invocations are served
in-process by :func:`stepchain.runtimes.aws.sfn_worker.handle_sfn_task`, the code a deployed function runs.

from stepchain.testing.sfn_driver import SfnHarness

def test_on_step_functions():
    with SfnHarness(wf) as h:
        h.crash_at("after_checkpoint", node="fetch")
        run_id = h.start("my-agent", {"q": "..."})
        assert h.run(run_id) == "SUCCEEDED"

What it patches in moto, and why, is in :mod:`stepchain.testing.sfn_moto`.

Invocations are serialized (one at a time, like a concurrency limit of 1): Map branches run in
threads, and one virtual clock with one deadline serves them all.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from stepchain.define.workflow import Workflow
from stepchain.deploy.asl import function_names, substitute, to_asl
from stepchain.engine import LEASE_GRACE_MS, Engine
from stepchain.engine.nodes import handler_for
from stepchain.engine.sweeper import Sweeper, SweepPolicy
from stepchain.handoff.messages import Activation
from stepchain.handoff.stepfunctions import StepFunctionsHandoff, execution_arn, execution_name
from stepchain.runtimes.aws.sfn_worker import TaskSignal, handle_sfn_task, parse_event
from stepchain.store.payloads import DEFAULT_INLINE_LIMIT
from stepchain.store.records import NodeStatus, RunStatus
from stepchain.testing.clock import InvocationTimeout, VirtualLambdaContext
from stepchain.testing.harness import Harness, InvocationLog
from stepchain.testing.probe import InjectedCrash
from stepchain.testing.sfn_children import waiting_for_children
from stepchain.testing.sfn_moto import SFN_CONFIG, lambda_zip, moto_sfn, patch_moto, seams, time_out_callback

#: the Lambda error types a dead invocation reports
CRASH_ERROR = "Runtime.ExitError"
TIMEOUT_ERROR = "Sandbox.Timedout"
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


#: default of ``SfnHarness(poll_timeout_s=)``: real seconds :meth:`SfnHarness.run` waits without progress
POLL_TIMEOUT_S = 60.0


class SfnHarness(Harness):
    """Runs workflows on moto Step Functions + Lambda + DynamoDB + S3, in virtual time.

    The same constructor and methods as :class:`~stepchain.testing.Harness`, plus:
    ``duplicate_delivery``: every task invocation runs twice (the first result is lost, as when
    Step Functions retries an invocation that did run). ``poll_timeout_s``: :meth:`run` raises
    ``TimeoutError`` when no invocation started or ended and no execution changed status for
    this many real seconds (moto's interpreter runs in its own threads, in real time).
    """

    _transport_on_moto = True
    _moto_config = SFN_CONFIG

    def __init__(
        self,
        *workflows: Workflow,
        backend: str = "moto",
        budget_ms: int | None = None,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
        duplicate_delivery: bool = False,
        virtual_sleep: bool = True,
        poll_timeout_s: float = POLL_TIMEOUT_S,
    ) -> None:
        super().__init__(
            *workflows,
            backend=backend,
            budget_ms=budget_ms,
            inline_limit=inline_limit,
            duplicate_delivery=duplicate_delivery,
            virtual_sleep=virtual_sleep,
        )
        try:
            self.poll_timeout_s = poll_timeout_s
            self.state_sizes: list[int] = []  # bytes of every state a task returned
            self._lock = threading.RLock()
            self._inflight = 0
            self._expired: set[str] = set()  # task tokens whose wait was timed out
            self.sfn_handoff = self._deploy(tuple(self.registry))  # child workflows too
            self.engine = Engine(
                self.registry, self.store, self.codec, self.sfn_handoff, clock=self.clock, probe=self.probe
            )
            self._patch()
        except BaseException:
            self._stack.close()
            raise

    # -- set-up ----------------------------------------------------------------------------------
    def _deploy(self, workflows: tuple[Workflow, ...]) -> StepFunctionsHandoff:
        import boto3
        from botocore.config import Config

        iam = boto3.client("iam", region_name="us-east-1")
        role = iam.create_role(
            RoleName="stepchain-test",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = boto3.client("lambda", region_name="us-east-1")
        arns: dict[str, str] = {}
        code = lambda_zip()
        for fn in sorted({f for wf in workflows for f in function_names(wf)}):
            ms = [self.function_ms(wf, n.id) for wf in workflows for n in wf.nodes if n.function_name == fn] or [30_000]
            arns[fn] = lam.create_function(
                FunctionName=fn,
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": code},
                Timeout=max(ms) // 1000,
            )["FunctionArn"]
        self.sfn = boto3.client("stepfunctions", region_name="us-east-1", config=Config(inject_host_prefix=False))
        self._count_calls(self.sfn)
        machines = {}
        for wf in workflows:
            definition = substitute(to_asl(wf), arns)
            machines[wf.name] = self.sfn.create_state_machine(name=wf.name, definition=definition, roleArn=role)[
                "stateMachineArn"
            ]
        self.function_arns = arns
        self.state_machines = machines
        return StepFunctionsHandoff(machines, self.sfn)

    def _patch(self) -> None:
        patch_moto(self._stack, self)

    # -- virtual time ------------------------------------------------------------------------------
    def pass_time(self, ms: float) -> None:
        """Let ``ms`` of virtual time pass (between invocations), then let other threads run."""
        with self._lock:
            if ms > 0:
                self.clock.advance(ms)
        time.sleep(0.001)

    def pass_time_to(self, at_ms: int) -> None:
        with self._lock:
            self.clock.set_to(at_ms)
        time.sleep(0.001)

    # -- the Lambda side ---------------------------------------------------------------------------
    def _invoke(self, function: str, event: dict[str, Any]) -> tuple[str, bool, str]:
        with self._lock:
            self._inflight += 1
            try:
                result = self._invoke_once(function, event)
                if self.duplicate_delivery and (not result[1] or result[0].startswith('{"errorType": "stepchain.')):
                    result = self._invoke_once(function, event)
                return result
            finally:
                self._inflight -= 1

    def _budget(self, event: dict[str, Any]) -> tuple[int, str, str]:
        try:
            msg = parse_event(event)
            ms = self.function_ms(self.registry.get(msg.workflow, msg.version), msg.node)
        except Exception:
            return self.budget_ms or 30_000, "?", "run"
        key = msg.node if msg.index is None else f"{msg.node}#{msg.index:05d}"
        return self.budget_ms or ms, key, msg.action

    def _invoke_once(self, function: str, event: dict[str, Any]) -> tuple[str, bool, str]:
        budget, key, action = self._budget(event)
        self._n += 1
        ctx = VirtualLambdaContext(self.clock, budget, f"sfn-{self._n:06d}", function)
        self.clock.set_deadline(ctx.deadline_ms)
        result = "crashed"
        elapsed: float | None = None
        try:
            with self._virtual_sleep():
                state = handle_sfn_task(self.engine, event, ctx)
            body = json.dumps(state, separators=(",", ":"))
            self.state_sizes.append(len(body))
            result = str(state["status"])
            return body, False, ""
        except TaskSignal as exc:  # a non-DONE outcome: the task's Catch routes it by the error name
            result = exc.status
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}), True, ""
        except InjectedCrash as exc:
            elapsed = ctx.elapsed_ms()  # the dead invocation's own time, not the wait for its lease
            # Step Functions retries after its interval; the node's lease must be over by then.
            self.clock.set_deadline(None)
            self.clock.set_to(ctx.deadline_ms + LEASE_GRACE_MS + 1)
            return json.dumps({"errorType": CRASH_ERROR, "errorMessage": str(exc)}), True, ""
        except InvocationTimeout as exc:
            result = "timed_out"  # the clock stands at the deadline, as when Lambda kills it
            return json.dumps({"errorType": TIMEOUT_ERROR, "errorMessage": str(exc)}), True, ""
        except Exception as exc:  # an unhandled error in the function
            result = "error"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)[:500]}), True, ""
        finally:
            self.clock.set_deadline(None)
            took = ctx.elapsed_ms() if elapsed is None else elapsed
            self.invocations.append(InvocationLog(key, action, budget, took, result))

    # -- driving runs ------------------------------------------------------------------------------
    # The API side takes the invocation lock, as the sweeper does: moto's DynamoDB is not thread-safe
    # (a GetItem racing the UpdateItem that creates the item can see it without attributes).
    def start(self, workflow: str, input: Any = None, **kw: Any) -> str:  # idempotency_key, owner, budget_usd
        with self._lock:
            return super().start(workflow, input, **kw)

    def send_event(self, run_id: str, name: str, payload: Any = None, *, iteration: int | None = None) -> str:
        with self._lock:
            return super().send_event(run_id, name, payload, iteration=iteration)

    def cancel(self, run_id: str) -> None:
        """Cancel the run (StopExecution, its child runs' too)."""
        with self._lock:
            self.engine.cancel(run_id)
        self._stop_cancelled()

    def sweep(self, policy: SweepPolicy | None = None) -> int:
        """Run the recovery sweeper once at the current virtual time (it starts executions and
        re-sends wait callbacks); returns how many activations it re-issued or runs it failed."""
        with self._lock:
            acted = Sweeper(self.engine, policy).sweep().acted
        self.run_ids.extend(r for r in self.runs() if r not in self.run_ids)
        self._stop_cancelled()
        return acted

    def _stop_cancelled(self) -> None:
        """moto's StopExecution does not interrupt a task waiting for its callback (AWS does): end those waits
        of every cancelled run (children too) and wait (up to poll_timeout_s) for moto's threads to end them."""
        stopped = [r for r in self.runs() if self.status(r) == "CANCELLED" and self._moving(r, waiting=True)]
        for run_id in stopped:
            for token in self._wait_tokens(run_id, any_status=True):
                self.sfn_handoff.send_task_success(token, {"status": "DROPPED"})
        deadline = time.monotonic() + self.poll_timeout_s
        while any(self.execution_status(r) == "RUNNING" for r in stopped) and time.monotonic() < deadline:
            time.sleep(0.005)

    def redeliver(self, msg: Activation, at_ms: int | None = None) -> None:
        """A late duplicate: ``msg``'s function invoked once more outside any execution (Step Functions ignores
        its result) at virtual time ``at_ms`` (default: now). Call it while no execution is between tasks."""
        if at_ms is not None:
            self.pass_time_to(at_ms)
        node = self.registry.get(msg.workflow, msg.version).node(msg.node)
        self._invoke(node.function_name, msg.to_dict())

    def execution_arn(self, run_id: str) -> str:
        """The ARN of the run's latest execution."""
        run = self.engine.get_run(run_id)
        return execution_arn(self.state_machines[run.workflow], execution_name(run_id, run.redrives))

    def execution_status(self, run_id: str) -> str:
        return str(self.sfn.describe_execution(executionArn=self.execution_arn(run_id))["status"])

    def run(
        self,
        run_id: str | None = None,
        *,
        max_activations: int | None = None,
        until_ms: int | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Wait until the run's latest execution ends or the run waits for an event (with no
        ``run_id``: every run the store holds). Returns the run's status, as :meth:`Harness.run`
        (the execution's own status: :meth:`execution_status`).

        Raises ``TimeoutError`` when nothing progressed (no invocation started or ended, no
        execution changed status) for ``timeout_s`` real seconds (default ``poll_timeout_s``).
        Executions run on their own in moto's threads, so they cannot be stopped part way:
        ``max_activations`` and ``until_ms`` are not supported (use :meth:`advance`).
        """
        if max_activations is not None or until_ms is not None:
            raise TypeError("SfnHarness.run takes no max_activations/until_ms: executions run to their end")
        limit_s = self.poll_timeout_s if timeout_s is None else timeout_s
        targets = [run_id] if run_id is not None else self.runs()
        started = last_change = time.monotonic()
        seen: tuple[Any, ...] = ()
        while True:
            moving = [(r, s) for r in targets if (s := self._moving(r)) is not None]
            if not moving:
                return self._status_after_run(run_id)
            progress = (self._n, len(self.invocations), tuple(moving))
            now = time.monotonic()
            if progress != seen:
                seen, last_change = progress, now
            elif now - last_change > limit_s:
                r, status = moving[0]
                raise TimeoutError(
                    f"execution of run {r} still {status} after {now - started:.1f} s, "
                    f"the last {limit_s:g} s without progress (timeout_s)"
                )
            time.sleep(0.005)

    def _moving(self, run_id: str, *, waiting: bool = False) -> str | None:
        """The status of the run's execution while it still moves on its own (``waiting``: or waits
        for a callback), else None (also when it never started: the sweeper starts it)."""
        try:
            status = self.execution_status(run_id)
        except self.sfn.exceptions.ExecutionDoesNotExist:
            return None
        stays = not waiting and (self._waiting_for_event(run_id) or waiting_for_children(self, run_id))
        return None if status in TERMINAL or stays else status

    def _waiting_for_event(self, run_id: str) -> bool:
        """No invocation runs and the run waits for an event whose task has not been timed out."""
        if self._inflight or self.engine.get_run(run_id).status is not RunStatus.WAITING:
            return False
        if any(token in self._expired for token in self._wait_tokens(run_id)):
            return False
        if self._wait_tokens(run_id, self.clock.now_ms()):
            # A deadline has passed but no timeout reached its callback (moto registered the
            # callback late, or the wait task ran again with a new token): deliver it now.
            self._expire_waits()
            return False
        return True

    def _wait_tokens(self, run_id: str, due_by_ms: int | None = None, *, any_status: bool = False) -> list[str]:
        """Task tokens of the run's WAITING wait nodes (whose deadline is ``<= due_by_ms``, if given)."""
        run = self.engine.get_run(run_id)
        tokens = []
        nodes = self.registry.get(run.workflow, run.version).nodes
        for node in (n for n in nodes if handler_for(n).callback_task):  # tasks waiting for a token
            for rec in self.store.list_nodes(run_id, node.id):  # each loop iteration has its own wait
                if rec.node != node.id or rec.index is not None or not rec.task_token:
                    continue
                if rec.status is not NodeStatus.WAITING and not any_status:
                    continue
                if due_by_ms is None or (rec.wake_at_ms is not None and rec.wake_at_ms <= due_by_ms):
                    tokens.append(rec.task_token)
        return tokens

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass; event waits whose deadline passed time out
        (``States.Timeout`` in their task). Follow it with :meth:`run` to let the runs move on."""
        self.pass_time(seconds * 1000)
        self._expire_waits()

    def _expire_waits(self) -> int:
        now = self.clock.now_ms()
        tokens = [
            t
            for run_id in self.runs()
            if not self.engine.get_run(run_id).status.finished
            for t in self._wait_tokens(run_id, now)
        ]
        return self._time_out_callbacks(tokens)

    def _time_out_callbacks(self, tokens: list[str]) -> int:
        """End these tokens' callback waits with a timeout (``States.Timeout`` in their task)."""
        ended = [t for t in tokens if time_out_callback(t)]
        self._expired.update(ended)
        return len(ended)

    # -- looking at runs ---------------------------------------------------------------------------
    def history(self, run_id: str, redrive: int | None = None) -> list[dict[str, Any]]:
        """The execution history events of the run's latest execution (or of redrive ``n``)."""
        run = self.engine.get_run(run_id)
        n = run.redrives if redrive is None else redrive
        arn = execution_arn(self.state_machines[run.workflow], execution_name(run_id, n))
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events.extend(page["events"])  # type: ignore[arg-type]
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def max_state_bytes(self, run_id: str) -> int:
        """The largest input/output/parameters string in the run's execution histories."""
        run = self.engine.get_run(run_id)
        biggest = 0
        for n in range(run.redrives + 1):
            for event in self.history(run_id, n):
                for key, details in event.items():
                    if not key.endswith("EventDetails") or not isinstance(details, dict):
                        continue
                    for field in ("input", "output", "parameters"):
                        value = details.get(field)
                        if isinstance(value, str):
                            biggest = max(biggest, len(value.encode()))
        return biggest

    # -- context management ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop running executions, then undo the patches and the mock."""
        try:
            for run_id in self.runs():
                if self.execution_status(run_id) == "RUNNING":
                    self.sfn.stop_execution(executionArn=self.execution_arn(run_id))
        except Exception:  # closing must not mask the test's own failure
            pass
        self._stack.close()


__all__ = ["CRASH_ERROR", "POLL_TIMEOUT_S", "SFN_CONFIG", "TIMEOUT_ERROR", "SfnHarness", "moto_sfn", "seams"]
