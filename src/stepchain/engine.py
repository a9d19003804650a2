"""The engine: turns one activation into durable progress.

``Engine.process`` is what every worker (a Lambda behind SQS or Step Functions, or the in-process
harness) calls for one message. It claims the node with one conditional write, runs the user's
code, and commits the output together with the successor's record in one transaction; then it
tells the caller what should happen next (an :class:`Outcome`). See ARCHITECTURE.md.
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
    StepNotFound,
    TerminalError,
    ValidationError,
)
from stepchain.handoff.base import Handoff
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

    # ================================================================ run lifecycle (API side)
    def start(self, workflow: str, input: Any, *, idempotency_key: str | None = None) -> tuple[RunRecord, bool]:
        """Start a run (or, with a known idempotency key and the same input, return that run)."""
        wf = self.registry.get(workflow)
        now = self.clock.now_ms()
        run_id = new_run_id(now)
        input_ref = self.codec.encode(input, scope=f"{run_id}/input")
        request_hash = hashlib.sha256(
            json.dumps(
                {"workflow": workflow, "input": json.loads(input_ref) if len(input_ref) < 1 << 16 else input_ref},
                sort_keys=True,
            ).encode()
        ).hexdigest()
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
            # A retried start: re-issue the first activation if it may have been lost.
            node = self.store.get_node(run.run_id, first.id)
            if not (run.status is RunStatus.RUNNING and node is not None and node.status is NodeStatus.PENDING):
                return run, False
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
        wf = self.registry.get(run.workflow, run.version)
        node = wf.wait_node(name)
        rec = self.store.get_node(run_id, node.id)
        if rec is not None and rec.status is NodeStatus.SUCCEEDED:
            raise InvalidRunState(f"event {name!r} was already delivered to run {run_id}")
        ref = self.codec.encode(payload, scope=f"{run_id}/events/{name}")
        if not self.store.put_event(run_id, name, ref, self.clock.now_ms()):
            raise InvalidRunState(f"event {name!r} was already delivered to run {run_id}")
        rec = self.store.get_node(run_id, node.id)
        if rec is not None and rec.status is NodeStatus.WAITING and self._complete_wait(wf, run, rec, ref):
            return "delivered"
        return "buffered"

    def cancel(self, run_id: str) -> RunRecord:
        now = self.clock.now_ms()
        run = self.store.update_run(run_id, RunChanges(now, status=RunStatus.CANCELLED, ended=True), expect=ACTIVE_RUN)
        if run is None:
            current = self.get_run(run_id)
            raise InvalidRunState(f"run {run_id} is {current.status.value}; only active runs can be cancelled")
        for rec in self.store.list_nodes(run_id):
            if not rec.status.finished and rec.status is not NodeStatus.RUNNING:
                self.store.finish(
                    run_id, rec.key, NodeChanges(NodeStatus.CANCELLED, now, ended=True), expect=(rec.status,)
                )
        self.handoff.cancel(run)
        return run

    def redrive(self, run_id: str, *, input: Any = None, replace_input: bool = False) -> RunRecord:
        """Resume a FAILED run at its failed node(s); completed nodes are not run again.

        With ``replace_input`` the failed node starts over with ``input`` (e.g. a corrected value).
        """
        run = self.get_run(run_id)
        if run.status is not RunStatus.FAILED:
            raise InvalidRunState(f"run {run_id} is {run.status.value}; only FAILED runs can be redriven")
        wf = self.registry.get(run.workflow, run.version)
        now = self.clock.now_ms()
        failed = [r for r in self.store.list_nodes(run_id) if r.status is NodeStatus.FAILED]
        if not failed:
            raise InvalidRunState(f"run {run_id} has no failed node to redrive")
        top = min((r.node for r in failed), key=lambda n: [x.id for x in wf.nodes].index(n))
        msgs = []
        for rec in failed:
            new_input = None
            if replace_input and rec.index is None:
                new_input = self.codec.encode(input, scope=f"{run_id}/{rec.key}/redrive{run.redrives + 1}")
            self.store.finish(
                run_id,
                rec.key,
                NodeChanges(NodeStatus.PENDING, now, attempts=1, input_ref=new_input),
                expect=(NodeStatus.FAILED,),
            )
            msgs.append(Activation(run_id, run.workflow, run.version, rec.node, rec.index))
        updated = self.store.update_run(
            run_id,
            RunChanges(now, status=RunStatus.RUNNING, current=top, clear_error=True, add_redrive=True),
            expect=(RunStatus.FAILED,),
        )
        if updated is None:
            raise InvalidRunState(f"run {run_id} changed while being redriven")
        self.handoff.redrive(updated, msgs, top)
        return updated

    # ======================================================================= worker side
    def process(self, msg: Activation, lambda_context: LambdaContextLike) -> Outcome:
        """Make durable progress on one activation. Safe to call any number of times."""
        wf = self.registry.get(msg.workflow, msg.version)
        node = wf.node(msg.node)
        if node.kind is NodeKind.SLEEP:
            return self._sleep(wf, node, msg)
        if node.kind is NodeKind.WAIT:
            return self._wait(wf, node, msg)
        if node.kind is NodeKind.MAP and msg.index is None:
            return self._join(wf, node, msg) if msg.action == "join" else self._fan_out(wf, node, msg, lambda_context)
        return self._run_step(wf, node, msg, lambda_context)

    # -- claiming ------------------------------------------------------------------------------
    def _claim(
        self, wf: Workflow, node: Node, msg: Activation, key: str, lctx: LambdaContextLike
    ) -> tuple[NodeRecord | None, Outcome | None]:
        now = self.clock.now_ms()
        owner = f"{lctx.aws_request_id}/{uuid.uuid4().hex[:8]}"
        lease = now + int(lctx.get_remaining_time_in_millis()) + LEASE_GRACE_MS
        res = self.store.claim(msg.run_id, key, owner=owner, now_ms=now, lease_until_ms=lease)
        rec = res.record
        if res.kind is ClaimKind.BUSY and rec is not None and rec.status is NodeStatus.RUNNING:
            if rec.lease_until_ms >= now:
                return None, Outcome(OutcomeKind.BUSY, wake_at_ms=rec.lease_until_ms + 1)
            # Its worker died (crash, timeout, kill): the lease ran out. Take over, or give up.
            if rec.attempts >= node.retry.max_attempts:
                err = {
                    "node": key,
                    "type": "WorkerLost",
                    "message": f"worker died {rec.attempts} times (crash or timeout); giving up",
                }
                self._fail(
                    wf,
                    msg,
                    key,
                    err,
                    NodeChanges(
                        NodeStatus.FAILED,
                        now,
                        error=err,
                        ended=True,
                        invocation=Invocation(rec.current_started_ms or now, rec.lease_until_ms, "crashed"),
                    ),
                    owner=rec.owner,
                )
                return None, Outcome(OutcomeKind.FAILED, error=err)
            res = self.store.takeover(msg.run_id, key, stale=rec, owner=owner, now_ms=now, lease_until_ms=lease)
            if res.kind is ClaimKind.CLAIMED:
                self.store.add_crash_event(msg.run_id, now, key, "takeover")
                logger.warning("took over a node whose worker died", extra={"run_id": msg.run_id, "node": key})
            rec = res.record
        if res.kind is ClaimKind.CLAIMED:
            self.probe.reached("after_claim", msg.run_id, key)
            return rec, None
        if res.kind is ClaimKind.DONE and rec is not None:
            return None, self._served_from_checkpoint(wf, node, msg, rec)
        if res.kind is ClaimKind.BUSY and rec is not None and rec.status is NodeStatus.FANNED_OUT:
            return None, Outcome(OutcomeKind.FANOUT, items=rec.items_total or 0)
        return None, Outcome(OutcomeKind.DROPPED, detail=f"node {key} is {rec.status.value if rec else 'missing'}")

    def _served_from_checkpoint(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
        """A completed node met again: never re-run it; re-issue its handoff if that may have been lost."""
        self.store.add_checkpoint_hit(msg.run_id, rec.key)
        if node.kind is NodeKind.MAP and msg.index is not None:
            return self._after_item(wf, node, msg, rec)
        succ = wf.next_of(node.id)
        if succ is None:
            return Outcome(OutcomeKind.DONE, detail="checkpoint")
        succ_rec = self.store.get_node(msg.run_id, succ.id)
        if succ_rec is not None and succ_rec.status is NodeStatus.PENDING:
            self.store.add_crash_event(msg.run_id, self.clock.now_ms(), rec.key, "lost_handoff")
            return Outcome(OutcomeKind.DONE, next=(self._activation(msg, succ.id),), detail="checkpoint")
        return Outcome(OutcomeKind.DONE, detail="checkpoint")

    @staticmethod
    def _activation(msg: Activation, node: str, index: int | None = None) -> Activation:
        return Activation(msg.run_id, msg.workflow, msg.version, node, index)

    # -- steps and map items -------------------------------------------------------------------
    def _run_step(self, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        key = node_key(node.id, msg.index)
        rec, early = self._claim(wf, node, msg, key, lctx)
        if rec is None:
            assert early is not None
            return early
        assert node.fn is not None
        ctx = StepContext(msg.run_id, wf.name, node.id, key, msg.index, rec.attempts, lctx, self)
        t0 = self.clock.monotonic_ms()
        started = self.clock.now_ms()
        owner = rec.owner
        try:
            value = self.codec.decode(rec.input_ref)
            self.probe.reached("before_execute", msg.run_id, key)
            output = node.fn(ctx, value)
            self.probe.reached("step_executed", msg.run_id, key)
            out_ref = self.codec.encode(output, scope=f"{msg.run_id}/{key}")
        except ContinueInNewInvocation as sig:
            now = self.clock.now_ms()
            self.store.finish(
                msg.run_id,
                key,
                self._ledger(NodeStatus.CONTINUING, now, t0, ctx.cost, Invocation(started, now, "continued")),
                owner=owner,
            )
            logger.info("continuing in a fresh invocation", extra={"node": key, "reason": sig.reason})
            return Outcome(OutcomeKind.CONTINUE, detail=sig.reason)
        except Exception as exc:  # the step failed: retry or fail the run
            return self._step_failed(wf, node, msg, key, rec, exc, t0, started, ctx.cost)
        now = self.clock.now_ms()
        changes = self._ledger(
            NodeStatus.SUCCEEDED,
            now,
            t0,
            ctx.cost,
            Invocation(started, now, "succeeded"),
            output_ref=out_ref,
            ended=True,
        )
        if msg.index is not None:
            if self.store.finish(msg.run_id, key, changes, owner=owner) is not FinishResult.OK:
                return Outcome(OutcomeKind.DROPPED, detail="lease lost")
            self.probe.reached("after_checkpoint", msg.run_id, key)
            return self._after_item(wf, node, msg, rec)
        return self._commit(wf, node, msg, key, changes, out_ref, owner=owner)

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
        out_ref: str,
        *,
        owner: str | None,
        expect: tuple[NodeStatus, ...] = (NodeStatus.RUNNING,),
    ) -> Outcome:
        """Checkpoint the node's output, create its successor and advance the run: one transaction."""
        succ = wf.next_of(node.id)
        now = changes.now_ms
        if succ is None:
            run = RunChanges(now, status=RunStatus.SUCCEEDED, output_ref=out_ref, current="", ended=True)
            succ_init = None
        else:
            run = RunChanges(now, status=RunStatus.RUNNING, current=succ.id)
            succ_init = NodeInit(msg.run_id, succ.id, succ.id, out_ref)
        res = self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect, successor=succ_init, run=run)
        if res is FinishResult.RUN_INACTIVE:
            # Cancelled meanwhile: keep the work, start nothing new.
            self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect)
            return Outcome(OutcomeKind.DROPPED, detail="run is no longer active")
        if res is FinishResult.LOST:
            return Outcome(OutcomeKind.DROPPED, detail="lease lost")
        self.probe.reached("after_checkpoint", msg.run_id, key)
        nxt = () if succ is None else (self._activation(msg, succ.id),)
        return Outcome(OutcomeKind.DONE, next=nxt)

    def _step_failed(
        self,
        wf: Workflow,
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
            self.store.finish(
                msg.run_id,
                key,
                self._ledger(
                    NodeStatus.RETRYING,
                    now,
                    t0,
                    cost,
                    Invocation(started, now, "retrying"),
                    error=err,
                    attempts=rec.attempts + 1,
                ),
                owner=rec.owner,
            )
            return Outcome(OutcomeKind.WAIT, wake_at_ms=now + delay_ms, error=err)
        if not terminal:
            err["message"] = f"gave up after {rec.attempts} attempts: {err['message']}"
        self._fail(
            wf,
            msg,
            key,
            err,
            self._ledger(NodeStatus.FAILED, now, t0, cost, Invocation(started, now, "failed"), error=err, ended=True),
            owner=rec.owner,
        )
        return Outcome(OutcomeKind.FAILED, error=err)

    def _fail(
        self,
        wf: Workflow,
        msg: Activation,
        key: str,
        err: dict[str, str],
        changes: NodeChanges,
        *,
        owner: str | None = None,
        expect: tuple[NodeStatus, ...] = (NodeStatus.RUNNING,),
    ) -> None:
        run = RunChanges(changes.now_ms, status=RunStatus.FAILED, error=err, ended=True)
        if (
            self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect, run=run)
            is FinishResult.RUN_INACTIVE
        ):
            self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect)

    # -- map -------------------------------------------------------------------------------------
    def _fan_out(self, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        rec, early = self._claim(wf, node, msg, node.id, lctx)
        if rec is None:
            assert early is not None
            return early
        now = self.clock.now_ms()
        items = self.codec.decode(rec.input_ref)
        if not isinstance(items, list):
            err = {
                "node": node.id,
                "type": "TypeError",
                "message": f"map {node.id!r} needs a list from the previous step, got {type(items).__name__}",
            }
            self._fail(
                wf, msg, node.id, err, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), owner=rec.owner
            )
            return Outcome(OutcomeKind.FAILED, error=err)
        for i, item in enumerate(items):
            ref = self.codec.encode(item, scope=f"{msg.run_id}/{node.id}/items")
            self.store.put_node_if_absent(NodeInit(msg.run_id, node_key(node.id, i), node.id, ref, index=i), now)
        self.store.finish(
            msg.run_id,
            node.id,
            NodeChanges(
                NodeStatus.FANNED_OUT,
                now,
                items_total=len(items),
                invocation=Invocation(now, self.clock.now_ms(), "fanned_out"),
            ),
            owner=rec.owner,
        )
        if not items:
            return self._join(wf, node, msg)
        window = node.max_concurrency or len(items)
        first = tuple(self._activation(msg, node.id, i) for i in range(min(window, len(items))))
        return Outcome(OutcomeKind.FANOUT, next=first, items=len(items))

    def _after_item(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
        """An item is done: start the next item of its window lane; the lane's tail tries the join."""
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
        return (
            Outcome(OutcomeKind.DONE, next=joined.next)
            if joined.kind is OutcomeKind.DONE
            else Outcome(OutcomeKind.DONE)
        )

    def _join(self, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        parent = self.store.get_node(msg.run_id, node.id)
        if parent is None:
            return Outcome(OutcomeKind.DROPPED, detail="map node missing")
        if parent.status is NodeStatus.SUCCEEDED:
            return self._served_from_checkpoint(wf, node, msg.with_(index=None), parent)
        items = self.store.list_nodes(msg.run_id, f"{node.id}#")
        if any(i.status is NodeStatus.FAILED for i in items):
            return Outcome(OutcomeKind.FAILED, error=parent.error)
        if (
            parent.status is not NodeStatus.FANNED_OUT
            or len(items) < (parent.items_total or 0)
            or any(i.status is not NodeStatus.SUCCEEDED for i in items)
        ):
            return Outcome(OutcomeKind.DROPPED, detail="items still running")
        now = self.clock.now_ms()
        output = [self.codec.decode(i.output_ref) for i in items]
        out_ref = self.codec.encode(output, scope=f"{msg.run_id}/{node.id}")
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
            wf, node, msg.with_(index=None), node.id, changes, out_ref, owner=None, expect=(NodeStatus.FANNED_OUT,)
        )
        if out.kind is OutcomeKind.DROPPED:  # a concurrent join won: serve its checkpoint
            done = self.store.get_node(msg.run_id, node.id)
            if done is not None and done.status is NodeStatus.SUCCEEDED:
                return Outcome(OutcomeKind.DONE)
        return out

    # -- sleep and event waits -----------------------------------------------------------------
    def _sleep(self, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        rec = self.store.get_node(msg.run_id, node.id)
        now = self.clock.now_ms()
        if rec is None:
            return Outcome(OutcomeKind.DROPPED, detail="sleep node missing")
        if rec.status is NodeStatus.PENDING:
            wake = now + node.seconds * 1000
            res = self.store.finish(
                msg.run_id,
                node.id,
                NodeChanges(NodeStatus.SLEEPING, now, wake_at_ms=wake),
                expect=(NodeStatus.PENDING,),
            )
            rec = self.store.get_node(msg.run_id, node.id) if res is not FinishResult.OK else None
            if rec is None:
                return Outcome(OutcomeKind.WAIT, wake_at_ms=wake)
        if rec.status is NodeStatus.SUCCEEDED:
            return self._served_from_checkpoint(wf, node, msg, rec)
        if rec.status is not NodeStatus.SLEEPING or rec.wake_at_ms is None:
            return Outcome(OutcomeKind.DROPPED, detail=f"sleep node is {rec.status.value}")
        if now < rec.wake_at_ms:
            return Outcome(OutcomeKind.WAIT, wake_at_ms=rec.wake_at_ms)
        assert rec.input_ref is not None
        changes = NodeChanges(
            NodeStatus.SUCCEEDED,
            now,
            output_ref=rec.input_ref,
            ended=True,
            invocation=Invocation(rec.created_ms, now, "slept"),
        )
        return self._commit(wf, node, msg, node.id, changes, rec.input_ref, owner=None, expect=(NodeStatus.SLEEPING,))

    def _wait(self, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        rec = self.store.get_node(msg.run_id, node.id)
        now = self.clock.now_ms()
        if rec is None:
            return Outcome(OutcomeKind.DROPPED, detail="wait node missing")
        if rec.status is NodeStatus.SUCCEEDED:
            return self._served_from_checkpoint(wf, node, msg, rec)
        if msg.action in ("timeout", "expire"):
            if rec.status is not NodeStatus.WAITING or rec.wake_at_ms is None:
                return Outcome(OutcomeKind.DROPPED, detail=f"wait node is {rec.status.value}")
            if msg.action == "timeout" and now < rec.wake_at_ms:
                return Outcome(OutcomeKind.SUSPENDED, wake_at_ms=rec.wake_at_ms)
            err = {
                "node": node.id,
                "type": "EventTimeout",
                "message": f"event {node.event!r} not received within {node.seconds} s",
            }
            self._fail(
                wf,
                msg,
                node.id,
                err,
                NodeChanges(
                    NodeStatus.FAILED,
                    now,
                    error=err,
                    ended=True,
                    invocation=Invocation(rec.created_ms, now, "timed_out"),
                ),
                expect=(NodeStatus.WAITING,),
            )
            return Outcome(OutcomeKind.FAILED, error=err)
        if rec.status is NodeStatus.PENDING:
            deadline = now + node.seconds * 1000
            run = RunChanges(now, status=RunStatus.WAITING, current=node.id)
            self.store.finish(
                msg.run_id,
                node.id,
                NodeChanges(NodeStatus.WAITING, now, wake_at_ms=deadline, event_name=node.event, task_token=msg.token),
                expect=(NodeStatus.PENDING,),
                run=run,
            )
            rec = self.store.get_node(msg.run_id, node.id)
            if rec is None:
                return Outcome(OutcomeKind.DROPPED)
        elif rec.status is NodeStatus.WAITING and msg.token and msg.token != rec.task_token:
            # Step Functions re-ran the wait task (a new token): remember the live one.
            self.store.finish(
                msg.run_id,
                node.id,
                NodeChanges(NodeStatus.WAITING, now, task_token=msg.token),
                expect=(NodeStatus.WAITING,),
            )
            rec = self.store.get_node(msg.run_id, node.id)
            if rec is None:
                return Outcome(OutcomeKind.DROPPED)
        if rec.status is not NodeStatus.WAITING:
            return Outcome(OutcomeKind.DROPPED, detail=f"wait node is {rec.status.value}")
        assert node.event is not None
        buffered = self.store.get_event(msg.run_id, node.event)
        if buffered is not None:
            run_rec = self.get_run(msg.run_id)
            self._complete_wait(wf, run_rec, rec, buffered)
        return Outcome(OutcomeKind.SUSPENDED, wake_at_ms=rec.wake_at_ms)

    def _complete_wait(self, wf: Workflow, run: RunRecord, rec: NodeRecord, payload_ref: str) -> bool:
        node = wf.node(rec.node)
        now = self.clock.now_ms()
        msg = Activation(run.run_id, run.workflow, run.version, node.id, token=rec.task_token)
        changes = NodeChanges(
            NodeStatus.SUCCEEDED,
            now,
            output_ref=payload_ref,
            ended=True,
            invocation=Invocation(rec.created_ms, now, "event"),
        )
        out = self._commit(wf, node, msg, node.id, changes, payload_ref, owner=None, expect=(NodeStatus.WAITING,))
        if out.kind is not OutcomeKind.DONE:
            return False
        self.handoff.resume_wait(msg, out.next[0] if out.next else None)
        return True
