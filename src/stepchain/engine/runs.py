"""The run service: the API-side lifecycle of runs (start, events, cancel, redrive, fail, list,
describe). The API (:mod:`stepchain.api.app`), the sweeper and the test harnesses talk to it
instead of reaching into the store, the codec and the registry.

Each call names its commit point (the write after which the sweeper finishes the call if its
caller dies) with a probe boundary (``api_*``); see ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stepchain.clock import Clock
from stepchain.define.state import check_event
from stepchain.define.workflow import Registry, Workflow
from stepchain.engine import budget
from stepchain.engine.events import event_target
from stepchain.engine.fork import fork
from stepchain.engine.lifecycle import finish_cancel, run_ended
from stepchain.engine.nodes import handler_for
from stepchain.engine.nodes.views import run_view
from stepchain.engine.nodes.wait import complete_wait
from stepchain.engine.routing import event_key, next_activation, source_of, split_event_key
from stepchain.engine.shared import key_of, new_run_id
from stepchain.engine.worker import Worker
from stepchain.exceptions import InvalidRunState, StepNotFound
from stepchain.handoff.base import RunLifecycle
from stepchain.handoff.messages import Activation, Outcome
from stepchain.observe.ledger import RunView
from stepchain.probe import Probe
from stepchain.store.base import ACTIVE_RUN, CheckpointStore, NewRun, NodeChanges, NodeInit, RunChanges, RunPage
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus, node_key, parse_node_key


class RunService:
    """The run lifecycle on top of a :class:`~stepchain.engine.worker.Worker`'s store, codec,
    registry, clock, probe and transport (its run-lifecycle capability)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    # read through the worker: a part replaced there (a test swapping the registry) is seen here
    @property
    def registry(self) -> Registry:
        return self.worker.registry

    @property
    def store(self) -> CheckpointStore:
        return self.worker.store

    @property
    def codec(self) -> PayloadCodec:
        return self.worker.codec

    @property
    def clock(self) -> Clock:
        return self.worker.clock

    @property
    def probe(self) -> Probe:
        return self.worker.probe

    @property
    def lifecycle(self) -> RunLifecycle:
        return self.worker.lifecycle

    def start(
        self,
        workflow: str,
        input: Any,
        *,
        idempotency_key: str | None = None,
        owner: str | None = None,
        budget_usd: float | None = None,
    ) -> tuple[RunRecord, bool]:
        """Start a run (or, with a known idempotency key and the same input, return that run).

        ``budget_usd`` overrides the workflow's ``budget_usd`` for this run (stepchain.engine.budget).

        ``owner`` (the caller's identity) is recorded on the run and scopes ``idempotency_key``: the
        same key from another owner starts that owner's own run."""
        wf = self.registry.get(workflow)
        extra = budget.start_fields(wf, budget_usd)
        day = budget.reserve(self.worker, wf, owner, extra)  # a caller's daily budget: before the run exists
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
                owner=owner,
                extra=extra,
            )
        )
        if not created and day is not None and owner is not None:  # a retried start: give it back
            self.store.reserve_caller_day(owner, day, -extra["budget_nano"], 0, now)
        if not created:
            # A retried start: re-issue the first activation only if it may have been lost.
            node = self.store.get_node(run.run_id, first.id)
            if not (run.status is RunStatus.RUNNING and node is not None and node.status is NodeStatus.PENDING):
                return run, False
        # Dying here leaves the run RUNNING with its first node PENDING: the sweeper re-issues it.
        self.probe.reached("api_start", run.run_id, first.id)
        self.lifecycle.start(run, Activation(run.run_id, run.workflow, run.version, first.id))
        return run, created

    def get_run(self, run_id: str) -> RunRecord:
        return self.worker.get_run(run_id)

    def raise_budget(self, run_id: str, budget_usd: float) -> RunRecord:
        """Set a budgeted run's budget (``POST /runs/{id}/budget``); a run paused in its ``budget``
        wait is re-activated at once on a queue transport (Step Functions: at its next re-check)."""
        run = self.get_run(run_id)
        if not budget.set_budget(self.worker, run, budget_usd):
            raise InvalidRunState(f"run {run_id!r} is {run.status.value} or has no budget")
        if run.status is RunStatus.WAITING and run.current:  # a duplicate activation is harmless
            node_id, iteration, index = parse_node_key(run.current)
            act = Activation(run.run_id, run.workflow, run.version, node_id, iteration=iteration, index=index)
            self.worker.handoff.dispatch([act])  # Step Functions: a no-op, its re-check comes
        return self.get_run(run_id)

    def approve_budget(self, run_id: str) -> RunRecord:
        """Approve the step a run's budget holds (``POST /runs/{id}/events/budget``): its budget
        becomes what it spent plus that step's estimate, so that step (and only it) may run."""
        run = self.get_run(run_id)
        if run.paused != "budget" or run.status is not RunStatus.WAITING or not run.current:
            raise InvalidRunState(f"run {run_id!r} is not waiting in its budget wait")
        node = self.registry.get(run.workflow, run.version).node(parse_node_key(run.current)[0])
        usd = max(run.budget_nano or 0, run.spent_nano + budget.to_nano(node.estimate_usd)) / budget.NANO
        return self.raise_budget(run_id, usd)

    def output_of(self, run_id: str, step: str) -> Any:
        rec = self.store.get_node(run_id, step)
        if rec is None or rec.status is not NodeStatus.SUCCEEDED:
            raise StepNotFound(f"run {run_id!r} has no completed step {step!r}")
        return self.codec.decode(rec.output_ref)

    def deliver_event(self, run_id: str, name: str, payload: Any, *, iteration: int | None = None) -> str:
        """Deliver an event. Returns ``delivered`` (a wait consumed it) or ``buffered`` (kept for later).

        ``iteration``: the loop iteration whose wait the event is for; idempotent per (event, iteration).
        Without it, a wait inside a loop takes the event only in the run's first iteration: see
        :mod:`stepchain.engine.events` (:class:`~stepchain.exceptions.EventIterationError`, 409)."""
        run = self.get_run(run_id)
        if run.status.finished:
            raise InvalidRunState(f"run {run_id} is {run.status.value}; it takes no events")
        wf = self.worker.pinned(run)
        node = wf.wait_node(name)
        if node.into_state and wf.state is not None:
            check_event(wf.state, payload)  # a payload that cannot merge into the state: 400, not stored
        it = event_target(self.store, wf, run_id, node, iteration)  # raises EventIterationError
        key, stored = node_key(node.id, None, it), event_key(name, it)
        ref = self.codec.encode(payload, scope=f"{run_id}/events/{stored}")
        if not self.store.put_event(run_id, stored, ref, self.clock.now_ms()):
            if self.store.get_event(run_id, stored) != ref:
                raise InvalidRunState(f"event {name!r} was already delivered to run {run_id} with another payload")
            # The same event again (a client retry): make sure the run moved on, then answer as before.
            return self._redeliver_event(wf, run, key, ref)
        self.probe.reached("api_event", run_id, key)  # stored, the wait not completed: the sweeper does it
        # The wait may have started meanwhile: whoever finds both the event and WAITING completes it.
        rec = self.store.get_node(run_id, key)
        if (
            rec is not None
            and rec.status is NodeStatus.WAITING
            and complete_wait(self.worker, wf, run, rec, ref, api=True)
        ):
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
        base, it = split_event_key(name)  # in a loop the stored name carries the iteration
        return self._redeliver_event(wf, run, node_key(wf.wait_node(base).id, None, it), ref)

    def _redeliver_event(self, wf: Workflow, run: RunRecord, key: str, ref: str) -> str:
        rec = self.store.get_node(run.run_id, key)
        if rec is not None and rec.status is NodeStatus.WAITING and complete_wait(self.worker, wf, run, rec, ref):
            return "delivered"
        if rec is not None and rec.status is NodeStatus.SUCCEEDED:
            # The wait completed but the handoff may have died with its caller: re-issue it.
            msg = Activation(
                run.run_id, run.workflow, run.version, rec.node, token=rec.task_token, iteration=rec.iteration
            )
            succ = next_activation(wf, wf.node(rec.node), msg, rec.route, rec.output_ref, rec.state_ref)
            succ_rec = None if succ is None else self.store.get_node(run.run_id, key_of(succ))
            if succ is not None and (succ_rec is None or succ_rec.status is NodeStatus.PENDING):
                now = self.clock.now_ms()  # the caller may have died before the run left WAITING
                changes = RunChanges(now, status=RunStatus.RUNNING, current=key_of(succ))
                self.store.update_run(run.run_id, changes, expect=(RunStatus.WAITING,))
                self.lifecycle.resume_wait(msg, succ)
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
        run_ended(self.worker, run)  # a child run cancelled through the API fails its parent node
        return run

    def finish_cancel(self, run: RunRecord, *, api: bool = False) -> None:
        """The rest of a cancel, once the run is CANCELLED: tombstones, stop the transport, and
        leave the sweeper's index. Idempotent (the sweeper calls it for a cancel that died)."""
        finish_cancel(self.worker, run, api=api)

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
        nodes = {r.key: r for r in self.store.list_nodes(run_id)}
        failed = [r for r in nodes.values() if r.status is NodeStatus.FAILED]
        if not failed:
            raise InvalidRunState(f"run {run_id} has no failed node to redrive")
        order = [n.id for n in wf.nodes]
        top_rec = min(failed, key=lambda r: (r.iteration, order.index(r.node)))
        top = top_rec.node if top_rec.iteration == 0 else top_rec.key
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
                    add_redrive=True,
                    input_ref=new_input,
                    new_generation=not (new_input is None if keep_progress is None else keep_progress)
                    or handler_for(wf.node(rec.node)).children_per_generation,  # a call/parallel: new children
                ),
                expect=(NodeStatus.FAILED,),
            )
            src = None if rec.index is not None or rec.iteration == 0 else source_of(wf, rec.key, nodes)
            msgs.append(
                Activation(run_id, run.workflow, run.version, rec.node, rec.index, iteration=rec.iteration, src=src)
            )
        self.probe.reached("api_redrive", run_id, top)  # nodes PENDING, no activation: the sweeper re-issues
        self.lifecycle.redrive(updated, msgs, top)
        return updated

    def fork(self, run_id: str, node: str, **kw: Any) -> tuple[RunRecord, bool]:
        """A new run of the same version starting at ``node``, the source's checkpoints before it
        copied by reference: :func:`stepchain.engine.fork.fork` (``iteration``, ``input`` with
        ``replace_input``, ``state``: fields to set, ``idempotency_key``, ``owner``)."""
        return fork(self.worker, run_id, node, **kw)

    def fail_node(self, run_id: str, node: str, err: dict[str, str]) -> Outcome:
        """A transport gave up on ``node``: fail the node and the run (see :meth:`Worker.fail_node`)."""
        return self.worker.fail_node(run_id, node, err)

    def list_runs(
        self,
        workflow: str,
        *,
        status: RunStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> RunPage:
        """A page of the workflow's runs, newest first (``cursor``: the page's store cursor); with
        ``owner``, only the runs that caller started."""
        return self.store.list_runs(workflow, status=status, limit=limit, cursor=cursor, owner=owner)

    def describe(self, run_id: str) -> RunView:
        """The run with its nodes, ledger and timeline."""
        return self.describe_run(self.get_run(run_id))

    def describe_run(self, run: RunRecord) -> RunView:
        """:meth:`describe` for a run already read (its child runs' costs rolled up into it)."""
        return run_view(self.store, self.registry, run)

    def node(self, run_id: str, key: str) -> NodeRecord | None:
        """The run's node (or map item) record under ``key``, if it has started."""
        return self.store.get_node(run_id, key)

    def node_history(self, run_id: str, rec: NodeRecord) -> tuple[Invocation, ...]:
        """Every invocation of the node ``rec``."""
        return self.store.node_history(run_id, rec)
