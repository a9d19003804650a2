"""The engine: turns one activation into durable progress.

``Engine.process`` is what every worker (a Lambda behind SQS or Step Functions, or the in-process
harness) calls for one message. On the happy path a step costs three store calls: claim the node
(one conditional write that returns the record), read the predecessor's output, and checkpoint
the output (one conditional write). Then it tells the caller what should happen next (an
:class:`Outcome`); the transport carries it out. See ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

from stepchain.clock import Clock, SystemClock
from stepchain.context import CostMeter, LambdaContextLike, NoProbe, Probe, StepContext, logger
from stepchain.exceptions import (
    ContinueInNewInvocation,
    InvalidRunState,
    RunNotFound,
    StepCancelled,
    StepNotFound,
    TerminalError,
    ValidationError,
    VersionNotRegistered,
)
from stepchain.handoff.base import Handoff
from stepchain.limits import RunLimits
from stepchain.messages import Activation, Outcome, OutcomeKind
from stepchain.payloads import PayloadCodec
from stepchain.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus, node_key
from stepchain.store.base import (
    ACTIVE_RUN,
    CheckpointStore,
    ClaimKind,
    FinishResult,
    NewRun,
    NodeChanges,
    NodeInit,
    RunChanges,
)
from stepchain.workflow import Node, NodeKind, Registry, Workflow

#: added to the invocation's remaining time to form its lease: Lambda has killed it by then
LEASE_GRACE_MS = 2_000


def _error(exc: BaseException, node: str) -> dict[str, str]:
    return {"node": node, "type": type(exc).__name__, "message": str(exc)[:1000]}


def new_run_id(now_ms: int) -> str:
    """24 hex chars, time-ordered: 12 of milliseconds, 12 random."""
    return f"{now_ms:012x}{secrets.token_hex(6)}"


class Engine:
    def __init__(
        self,
        registry: Registry | Sequence[Workflow],
        store: CheckpointStore,
        codec: PayloadCodec,
        handoff: Handoff,
        *,
        clock: Clock | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.store = store
        self.codec = codec
        self.handoff = handoff
        self.clock = clock or SystemClock()
        self.probe: Probe = probe or NoProbe()
        handoff.probe = self.probe
        self.limits = RunLimits.from_env()  # per-run limits (stepchain.limits); tests may replace it

    # ================================================================ run lifecycle (API side)
    def start(self, workflow: str, input: Any, *, idempotency_key: str | None = None) -> tuple[RunRecord, bool]:
        """Start a run (or, with a known idempotency key and the same input, return that run)."""
        wf = self.registry.get(workflow)
        now = self.clock.now_ms()
        run_id = new_run_id(now)
        request_hash = hashlib.sha256(
            json.dumps({"workflow": workflow, "input": input}, sort_keys=True, default=str).encode()
        ).hexdigest()
        input_ref = self.codec.encode(input, scope=f"{run_id}/input")
        first = wf.first()
        run, created = self.store.create_run(
            NewRun(
                run_id,
                wf.name,
                wf.version,
                input_ref,
                now,
                NodeInit(run_id, first.id, first.id, input_ref),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        )
        if not created:
            # A retried start: re-issue the first activation only if it may have been lost.
            node = self.store.get_node(run.run_id, first.id)
            if not (run.status is RunStatus.RUNNING and node is not None and node.status is NodeStatus.PENDING):
                return run, False
        # Dying here leaves the run RUNNING with its first node PENDING: the sweeper re-issues it.
        self.probe.reached("api_start", run.run_id, first.id)
        self.handoff.start(run, Activation(run.run_id, run.workflow, run.version, first.id))
        return run, created

    def get_run(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        return run

    def output_of(self, run_id: str, step: str) -> Any:
        rec = self.store.get_node(run_id, step)
        if rec is None or rec.status is not NodeStatus.SUCCEEDED:
            raise StepNotFound(f"run {run_id!r} has no completed step {step!r}")
        return self.codec.decode(rec.output_ref)

    def deliver_event(self, run_id: str, name: str, payload: Any) -> str:
        """Deliver an event. Returns ``delivered`` (a wait consumed it) or ``buffered`` (kept for later)."""
        run = self.get_run(run_id)
        if run.status.finished:
            raise InvalidRunState(f"run {run_id} is {run.status.value}; it takes no events")
        wf = self._pinned(run)
        node = wf.wait_node(name)
        ref = self.codec.encode(payload, scope=f"{run_id}/events/{name}")
        if not self.store.put_event(run_id, name, ref, self.clock.now_ms()):
            if self.store.get_event(run_id, name) != ref:
                raise InvalidRunState(f"event {name!r} was already delivered to run {run_id} with another payload")
            # The same event again (a client retry): make sure the run moved on, then answer as before.
            return self._redeliver_event(wf, run, node.id, ref)
        self.probe.reached("api_event", run_id, node.id)  # stored, the wait not completed: the sweeper does it
        # The wait may have started meanwhile: whoever finds both the event and WAITING completes it.
        rec = self.store.get_node(run_id, node.id)
        if rec is not None and rec.status is NodeStatus.WAITING and self._complete_wait(wf, run, rec, ref, api=True):
            return "delivered"
        return "buffered"

    def finish_event(self, run_id: str, name: str) -> str:
        """Finish delivering a stored event, as the same call retried would (the sweeper calls it
        when the API died between storing the event and handing the run on)."""
        run = self.get_run(run_id)
        ref = self.store.get_event(run_id, name)
        if ref is None or run.status.finished:
            return "buffered"
        wf = self.registry.get(run.workflow, run.version)
        return self._redeliver_event(wf, run, wf.wait_node(name).id, ref)

    def _redeliver_event(self, wf: Workflow, run: RunRecord, node_id: str, ref: str) -> str:
        rec = self.store.get_node(run.run_id, node_id)
        if rec is not None and rec.status is NodeStatus.WAITING and self._complete_wait(wf, run, rec, ref):
            return "delivered"
        if rec is not None and rec.status is NodeStatus.SUCCEEDED:
            # The wait completed but the handoff may have died with its caller: re-issue it.
            succ = wf.next_of(node_id)
            succ_rec = None if succ is None else self.store.get_node(run.run_id, succ.id)
            if succ is not None and (succ_rec is None or succ_rec.status is NodeStatus.PENDING):
                now = self.clock.now_ms()  # the caller may have died before the run left WAITING
                changes = RunChanges(now, status=RunStatus.RUNNING, current=succ.id)
                self.store.update_run(run.run_id, changes, expect=(RunStatus.WAITING,))
                msg = Activation(run.run_id, run.workflow, run.version, node_id, token=rec.task_token)
                self.handoff.resume_wait(msg, Activation(run.run_id, run.workflow, run.version, succ.id))
            return "delivered"
        return "buffered"

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel an active run: nodes not yet started never will; a node running now finishes."""
        now = self.clock.now_ms()
        run = self.store.update_run(run_id, RunChanges(now, status=RunStatus.CANCELLED, ended=True), expect=ACTIVE_RUN)
        if run is None:
            current = self.get_run(run_id)
            raise InvalidRunState(f"run {run_id} is {current.status.value}; only active runs can be cancelled")
        # The commit point: from here on the sweeper finishes the cancel if this call dies.
        self.probe.reached("api_cancel", run_id, run.current or "")
        self.finish_cancel(run, api=True)
        return run

    def finish_cancel(self, run: RunRecord, *, api: bool = False) -> None:
        """The rest of a cancel, once the run is CANCELLED: tombstones, stop the transport, and
        leave the sweeper's index. Idempotent (the sweeper calls it for a cancel that died)."""
        run_id, now = run.run_id, self.clock.now_ms()
        wf = self.registry.find(run.workflow, run.version)  # None: a retired version still cancels
        existing = {r.key: r for r in self.store.list_nodes(run_id)}
        for rec in existing.values():
            if not rec.status.finished and rec.status is not NodeStatus.RUNNING:
                self.store.finish(
                    run_id, rec.key, NodeChanges(NodeStatus.CANCELLED, now, ended=True), expect=(rec.status,)
                )
        for node in wf.nodes if wf else ():  # tombstones: a late claim of a node never started finds CANCELLED
            if node.id not in existing:
                self.store.put_node_if_absent(
                    NodeInit(run_id, node.id, node.id, None, status=NodeStatus.CANCELLED), now
                )
        if api:
            self.probe.reached("api_cancel", run_id, run.current or "")
        self.handoff.cancel(run)
        self.store.update_run(run_id, RunChanges(now, settled=True), expect=(RunStatus.CANCELLED,))

    def redrive(
        self, run_id: str, *, input: Any = None, replace_input: bool = False, keep_progress: bool | None = None
    ) -> RunRecord:
        """Resume a FAILED run at its failed node(s); completed nodes are not run again.

        With ``replace_input`` the failed node starts over with ``input`` (e.g. a corrected value).
        ``keep_progress`` says whether the failed nodes keep their partial progress (``ctx.each``
        items, ``ctx.once`` results); by default a node whose input is replaced discards it, the
        others (map items keep their own input) resume it. Discarding starts a new progress
        generation (nothing is deleted: the old items expire by TTL).
        """
        run = self.get_run(run_id)
        if run.status is not RunStatus.FAILED:
            raise InvalidRunState(f"run {run_id} is {run.status.value}; only FAILED runs can be redriven")
        wf = self.registry.get(run.workflow, run.version)
        now = self.clock.now_ms()
        failed = [r for r in self.store.list_nodes(run_id) if r.status is NodeStatus.FAILED]
        if not failed:
            raise InvalidRunState(f"run {run_id} has no failed node to redrive")
        order = [n.id for n in wf.nodes]
        top = min((r.node for r in failed), key=order.index)
        # The run first (the commit point): dying after it leaves an active run the sweeper finishes
        # (a node still FAILED fails the run again, so the same redrive can be retried).
        updated = self.store.update_run(
            run_id,
            RunChanges(now, status=RunStatus.RUNNING, current=top, clear_error=True, add_redrive=True),
            expect=(RunStatus.FAILED,),
        )
        if updated is None:
            raise InvalidRunState(f"run {run_id} changed while being redriven")
        self.probe.reached("api_redrive", run_id, top)
        msgs = []
        for rec in failed:
            new_input = None
            if replace_input and rec.index is None:
                new_input = self.codec.encode(input, scope=f"{run_id}/{rec.key}/redrive{run.redrives + 1}")
            self.store.finish(
                run_id,
                rec.key,
                NodeChanges(
                    NodeStatus.PENDING,
                    now,
                    attempts=1,
                    input_ref=new_input,
                    new_generation=not (new_input is None if keep_progress is None else keep_progress),
                ),
                expect=(NodeStatus.FAILED,),
            )
            msgs.append(Activation(run_id, run.workflow, run.version, rec.node, rec.index))
        self.probe.reached("api_redrive", run_id, top)  # nodes PENDING, no activation: the sweeper re-issues
        self.handoff.redrive(updated, msgs, top)
        return updated

    def fail_node(self, run_id: str, node: str, err: dict[str, str]) -> Outcome:
        """A transport gave up on ``node`` (e.g. Step Functions ran out of retries after Lambda
        timeouts): fail the node and the run. Idempotent; a no-op on a finished run. The node is
        marked FAILED even if it was never claimed, so the run can be redriven from it."""
        now = self.clock.now_ms()
        run = self.store.get_run(run_id)
        if run is None or run.status.finished:
            return Outcome(OutcomeKind.FAILED, error=run.error if run else err)
        rec = self.store.get_node(run_id, node)
        if rec is None:
            self.store.put_node_if_absent(NodeInit(run_id, node, node, None, status=NodeStatus.FAILED), now)
        elif not rec.status.finished:
            self.store.finish(
                run_id, node, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), expect=(rec.status,)
            )
        self.store.update_run(
            run_id, RunChanges(now, status=RunStatus.FAILED, error=err, ended=True), expect=ACTIVE_RUN
        )
        logger.warning("run failed by its transport", extra={"run_id": run_id, "node": node, "error": err})
        return Outcome(OutcomeKind.FAILED, error=err)

    def _pinned(self, run: RunRecord) -> Workflow:
        """The run's workflow at its pinned version. When this deployment does not register that
        version, nothing can advance the run: fail it with an error naming the version, and raise."""
        try:
            return self.registry.get(run.workflow, run.version)
        except VersionNotRegistered as exc:
            self._fail_unregistered(run.run_id, run.current, exc)
            raise

    def _fail_unregistered(self, run_id: str, key: str | None, exc: VersionNotRegistered) -> Outcome:
        err = {"node": key or "", "type": "VersionNotRegistered", "message": f"{exc}; register it again and redrive"}
        logger.error("run pinned to a workflow version this deployment does not register", extra={"error": err})
        if key:
            return self.fail_node(run_id, key, err)
        self.store.update_run(
            run_id, RunChanges(self.clock.now_ms(), status=RunStatus.FAILED, error=err, ended=True), expect=ACTIVE_RUN
        )
        return Outcome(OutcomeKind.FAILED, error=err)

    # ======================================================================= worker side
    def process(self, msg: Activation, lambda_context: LambdaContextLike) -> Outcome:
        """Make durable progress on one activation. Safe to call any number of times.

        A message for a workflow version this deployment does not register fails the run (it is
        not retried: no redelivery could ever succeed here)."""
        try:
            wf = self.registry.get(msg.workflow, msg.version)
        except VersionNotRegistered as exc:
            return self._fail_unregistered(msg.run_id, node_key(msg.node, msg.index), exc)
        node = wf.node(msg.node)
        if node.kind is NodeKind.MAP and msg.index is None:
            if msg.action == "join":
                return self._join(wf, node, msg)
            return self._fan_out(wf, node, msg, lambda_context)
        if node.kind is NodeKind.SLEEP:
            return self._sleep(wf, node, msg, lambda_context)
        if node.kind is NodeKind.WAIT:
            return self._wait(wf, node, msg, lambda_context)
        return self._run_step(wf, node, msg, lambda_context)

    @staticmethod
    def _activation(msg: Activation, node: str, index: int | None = None) -> Activation:
        return Activation(msg.run_id, msg.workflow, msg.version, node, index)

    # -- claiming ------------------------------------------------------------------------------
    def _claim(
        self, wf: Workflow, node: Node, msg: Activation, key: str, lctx: LambdaContextLike
    ) -> tuple[NodeRecord | None, Outcome | None]:
        """Claim the node, taking it over if its worker died. Returns the record, or the outcome
        to report instead (the node is done, busy, gone ...)."""
        now = self.clock.now_ms()
        owner = f"{lctx.aws_request_id}/{uuid.uuid4().hex[:8]}"
        lease = now + int(lctx.get_remaining_time_in_millis()) + LEASE_GRACE_MS
        res = self.store.claim(
            msg.run_id, key, node=node.id, index=msg.index, owner=owner, now_ms=now, lease_until_ms=lease
        )
        rec = res.record
        if res.kind is ClaimKind.BUSY and rec is not None and rec.status is NodeStatus.RUNNING:
            if rec.lease_until_ms >= now:
                return None, Outcome(OutcomeKind.BUSY, wake_at_ms=rec.lease_until_ms + 1)
            # Its worker died (crash, timeout, kill): the lease ran out. Take over, or give up.
            if rec.attempts >= node.retry.max_attempts:
                err = {
                    "node": key,
                    "type": "WorkerLost",
                    "message": (
                        f"each of its {rec.attempts} attempts was killed or timed out before it finished "
                        f"(timeout_s={node.timeout_s}: a step must finish, or checkpoint with ctx.each and "
                        "continue, within it); giving up"
                    ),
                }
                inv = Invocation(rec.current_started_ms or now, rec.lease_until_ms, "crashed")
                changes = NodeChanges(NodeStatus.FAILED, now, error=err, ended=True, invocation=inv, prior=rec)
                self._fail(msg, key, err, changes, owner=rec.owner)
                return None, Outcome(OutcomeKind.FAILED, error=err)
            res = self.store.takeover(msg.run_id, key, stale=rec, owner=owner, now_ms=now, lease_until_ms=lease)
            if res.kind is ClaimKind.CLAIMED:
                self.store.add_crash_event(msg.run_id, now, key, "takeover")
                self.probe.reached("takeover", msg.run_id, key)
                logger.warning("took over a node whose worker died", extra={"run_id": msg.run_id, "node": key})
            rec = res.record
        if res.kind is ClaimKind.CLAIMED:
            self.probe.reached("after_claim", msg.run_id, key)
            return rec, None
        if res.kind is ClaimKind.DONE and rec is not None:
            return None, self._served_from_checkpoint(wf, node, msg, rec)
        if res.kind is ClaimKind.BUSY and rec is not None:
            if rec.status is NodeStatus.FANNED_OUT:
                return None, self._resume_fan_out(node, msg, rec)
            if rec.status in (NodeStatus.SLEEPING, NodeStatus.WAITING):
                return rec, None
        status = rec.status.value if rec else "missing"
        return None, Outcome(OutcomeKind.DROPPED, detail=f"node {key} is {status}")

    def _input(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> str | None:
        """The node's input reference: its own (first node, map item, redrive) or its predecessor's output."""
        if rec.input_ref is not None:
            return rec.input_ref
        prev = wf.prev_of(node.id)
        if prev is None:
            return None
        prev_rec = self.store.get_node(msg.run_id, prev.id)
        if prev_rec is None or prev_rec.status is not NodeStatus.SUCCEEDED:
            return None
        return prev_rec.output_ref

    def _release(self, msg: Activation, key: str, rec: NodeRecord, why: str) -> Outcome:
        """Undo a claim made by a message that came too early (its predecessor is not done)."""
        self.store.finish(msg.run_id, key, NodeChanges(NodeStatus.PENDING, self.clock.now_ms()), owner=rec.owner)
        return Outcome(OutcomeKind.DROPPED, detail=why)

    def _served_from_checkpoint(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
        """A completed node met again: never re-run it; re-issue its handoff if that may have been lost.

        Queues redeliver the message of a worker that died only after its visibility timeout
        (>= the lease, > LEASE_GRACE_MS); a duplicate delivery comes at once. So only a late
        redelivery re-issues the handoff (and counts as a crash): an early duplicate re-issuing it
        would double the traffic at every step.
        """
        self.store.add_checkpoint_hit(msg.run_id, rec.key)
        self.probe.reached("checkpoint_hit", msg.run_id, rec.key)
        now = self.clock.now_ms()
        late = rec.ended_ms is None or now - rec.ended_ms > LEASE_GRACE_MS
        if not late:
            if wf.next_of(node.id) is None and msg.index is None:
                self._finish_run(msg, rec.output_ref)
            return Outcome(OutcomeKind.DONE, detail="duplicate")
        if node.kind is NodeKind.MAP and msg.index is not None:
            self.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
            return self._after_item(wf, node, msg)
        succ = wf.next_of(node.id)
        if succ is None:
            # the worker may have died right before marking the run SUCCEEDED
            if self._finish_run(msg, rec.output_ref):
                self.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
            return Outcome(OutcomeKind.DONE, detail="checkpoint")
        succ_rec = self.store.get_node(msg.run_id, succ.id)
        if succ_rec is None or succ_rec.status is NodeStatus.PENDING:
            self.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
            return Outcome(OutcomeKind.DONE, next=(self._activation(msg, succ.id),), detail="checkpoint")
        return Outcome(OutcomeKind.DONE, detail="checkpoint")

    # -- steps and map items -------------------------------------------------------------------
    def _run_step(self, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        key = node_key(node.id, msg.index)
        rec, early = self._claim(wf, node, msg, key, lctx)
        if rec is None:
            assert early is not None
            return early
        input_ref = self._input(wf, node, msg, rec)
        if input_ref is None:
            return self._release(msg, key, rec, "predecessor not finished")
        assert node.fn is not None
        ctx = StepContext(
            msg.run_id,
            wf.name,
            node.id,
            key,
            msg.index,
            rec.attempts,
            lctx,
            self,
            generation=rec.generation,
            owner=rec.owner,
        )
        t0 = self.clock.monotonic_ms()
        started = self.clock.now_ms()
        owner = rec.owner
        try:
            value = self.codec.decode(input_ref)
            output = node.fn(ctx, value)
            self.probe.reached("step_executed", msg.run_id, key)
            out_ref = self.codec.encode(output, scope=f"{msg.run_id}/{key}")
        except ContinueInNewInvocation as sig:
            now = self.clock.now_ms()
            inv = Invocation(started, now, "continued")
            changes = self._ledger(NodeStatus.CONTINUING, now, t0, ctx.cost, inv, prior=rec)
            self.store.finish(msg.run_id, key, changes, owner=owner)
            logger.info("continuing in a fresh invocation", extra={"node": key, "reason": sig.reason})
            self.probe.reached("continued", msg.run_id, key)
            return Outcome(OutcomeKind.CONTINUE, detail=sig.reason)
        except StepCancelled as sig:  # the run was cancelled while the step ran: stop spending
            now = self.clock.now_ms()
            inv = Invocation(started, now, "cancelled")
            changes = self._ledger(NodeStatus.CANCELLED, now, t0, ctx.cost, inv, ended=True)
            self.store.finish(msg.run_id, key, changes, owner=owner)
            return Outcome(OutcomeKind.DROPPED, detail=str(sig))
        except Exception as exc:  # the step failed: retry or fail the run
            return self._step_failed(node, msg, key, rec, exc, t0, started, ctx.cost)
        now = self.clock.now_ms()
        inv = Invocation(started, now, "succeeded")
        changes = self._ledger(NodeStatus.SUCCEEDED, now, t0, ctx.cost, inv, output_ref=out_ref, ended=True, prior=rec)
        return self._commit(wf, node, msg, key, changes, owner=owner)

    def _ledger(
        self, status: NodeStatus, now: int, t0: float, cost: CostMeter, inv: Invocation, **kw: Any
    ) -> NodeChanges:
        return NodeChanges(
            status,
            now,
            add_duration_ms=max(0, int(self.clock.monotonic_ms() - t0)),
            add_cost_nano=cost.usd_nano,
            add_input_tokens=cost.input_tokens,
            add_output_tokens=cost.output_tokens,
            add_checkpoint_hits=cost.checkpoint_hits,
            add_effect_reruns=cost.effect_reruns,
            invocation=inv,
            **kw,
        )

    def _commit(
        self,
        wf: Workflow,
        node: Node,
        msg: Activation,
        key: str,
        changes: NodeChanges,
        *,
        owner: str | None,
        expect: tuple[NodeStatus, ...] = (NodeStatus.RUNNING,),
    ) -> Outcome:
        """Checkpoint the node's output (one conditional write) and name what comes next."""
        if self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect) is not FinishResult.OK:
            return Outcome(OutcomeKind.DROPPED, detail="lease lost")
        self.probe.reached("after_checkpoint", msg.run_id, key)
        if node.kind is NodeKind.MAP and msg.index is not None:
            return self._after_item(wf, node, msg)
        succ = wf.next_of(node.id)
        if succ is None:
            self._finish_run(msg, changes.output_ref)
            return Outcome(OutcomeKind.DONE)
        return Outcome(OutcomeKind.DONE, next=(self._activation(msg, succ.id),))

    def _finish_run(self, msg: Activation, output_ref: str | None) -> bool:
        """Mark the run SUCCEEDED; False when it was no longer active (already done, cancelled)."""
        now = self.clock.now_ms()
        changes = RunChanges(now, status=RunStatus.SUCCEEDED, output_ref=output_ref, current="", ended=True)
        return self.store.update_run(msg.run_id, changes, expect=ACTIVE_RUN) is not None

    def _step_failed(
        self,
        node: Node,
        msg: Activation,
        key: str,
        rec: NodeRecord,
        exc: Exception,
        t0: float,
        started: int,
        cost: CostMeter,
    ) -> Outcome:
        now = self.clock.now_ms()
        err = _error(exc, key)
        terminal = isinstance(exc, TerminalError | ValidationError)
        logger.warning(
            "step failed",
            extra={
                "node": key,
                "attempt": rec.attempts,
                "error": err,
                "terminal": terminal,
                "trace": traceback.format_exc(limit=5),
            },
        )
        if not terminal and rec.attempts < node.retry.max_attempts:
            delay_ms = int(node.retry.delay_s(rec.attempts) * 1000)
            inv = Invocation(started, now, "retrying")
            changes = self._ledger(
                NodeStatus.RETRYING,
                now,
                t0,
                cost,
                inv,
                error=err,
                attempts=rec.attempts + 1,
                prior=rec,
                wake_at_ms=now + delay_ms,
            )
            self.store.finish(msg.run_id, key, changes, owner=rec.owner)
            return Outcome(OutcomeKind.WAIT, wake_at_ms=now + delay_ms, error=err)
        if not terminal:
            err["message"] = f"gave up after {rec.attempts} attempts: {err['message']}"
        inv = Invocation(started, now, "failed")
        changes = self._ledger(NodeStatus.FAILED, now, t0, cost, inv, error=err, ended=True, prior=rec)
        self._fail(msg, key, err, changes, owner=rec.owner)
        return Outcome(OutcomeKind.FAILED, error=err)

    def _fail(
        self,
        msg: Activation,
        key: str,
        err: dict[str, str],
        changes: NodeChanges,
        *,
        owner: str | None = None,
        expect: tuple[NodeStatus, ...] = (NodeStatus.RUNNING,),
    ) -> None:
        if self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect) is FinishResult.OK:
            run = RunChanges(changes.now_ms, status=RunStatus.FAILED, error=err, ended=True)
            self.store.update_run(msg.run_id, run, expect=ACTIVE_RUN)

    # -- map -------------------------------------------------------------------------------------
    def _fan_out(self, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        rec, early = self._claim(wf, node, msg, node.id, lctx)
        if rec is None:
            assert early is not None
            return early
        input_ref = self._input(wf, node, msg, rec)
        if input_ref is None:
            return self._release(msg, node.id, rec, "predecessor not finished")
        now = self.clock.now_ms()
        items = self.codec.decode(input_ref)
        too_wide = self.limits.map_error(node.id, len(items)) if isinstance(items, list) else None
        if not isinstance(items, list) or too_wide:
            got = type(items).__name__
            err = {"node": node.id, "type": "TypeError", "message": f"map {node.id!r} needs a list, got {got}"}
            err = too_wide or err
            self._fail(msg, node.id, err, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), owner=rec.owner)
            return Outcome(OutcomeKind.FAILED, error=err)
        for i, item in enumerate(items):
            ref = self.codec.encode(item, scope=f"{msg.run_id}/{node.id}/items")
            self.store.put_node_if_absent(NodeInit(msg.run_id, node_key(node.id, i), node.id, ref, index=i), now)
        inv = Invocation(now, self.clock.now_ms(), "fanned_out")
        changes = NodeChanges(NodeStatus.FANNED_OUT, now, items_total=len(items), invocation=inv, prior=rec)
        self.store.finish(msg.run_id, node.id, changes, owner=rec.owner)
        if not items:
            return self._join(wf, node, msg)
        window = node.max_concurrency or len(items)
        first = tuple(self._activation(msg, node.id, i) for i in range(min(window, len(items))))
        return Outcome(OutcomeKind.FANOUT, next=first, items=len(items))

    def _resume_fan_out(self, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
        """The map was fanned out before (then the worker died, or this is a duplicate): re-activate
        the head of every lane whose previous item is done but whose next item never started."""
        total = rec.items_total or 0
        window = node.max_concurrency or total
        items = {i.index: i for i in self.store.list_nodes(msg.run_id, f"{node.id}#") if i.index is not None}
        heads = []
        for i, item in sorted(items.items()):
            prev = items.get(i - window)
            if item.status is NodeStatus.PENDING and (i < window or (prev and prev.status is NodeStatus.SUCCEEDED)):
                heads.append(self._activation(msg, node.id, i))
        return Outcome(OutcomeKind.FANOUT, next=tuple(heads), items=total)

    def _after_item(self, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        """An item is done: the map runs ``max_concurrency`` lanes (item i, i+w, i+2w ...); start
        the next item of this lane, or, at a lane's end, try the join."""
        assert msg.index is not None
        parent = self.store.get_node(msg.run_id, node.id)
        total = parent.items_total if parent is not None and parent.items_total is not None else 0
        window = node.max_concurrency or total
        nxt_i = msg.index + window
        if nxt_i < total:
            nxt_rec = self.store.get_node(msg.run_id, node_key(node.id, nxt_i))
            if nxt_rec is not None and nxt_rec.status is NodeStatus.PENDING:
                return Outcome(OutcomeKind.DONE, next=(self._activation(msg, node.id, nxt_i),))
            return Outcome(OutcomeKind.DONE)
        joined = self._join(wf, node, msg.with_(index=None))
        return Outcome(OutcomeKind.DONE, next=joined.next if joined.kind is OutcomeKind.DONE else ())

    def _join(self, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        """Fan-in: when every item succeeded, the map's output is the list of their outputs."""
        parent = self.store.get_node(msg.run_id, node.id)
        if parent is None:
            return Outcome(OutcomeKind.DROPPED, detail="map node missing")
        if parent.status is NodeStatus.SUCCEEDED:
            if msg.action == "join":  # Step Functions' join after its Map: the last item already joined
                return Outcome(OutcomeKind.DONE, detail="joined")
            return self._served_from_checkpoint(wf, node, msg.with_(index=None), parent)
        items = self.store.list_nodes(msg.run_id, f"{node.id}#")
        failed = [i for i in items if i.status is NodeStatus.FAILED]
        if failed:
            return Outcome(OutcomeKind.FAILED, error=failed[0].error)
        if (
            parent.status is not NodeStatus.FANNED_OUT
            or len(items) < (parent.items_total or 0)
            or any(i.status is not NodeStatus.SUCCEEDED for i in items)
        ):
            return Outcome(OutcomeKind.DROPPED, detail="items still running")
        now = self.clock.now_ms()
        out_ref = self.codec.encode([self.codec.decode(i.output_ref) for i in items], scope=f"{msg.run_id}/{node.id}")
        changes = NodeChanges(
            NodeStatus.SUCCEEDED,
            now,
            output_ref=out_ref,
            ended=True,
            add_duration_ms=sum(i.duration_ms for i in items),
            add_cost_nano=sum(round(i.cost_usd * 1e9) for i in items),
            add_input_tokens=sum(i.input_tokens for i in items),
            add_output_tokens=sum(i.output_tokens for i in items),
        )
        out = self._commit(
            wf, node, msg.with_(index=None), node.id, changes, owner=None, expect=(NodeStatus.FANNED_OUT,)
        )
        if out.kind is OutcomeKind.DROPPED:
            return Outcome(OutcomeKind.DONE, detail="joined by another item")
        return out

    # -- sleep and event waits -----------------------------------------------------------------
    def _sleep(self, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        rec, early = self._claim(wf, node, msg, node.id, lctx)
        if rec is None:
            assert early is not None
            return early
        now = self.clock.now_ms()
        if rec.status is NodeStatus.RUNNING:  # first activation: start sleeping
            input_ref = self._input(wf, node, msg, rec)
            if input_ref is None:
                return self._release(msg, node.id, rec, "predecessor not finished")
            wake = now + node.seconds * 1000
            changes = NodeChanges(NodeStatus.SLEEPING, now, wake_at_ms=wake, input_ref=input_ref)
            self.store.finish(msg.run_id, node.id, changes, owner=rec.owner)
            return Outcome(OutcomeKind.WAIT, wake_at_ms=wake)
        if rec.status is not NodeStatus.SLEEPING or rec.wake_at_ms is None:
            return Outcome(OutcomeKind.DROPPED, detail=f"sleep node is {rec.status.value}")
        if now < rec.wake_at_ms:
            return Outcome(OutcomeKind.WAIT, wake_at_ms=rec.wake_at_ms)
        inv = Invocation(rec.started_ms or rec.created_ms, now, "slept")
        changes = NodeChanges(
            NodeStatus.SUCCEEDED, now, output_ref=rec.input_ref, ended=True, invocation=inv, prior=rec
        )
        return self._commit(wf, node, msg, node.id, changes, owner=None, expect=(NodeStatus.SLEEPING,))

    def _wait(self, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        if msg.action in ("timeout", "expire"):
            return self._wait_deadline(wf, node, msg)
        rec, early = self._claim(wf, node, msg, node.id, lctx)
        if rec is None:
            assert early is not None
            return early
        now = self.clock.now_ms()
        if rec.status is NodeStatus.RUNNING:  # first activation: start waiting
            if self._input(wf, node, msg, rec) is None and wf.prev_of(node.id) is not None:
                return self._release(msg, node.id, rec, "predecessor not finished")
            deadline = now + node.seconds * 1000
            changes = NodeChanges(
                NodeStatus.WAITING, now, wake_at_ms=deadline, event_name=node.event, task_token=msg.token
            )
            self.store.finish(msg.run_id, node.id, changes, owner=rec.owner)
            self.store.update_run(
                msg.run_id, RunChanges(now, status=RunStatus.WAITING, current=node.id), expect=(RunStatus.RUNNING,)
            )
        elif rec.status is NodeStatus.WAITING and msg.token and msg.token != rec.task_token:
            # Step Functions re-ran the wait task (a new token): remember the live one.
            changes = NodeChanges(NodeStatus.WAITING, now, task_token=msg.token)
            self.store.finish(msg.run_id, node.id, changes, expect=(NodeStatus.WAITING,))
        elif rec.status is not NodeStatus.WAITING:
            return Outcome(OutcomeKind.DROPPED, detail=f"wait node is {rec.status.value}")
        rec = self.store.get_node(msg.run_id, node.id)
        if rec is None or rec.status is not NodeStatus.WAITING:
            return Outcome(OutcomeKind.DROPPED)
        assert node.event is not None
        buffered = self.store.get_event(msg.run_id, node.event)
        if buffered is not None:
            self._complete_wait(wf, self.get_run(msg.run_id), rec, buffered)
        return Outcome(OutcomeKind.SUSPENDED, wake_at_ms=rec.wake_at_ms)

    def _wait_deadline(self, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        rec = self.store.get_node(msg.run_id, node.id)
        if rec is None or rec.status is not NodeStatus.WAITING or rec.wake_at_ms is None:
            return Outcome(OutcomeKind.DROPPED, detail="wait is over")
        now = self.clock.now_ms()
        if msg.action == "timeout" and now < rec.wake_at_ms:
            return Outcome(OutcomeKind.SUSPENDED, wake_at_ms=rec.wake_at_ms)
        err = {
            "node": node.id,
            "type": "EventTimeout",
            "message": f"event {node.event!r} not received within {node.seconds} s",
        }
        inv = Invocation(rec.started_ms or rec.created_ms, now, "timed_out")
        changes = NodeChanges(NodeStatus.FAILED, now, error=err, ended=True, invocation=inv, prior=rec)
        self._fail(msg, node.id, err, changes, expect=(NodeStatus.WAITING,))
        return Outcome(OutcomeKind.FAILED, error=err)

    def _complete_wait(
        self, wf: Workflow, run: RunRecord, rec: NodeRecord, payload_ref: str, *, api: bool = False
    ) -> bool:
        node = wf.node(rec.node)
        now = self.clock.now_ms()
        msg = Activation(run.run_id, run.workflow, run.version, node.id, token=rec.task_token)
        inv = Invocation(rec.started_ms or rec.created_ms, now, "event")
        changes = NodeChanges(NodeStatus.SUCCEEDED, now, output_ref=payload_ref, ended=True, invocation=inv, prior=rec)
        out = self._commit(wf, node, msg, node.id, changes, owner=None, expect=(NodeStatus.WAITING,))
        if out.kind is not OutcomeKind.DONE:
            return False
        if out.next:
            self.store.update_run(
                run.run_id,
                RunChanges(now, status=RunStatus.RUNNING, current=out.next[0].node),
                expect=(RunStatus.WAITING,),
            )
        if api:  # the API's call: dying here leaves the successor unissued (the sweeper re-issues it)
            self.probe.reached("api_event", run.run_id, node.id)
        self.handoff.resume_wait(msg, out.next[0] if out.next else None)
        return True
