"""The recovery sweeper: no run depends on a client retry (or a lost message) to move on.

Every lifecycle call and every worker ends its durable writes with a handoff (a message, an
execution, a SendTaskSuccess). If the process dies between the two, the durable state says the
run is active but nothing will ever deliver its next activation. A scheduled function (every
minute, see template.yaml) runs :meth:`Sweeper.sweep`, which finds such runs and re-issues the
activation the dead process owed them; activations are idempotent (the node's conditional claim
turns a double into a no-op), so re-issuing one that was not lost costs a duplicate, nothing more.

What it looks at, per sweep: one query of the store's sparse active-run index
(:meth:`~stepchain.store.base.CheckpointStore.list_active_runs`: one small item per active run,
never a finished one), then, for each active run whose RUN item is older than the grace period,
one query of its node items (``N#...``), plus one read of a buffered event for a run waiting on
one. Only what it then finds stuck costs more (a message, a DescribeExecution, a conditional
write). It never reads ``ctx.each``/``ctx.once`` items or payloads.

What "stuck" means (``grace`` = :attr:`SweepPolicy.grace_s`, after the later of the run's last
update and the node's own time):

=============================================  ===============================================
found                                          done
=============================================  ===============================================
node PENDING / CONTINUING since ``grace``      its activation is re-issued (a half-done start,
(a map item only if it is the head of its      redrive, release or continuation)
lane)
RUNNING node whose lease ended ``grace`` ago   its activation is re-issued (the claim takes over)
SLEEPING / RETRYING ``grace`` past its wake    its activation is re-issued
WAITING ``grace`` past its deadline            its deadline check (``timeout``) is re-issued
WAITING with the event stored                  the event's delivery is finished
call/parallel WAITING, its children ended      the node is joined (:func:`~stepchain.engine.
``grace`` ago (or SUCCEEDED, successor never   lifecycle.rejoin`: a ``join`` activation, or on Step
created): the child's notification was lost    Functions the join and its task token completed)
call/parallel WAITING, a child never created   its activation is re-issued (it starts the child)
SUCCEEDED ``grace`` ago, successor never       the node's activation is re-issued: a late
created (or the run never finished)            redelivery is served from the checkpoint and
                                               re-issues the successor; a wait node's event
                                               delivery is finished (run status, callback)
map items all SUCCEEDED, map not joined        a lane-end item's activation (it joins)
a FAILED node in an active run                 the run is failed with that node's error (a
                                               failure or a redrive that died half-way; the
                                               run can be redriven again)
CANCELLED run still in the index               the cancel is finished (tombstones, stop)
unknown workflow/version, or ``max_reissues``  the run is failed with the reason recorded
re-issues of one node without progress
=============================================  ===============================================

Arithmetic: a healthy run is never touched because every deadline is ``grace`` (default 300 s)
past the moment its own handoff must have happened, and a handoff (message to claim, or a Step
Functions transition) takes seconds; a queue's own redelivery of a dead worker's message comes at
its visibility timeout (function timeout + 2 s, so at the lease's end) and is usually first. A
stuck run moves at most ``grace + interval`` (300 s + 60 s) after the moment it should have.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from stepchain.define.context import logger
from stepchain.define.workflow import Workflow
from stepchain.engine import Engine
from stepchain.engine.lifecycle import rejoin
from stepchain.engine.nodes import handler_for
from stepchain.engine.nodes.recovery import Recovery, RecoveryView
from stepchain.engine.routing import source_of, split_event_key
from stepchain.engine.runs import RunService
from stepchain.engine.shared import key_of
from stepchain.exceptions import ValidationError, VersionMismatch, WorkflowNotFound
from stepchain.handoff.messages import Activation
from stepchain.store.base import ACTIVE_RUN, RunChanges
from stepchain.store.records import NodeRecord, NodeStatus, RunRecord, RunStatus, node_key

#: the crash-event kind a re-issue by the sweeper is recorded as (``CheckpointStore.list_crash_events``)
SWEPT = "swept"


@dataclass(frozen=True)
class SweepPolicy:
    #: how long past its due moment a handoff must be missing before the sweeper acts
    grace_s: float = 300.0
    #: re-issues of one node since its last progress (recorded crash events ``swept``) after
    #: which the run is failed instead (``SweeperGaveUp``): no run strands
    max_reissues: int = 10
    #: runs read from the active-run index per page
    page_size: int = 100

    @classmethod
    def from_env(cls) -> SweepPolicy:
        """``STEPCHAIN_SWEEP_GRACE_S`` and ``STEPCHAIN_SWEEP_MAX_REISSUES`` (the sweeper function's)."""
        grace = os.environ.get("STEPCHAIN_SWEEP_GRACE_S")
        bound = os.environ.get("STEPCHAIN_SWEEP_MAX_REISSUES")
        policy = cls(float(grace) if grace else cls.grace_s, int(bound) if bound else cls.max_reissues)
        if policy.max_reissues < 1 or policy.grace_s < 0:
            raise ValidationError("STEPCHAIN_SWEEP_MAX_REISSUES must be >= 1 and STEPCHAIN_SWEEP_GRACE_S >= 0")
        return policy


@dataclass
class SweepReport:
    active: int = 0  # runs in the active-run index
    inspected: int = 0  # runs whose nodes were read
    reissued: int = 0  # activations re-issued (and event deliveries finished)
    failed: int = 0  # runs failed with a recorded reason
    cancels: int = 0  # half-done cancels finished
    errors: list[str] = field(default_factory=list)

    @property
    def acted(self) -> int:
        return self.reissued + self.failed + self.cancels


@dataclass
class _Plan(Recovery):
    fail: dict[str, str] | None = None
    fail_node: str = ""


class Sweeper:
    def __init__(self, engine: Engine | RunService, policy: SweepPolicy | None = None) -> None:
        self.runs = engine.runs if isinstance(engine, Engine) else engine
        self.policy = policy or SweepPolicy()

    def sweep(self) -> SweepReport:
        """One pass over the active-run index (every page)."""
        report = SweepReport()
        cursor: str | None = None
        while True:
            page = self.runs.store.list_active_runs(limit=self.policy.page_size, cursor=cursor)
            for run in page.runs:
                report.active += 1
                try:
                    self.sweep_run(run, report)
                except Exception as exc:  # one bad run must not stop the sweep
                    logger.exception("sweeping a run failed", extra={"run_id": run.run_id})
                    report.errors.append(f"{run.run_id}: {type(exc).__name__}: {exc}")
            cursor = page.cursor
            if cursor is None:
                break
        if report.acted or report.errors:
            logger.info("sweep done", extra={"report": report.__dict__})
        return report

    # -- one run -----------------------------------------------------------------------------------
    def sweep_run(self, run: RunRecord, report: SweepReport) -> None:
        now = self.runs.clock.now_ms()
        grace = int(self.policy.grace_s * 1000)
        if now - run.updated_ms <= grace:
            return  # nothing in it can be overdue yet: every deadline is after its last update + grace
        if run.status is RunStatus.CANCELLED:  # finishing a cancel needs no workflow definition
            report.inspected += 1
            self.runs.finish_cancel(run)
            report.cancels += 1
            return
        try:
            wf = self.runs.registry.get(run.workflow, run.version)
        except (WorkflowNotFound, VersionMismatch) as exc:
            self._fail_run(run, "", {"node": "", "type": type(exc).__name__, "message": str(exc)[:1000]}, report)
            return
        report.inspected += 1
        nodes = {r.key: r for r in self.runs.store.list_nodes(run.run_id)}
        plan = self._plan(wf, run, nodes, now, grace)
        if plan.fail is not None:
            self._fail_run(run, plan.fail_node, plan.fail, report)
            return
        # the sweeper's earlier re-issues are C# crash events (read only for a run with something to re-issue)
        events = self.runs.store.list_crash_events(run.run_id) if plan.msgs or plan.joins else []
        for key in {key_of(m) for m in [*plan.msgs, *plan.joins]}:
            since = _progress_ms(nodes.get(key))
            reissues = sum(1 for c in events if c.kind == SWEPT and c.node == key and c.at_ms > since)
            if reissues >= self.policy.max_reissues:
                err = {
                    "node": key,
                    "type": "SweeperGaveUp",
                    "message": (
                        f"node {key} was re-issued {reissues} times by the sweeper without progress "
                        f"(max_reissues={self.policy.max_reissues}, STEPCHAIN_SWEEP_MAX_REISSUES); giving up"
                    ),
                }
                self._fail_run(run, key, err, report)
                return
        for name in plan.events:
            self.runs.finish_event(run.run_id, name)
            base, it = split_event_key(name)
            self.runs.store.add_crash_event(run.run_id, now, node_key(wf.wait_node(base).id, None, it), SWEPT)
            report.reissued += 1
        for m in plan.joins:  # a child ended and its notification was lost: join the parent node
            rejoin(self.runs.worker, m)
            self.runs.store.add_crash_event(run.run_id, now, key_of(m), SWEPT)
            report.reissued += 1
        if plan.msgs:
            report.reissued += self._reissue(run, plan.msgs, now)

    def _reissue(self, run: RunRecord, msgs: Sequence[Activation], now: int) -> int:
        sent = self.runs.lifecycle.recover(run, msgs)
        if sent is None:
            # The transport's carrier of the run ended (a Step Functions execution) while the run
            # is active: give the run a new one (the next execution name) and start it.
            bumped = self.runs.store.update_run(run.run_id, RunChanges(now, add_redrive=True), expect=ACTIVE_RUN)
            sent = 0 if bumped is None else self.runs.lifecycle.recover(bumped, msgs)
        for m in msgs[: sent or 0]:  # recorded only when really re-issued (they count to max_reissues)
            self.runs.store.add_crash_event(run.run_id, now, key_of(m), SWEPT)
            logger.warning("re-issued a lost activation", extra={"run_id": run.run_id, "activation": m.to_dict()})
        return sent or 0

    def _fail_run(self, run: RunRecord, node: str, err: dict[str, str], report: SweepReport) -> None:
        now = self.runs.clock.now_ms()
        logger.warning("failing a run that cannot be moved on", extra={"run_id": run.run_id, "error": err})
        if run.status is RunStatus.CANCELLED:
            self.runs.store.update_run(run.run_id, RunChanges(now, settled=True), expect=(RunStatus.CANCELLED,))
            return
        if node:
            self.runs.fail_node(run.run_id, node, err)
        else:
            changes = RunChanges(now, status=RunStatus.FAILED, error=err, ended=True)
            self.runs.store.update_run(run.run_id, changes, expect=ACTIVE_RUN)
        self.runs.lifecycle.cancel(run)  # Step Functions: stop an execution that may still wait
        report.failed += 1

    # -- what is stuck -----------------------------------------------------------------------------
    def _plan(self, wf: Workflow, run: RunRecord, nodes: dict[str, NodeRecord], now: int, grace: int) -> _Plan:
        """Each node's kind says what moves it on (:meth:`~stepchain.engine.nodes.base.
        NodeKindHandler.recover`); a FAILED node fails the run first."""
        plan = _Plan()

        def overdue(*times: int | None) -> bool:
            return now - max([run.updated_ms, *(t for t in times if t is not None)]) > grace

        failed = next(
            (r for r in nodes.values() if r.status is NodeStatus.FAILED and overdue(r.updated_ms, r.ended_ms)), None
        )
        if failed is not None:
            plan.fail_node = failed.key
            plan.fail = failed.error or {"node": failed.key, "type": "Failed", "message": "node failed"}
            return plan
        routed = any(n.routes for n in wf.nodes)
        order = {n.id: i for i, n in enumerate(wf.nodes)}
        # every node record (each loop iteration has its own), in run order
        tops = [r for r in nodes.values() if r.index is None and r.node in order]
        for rec in sorted(tops, key=lambda r: (r.iteration, order[r.node])):
            node = wf.node(rec.node)
            # in a routed workflow the node whose output is this one's input is found from the routes
            src = source_of(wf, rec.key, nodes) if routed else None
            act = Activation(run.run_id, run.workflow, run.version, node.id, iteration=rec.iteration, src=src)
            view = RecoveryView(self.runs.worker, wf, run, node, rec, nodes, act, src, overdue)
            plan.add(handler_for(node).recover(view))
        return plan


def _progress_ms(rec: NodeRecord | None) -> int:
    """When the node last made progress. A PENDING node has made none since it was created (or
    ended: a redrive's reset of a failed node), whatever wrote it since: an activation that came
    too early and released it again (nothing to read its input from) is no progress."""
    if rec is None:
        return 0
    if rec.status is NodeStatus.PENDING:
        return max(rec.created_ms, rec.ended_ms or 0)
    return max(rec.created_ms, rec.updated_ms or 0)


__all__ = ["SWEPT", "SweepPolicy", "SweepReport", "Sweeper"]
