"""The worker core: turns one activation into durable progress.

``Worker.process`` is what every worker (a Lambda behind SQS or Step Functions, or the in-process
harness) calls for one message, through :func:`stepchain.runtimes.serve.serve`. On the happy path a step
costs two store calls: claim the node (one conditional write that returns the record) and
checkpoint the output (one conditional write); its input comes with the activation (``msg.input``,
the predecessor's output reference), read from the node it names (``msg.src``) only when the
activation does not carry it (a sweeper re-issue, a redrive). Then it tells the caller
what should happen next (an :class:`Outcome`); the transport carries it out. See ARCHITECTURE.md.

This module holds the path every node kind shares (claim, lease and takeover, input, commit,
served-from-checkpoint, failing); what a kind does is in :mod:`stepchain.engine.nodes`, looked up
by the node's kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from stepchain.clock import Clock, SystemClock
from stepchain.define.context import CostMeter
from stepchain.define.limits import RunLimits
from stepchain.define.nodes import Node
from stepchain.define.workflow import Registry, Workflow
from stepchain.engine import fusion, heartbeat
from stepchain.engine.lifecycle import cancel_runs, run_ended
from stepchain.engine.nodes import handler_for
from stepchain.engine.nodes.scope import ActivationScope
from stepchain.engine.routing import next_activation
from stepchain.engine.shared import LEASE_GRACE_MS, key_of
from stepchain.exceptions import RunNotFound, VersionNotRegistered
from stepchain.handoff.base import Handoff, RunLifecycle, lifecycle_of
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike, logger
from stepchain.probe import NoProbe, Probe
from stepchain.store.base import ACTIVE_RUN, CheckpointStore, ClaimKind, FinishResult, NodeChanges, NodeInit, RunChanges
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus, node_key


class Worker:
    """The shared worker path; a node kind's module does the rest (see :mod:`stepchain.engine.nodes`)."""

    def __init__(
        self,
        registry: Registry,
        store: CheckpointStore,
        codec: PayloadCodec,
        handoff: Handoff,
        *,
        clock: Clock | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.codec = codec
        self.handoff = handoff
        self.clock = clock or SystemClock()
        self.probe: Probe = probe or NoProbe()
        self.limits = RunLimits.from_env()  # per-run limits (stepchain.define.limits); tests may replace it
        #: the operator's cap on the steps one invocation runs (STEPCHAIN_FUSE_MAX_STEPS; None: each
        #: workflow's ``Workflow(fuse=...)`` decides, stepchain.engine.fusion.max_steps); tests may replace it
        self.fuse_max_steps: int | None = fusion.max_steps_from_env()

    @property
    def lifecycle(self) -> RunLifecycle:
        """The transport's run lifecycle (its own, or the queue default)."""
        return lifecycle_of(self.handoff)

    def get_run(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r}")
        return run

    def process(self, msg: Activation, lambda_context: LambdaContextLike) -> Outcome:
        """Make durable progress on one activation. Safe to call any number of times.

        A message for a workflow version this deployment does not register fails the run (it is
        not retried: no redelivery could ever succeed here)."""
        chain = fusion.Chain(
            lambda_context, fusion.chain_lease(self.clock.now_ms(), lambda_context), self.fuse_max_steps
        )
        with fusion.holding(chain):
            outcome, at = self._activate(msg, lambda_context), msg
            # a fused chain (or the walk of one met again): the next step runs in this invocation
            while outcome.inline and len(outcome.next) == 1:
                nxt = outcome.next[0]
                if outcome.inline == "fused":
                    chain.steps += 1
                    chain.implied = key_of(nxt)
                elif not fusion.fits(chain, self.registry.get(nxt.workflow, nxt.version).node(nxt.node)):
                    break  # no time left to run it here: its activation is handed off
                outcome, at = self._activate(nxt, lambda_context), nxt
                chain.implied = None
        return outcome if at is msg else replace(outcome, at=at)

    def _activate(self, msg: Activation, lambda_context: LambdaContextLike) -> Outcome:
        try:
            wf = self.registry.get(msg.workflow, msg.version)
        except VersionNotRegistered as exc:
            return self.fail_unregistered(msg.run_id, key_of(msg), exc)
        node = wf.node(msg.node)
        return handler_for(node).activate(ActivationScope(self, wf, node, msg, lambda_context))

    def claim(
        self, wf: Workflow, node: Node, msg: Activation, key: str, lctx: LambdaContextLike
    ) -> NodeRecord | Outcome:
        """Claim the node, taking it over if its worker died. Returns the record, or the outcome
        to report instead (the node is done, busy, gone ...)."""
        now = self.clock.now_ms()
        owner = f"{lctx.aws_request_id}/{uuid.uuid4().hex[:8]}"
        chain = fusion.current()
        if chain is not None and chain.implied == key:  # its predecessor's checkpoint claimed it (no write)
            self.probe.reached("after_claim", msg.run_id, key)
            return NodeRecord(
                msg.run_id,
                key,
                node.id,
                msg.index,
                NodeStatus.RUNNING,
                invocations=1,
                owner=owner + fusion.IMPLIED,
                lease_until_ms=chain.lease_until_ms,
                current_started_ms=now,
                created_ms=now,
                started_ms=now,
                iteration=msg.iteration,
                fused=True,
            )
        keeper = heartbeat.active()  # an SQS heartbeat: the lease ends before the message returns
        short = keeper.lease_until(now) if keeper is not None else None
        lease = short if short is not None else now + int(lctx.get_remaining_time_in_millis()) + LEASE_GRACE_MS
        res = self.store.claim(
            msg.run_id, key, node=node.id, index=msg.index, owner=owner, now_ms=now, lease_until_ms=lease
        )
        rec = res.record
        if res.kind is ClaimKind.BUSY and rec is not None and rec.status is NodeStatus.RETRYING:
            # an early duplicate or re-issue: the retry is not due yet. Its own wake-up is already on
            # its way (sent with the RETRYING write; the sweeper re-issues a lost one), so send
            # nothing: BUSY (a WAIT here would send one more message per early copy: under duplicate
            # delivery their number doubles each round). Step Functions waits again until wake_at.
            return Outcome(OutcomeKind.BUSY, wake_at_ms=rec.wake_at_ms or now)
        if res.kind is ClaimKind.BUSY and rec is not None and rec.status is NodeStatus.RUNNING:
            if rec.lease_until_ms >= now:
                return Outcome(OutcomeKind.BUSY, wake_at_ms=rec.lease_until_ms + 1)
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
                self.fail(msg, key, err, changes, owner=rec.owner)
                return Outcome(OutcomeKind.FAILED, error=err)
            res = self.store.takeover(msg.run_id, key, stale=rec, owner=owner, now_ms=now, lease_until_ms=lease)
            if res.kind is ClaimKind.CLAIMED:
                self.store.add_crash_event(msg.run_id, now, key, "takeover")
                self.probe.reached("takeover", msg.run_id, key)
                logger.warning("took over a node whose worker died", extra={"run_id": msg.run_id, "node": key})
            rec = res.record
        if res.kind is ClaimKind.CLAIMED and rec is not None:
            if keeper is not None and short is not None:
                keeper.hold(msg.run_id, key, owner)  # its beats extend this lease from now on
            self.probe.reached("after_claim", msg.run_id, key)
            return rec
        if res.kind is ClaimKind.DONE and rec is not None:
            return self.served_from_checkpoint(wf, node, msg, rec)
        if res.kind is ClaimKind.GONE and rec is not None and rec.status is NodeStatus.FAILED:
            # met again: the worker that failed the run may have died before its run.failed event and
            # its parent's notification (each is dropped or joined once when it came already)
            run = self.store.get_run(msg.run_id)
            if run is not None and run.status is RunStatus.FAILED:
                run_ended(self, run)
        if res.kind is ClaimKind.BUSY and rec is not None:
            busy = handler_for(node).on_busy(
                ActivationScope(self, wf, node, msg, lctx), rec
            )  # a map fanned out, a sleep, a wait
            if busy is not None:
                return busy
        status = rec.status.value if rec else "missing"
        return Outcome(OutcomeKind.DROPPED, detail=f"node {key} is {status}")

    def input_of(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> str | None:
        """The node's input reference: its own (first node, map item, redrive), the one its activation
        carries (no read), or the output of the node it names (``src``) or of its chain predecessor."""
        if rec.input_ref is not None:
            return rec.input_ref
        if msg.input is not None:
            return msg.input
        prev_rec = self._source_record(wf, node, msg)
        if prev_rec is None or prev_rec.status is not NodeStatus.SUCCEEDED:
            return None
        return prev_rec.output_ref

    def state_of(self, wf: Workflow, node: Node, msg: Activation, own: NodeRecord | None = None) -> str | None:
        """The durable state reference the node starts from: the one its activation carries (no
        read), else the one stored with the node it names (``src``) or its chain predecessor; with
        neither (the first node), the one on the node's ``own`` record (a child run's first node
        holds the state its parent shared, ``share_state``). None: the model's defaults."""
        if wf.state is None or msg.index is not None:
            return None
        if msg.state is not None:
            return msg.state
        prev_rec = self._source_record(wf, node, msg)
        if prev_rec is None:
            return None if own is None else own.state_ref
        return prev_rec.state_ref

    def _source_record(self, wf: Workflow, node: Node, msg: Activation) -> NodeRecord | None:
        """The record of the node whose output (and state) this one starts from: the one the activation
        names (``src``: a routed-from node) or the chain predecessor in its iteration (one read)."""
        src = msg.src
        if src is None:
            prev = wf.prev_of(node.id)
            if prev is None:
                return None
            src = node_key(prev.id, None, msg.iteration)
        return self.store.get_node(msg.run_id, src)

    def release(self, msg: Activation, key: str, rec: NodeRecord, why: str) -> Outcome:
        """Undo a claim made by a message that came too early (its predecessor is not done)."""
        self.store.finish(msg.run_id, key, NodeChanges(NodeStatus.PENDING, self.clock.now_ms()), owner=rec.owner)
        return Outcome(OutcomeKind.DROPPED, detail=why)

    def served_from_checkpoint(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
        """A completed node met again: never re-run it; re-issue its handoff if that may have been lost.

        Queues redeliver the message of a worker that died only after its visibility timeout
        (>= the lease, > LEASE_GRACE_MS); a duplicate delivery comes at once. So only a late
        redelivery re-issues the handoff (and counts as a crash): an early duplicate re-issuing it
        would double the traffic at every step.
        """
        self.store.add_checkpoint_hit(msg.run_id, rec.key)
        self.probe.reached("checkpoint_hit", msg.run_id, rec.key)
        now = self.clock.now_ms()
        if rec.chain_until_ms is not None and msg.index is None:  # its successor ran (runs) inline
            walked = fusion.walk(self, wf, node, msg, rec, now)
            if walked is not None:
                return walked
        late = rec.ended_ms is None or now - rec.ended_ms > LEASE_GRACE_MS
        keeper = heartbeat.active()  # with an SQS heartbeat a redelivery may come sooner: ask SQS
        late = late or (keeper is not None and keeper.redelivered)
        nxt = (
            None if msg.index is not None else next_activation(wf, node, msg, rec.route, rec.output_ref, rec.state_ref)
        )
        if not late:
            if nxt is None and msg.index is None:
                self.finish_run(msg, rec.output_ref)
            return Outcome(OutcomeKind.DONE, detail="duplicate", then=nxt)
        handler, scope = handler_for(node), ActivationScope(self, wf, node, msg)
        if handler.owns_successor(scope):  # a map item: the map starts the next item or joins
            self.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
            return handler.after_checkpoint(scope)
        if nxt is None:
            # the worker may have died right before marking the run SUCCEEDED
            if self.finish_run(msg, rec.output_ref):
                self.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
            return Outcome(OutcomeKind.DONE, detail="checkpoint")
        succ_rec = self.store.get_node(msg.run_id, key_of(nxt))
        if succ_rec is None or succ_rec.status is NodeStatus.PENDING:
            self.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
            return Outcome(OutcomeKind.DONE, next=(nxt,), detail="checkpoint", then=nxt)
        return Outcome(OutcomeKind.DONE, detail="checkpoint", then=nxt)

    def ledger(
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

    def commit(
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
        """Checkpoint the node's output (one conditional write) and name what comes next. With a
        durable state, a node that did not change it passes on the state it started from."""
        if wf.state is not None and changes.state_ref is None and msg.index is None:
            held = changes.prior.state_ref if changes.prior is not None else None
            changes = replace(changes, state_ref=held if held is not None else self.state_of(wf, node, msg))
        handler, scope = handler_for(node), ActivationScope(self, wf, node, msg)
        owned = handler.owns_successor(scope)  # a map item: the map starts the next item or joins
        nxt = None if owned else next_activation(wf, node, msg, changes.route, changes.output_ref, changes.state_ref)
        chain = fusion.current()
        fused = nxt is not None and changes.status is NodeStatus.SUCCEEDED and fusion.fusable(wf, node, msg, nxt, chain)
        if fused and chain is not None:  # this checkpoint also claims the successor for this invocation
            changes = replace(changes, chain_until_ms=chain.lease_until_ms)
        if self.store.finish(msg.run_id, key, changes, owner=owner, expect=expect) is not FinishResult.OK:
            return Outcome(OutcomeKind.DROPPED, detail="lease lost")
        self.probe.reached("after_checkpoint", msg.run_id, key)
        if owned:
            return handler.after_checkpoint(scope)
        if nxt is None:
            self.finish_run(msg, changes.output_ref)
            return Outcome(OutcomeKind.DONE)
        return Outcome(OutcomeKind.DONE, next=(nxt,), then=nxt, inline="fused" if fused else "")

    def finish_run(self, msg: Activation, output_ref: str | None) -> bool:
        """Mark the run SUCCEEDED; False when it was no longer active (already done, cancelled)."""
        now = self.clock.now_ms()
        changes = RunChanges(now, status=RunStatus.SUCCEEDED, output_ref=output_ref, current="", ended=True)
        run = self.store.update_run(msg.run_id, changes, expect=ACTIVE_RUN)
        # a child run notifies its parent; met again (the worker may have died before that), again
        ended = run or self.store.get_run(msg.run_id)
        if ended is not None and ended.status is RunStatus.SUCCEEDED:
            run_ended(self, ended)
        return run is not None

    def fail(
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
            failed = self.store.update_run(msg.run_id, run, expect=ACTIVE_RUN)
            if failed is not None:
                run_ended(self, failed)  # a child run notifies its parent

    def fail_node(self, run_id: str, node: str, err: dict[str, str]) -> Outcome:
        """A transport gave up on ``node`` (e.g. Step Functions ran out of retries after Lambda
        timeouts): fail the node and the run. Idempotent; a no-op on a finished run. The node is
        marked FAILED even if it was never claimed, so the run can be redriven from it."""
        now = self.clock.now_ms()
        run = self.store.get_run(run_id)
        if run is None or run.status.finished:
            if run is not None and run.status is RunStatus.FAILED:
                run_ended(self, run)  # met again: the worker that failed it may have died before this
            return Outcome(OutcomeKind.FAILED, error=run.error if run else err)
        rec = self.store.get_node(run_id, node)
        if rec is None:
            self.store.put_node_if_absent(NodeInit(run_id, node, node, None, status=NodeStatus.FAILED), now)
        elif not rec.status.finished:
            self.store.finish(
                run_id, node, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), expect=(rec.status,)
            )
        failed = self.store.update_run(
            run_id, RunChanges(now, status=RunStatus.FAILED, error=err, ended=True), expect=ACTIVE_RUN
        )
        if failed is not None:
            run_ended(self, failed)  # a child run notifies its parent
        logger.warning("run failed by its transport", extra={"run_id": run_id, "node": node, "error": err})
        return Outcome(OutcomeKind.FAILED, error=err)

    def cancel_runs(self, run_ids: Sequence[str]) -> None:
        """Cancel these (child) runs without notifying their parent (:mod:`stepchain.engine.lifecycle`)."""
        cancel_runs(self, run_ids)

    def pinned(self, run: RunRecord) -> Workflow:
        """The run's workflow at its pinned version. When this deployment does not register that
        version, nothing can advance the run: fail it with an error naming the version, and raise."""
        try:
            return self.registry.get(run.workflow, run.version)
        except VersionNotRegistered as exc:
            self.fail_unregistered(run.run_id, run.current, exc)
            self.lifecycle.cancel(run)  # Step Functions: stop its execution (it waits for a callback)
            raise

    def fail_unregistered(self, run_id: str, key: str | None, exc: VersionNotRegistered) -> Outcome:
        err = {"node": key or "", "type": "VersionNotRegistered", "message": f"{exc}; register it again and redrive"}
        logger.error("run pinned to a workflow version this deployment does not register", extra={"error": err})
        if key:
            return self.fail_node(run_id, key, err)
        self.store.update_run(
            run_id, RunChanges(self.clock.now_ms(), status=RunStatus.FAILED, error=err, ended=True), expect=ACTIVE_RUN
        )
        return Outcome(OutcomeKind.FAILED, error=err)
