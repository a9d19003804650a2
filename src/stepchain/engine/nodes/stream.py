"""Lifecycle events on the run's progress stream (``Workflow(stream_lifecycle=True)``), for the
node kinds that run no user code (a step's go through its :class:`~stepchain.store.stream.EmitBuffer`,
:mod:`~stepchain.engine.nodes.step`) and for the run's own start and end.

Each kind module says which events it writes and when (this module only writes them). The rule:
a node's events are written in ONE append (a head query and one transaction) right BEFORE the
node's own durable write that they describe (a wait's WAITING, a call's WAITING with its children,
a join's commit, ...): a crash in between leaves them written, the re-run writes the same ids and
:func:`~stepchain.store.stream.append_events` drops them, so a reader never sees one twice. Event ids:
``<node key>|g<generation>|node|<what>`` (``run|...`` for the run's own: ``run.started`` is
written with the first node's first events, ``run.succeeded``/``failed``/``cancelled`` after the
run's transition, once per redrive).
"""

from __future__ import annotations

from typing import Any

from stepchain.define.workflow import Node, Workflow
from stepchain.engine.nodes.scope import KindServices
from stepchain.handoff.messages import Activation
from stepchain.store.records import NodeRecord, RunRecord, RunStatus
from stepchain.store.stream import PendingEvent, append_events, encode_data

#: one lifecycle event of a node: (kind without ``node.``, data, id suffix)
Event = tuple[str, dict[str, Any], str]


def opens_run(wf: Workflow, node: Node, msg: Activation) -> bool:
    """Whether this activation is of the run's first node in its first iteration (not a map item):
    its first events carry ``run.started``."""
    return msg.index is None and msg.iteration == 0 and wf.first().id == node.id


def episode(rec: NodeRecord) -> str:
    """An id suffix for the node's episode: ``""`` until a redrive reset it, then ``|r<n>`` (a redrive
    that keeps its generation would otherwise give its events the ids of the first episode's)."""
    return f"|r{rec.redriven}" if rec.redriven else ""


def write(s: KindServices, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord, events: list[Event]) -> None:
    """Append the node's ``events`` (nothing without ``stream_lifecycle``): one head query and one
    transaction. Call it before the durable write the events describe."""
    if not wf.stream_lifecycle or not events:
        return
    now = s.clock.now_ms()
    base, ep = f"{rec.key}|g{rec.generation}|", episode(rec)
    pending = []
    if opens_run(wf, node, msg) and rec.generation == 0 and not rec.redriven and events[0][0] == "started":
        pending.append(PendingEvent(base + "run|started", "run.started", encode_data({}), None, now))
    for kind, data, suffix in events:
        pending.append(PendingEvent(base + "node|" + suffix + ep, f"node.{kind}", encode_data(data), rec.key, now))
    append_events(s.store, msg.run_id, pending)


def run_ended(s: KindServices, run: RunRecord) -> None:
    """``run.succeeded``/``run.failed``/``run.cancelled`` after the run's transition (called again when
    the transition is met again, e.g. a redelivered last step: the copy is dropped by its id)."""
    wf = s.registry.find(run.workflow, run.version)
    if wf is None or not wf.stream_lifecycle or not run.status.finished:
        return
    status = run.status.value.lower()
    data: dict[str, Any] = {"status": run.status.value}
    if run.error and run.status is not RunStatus.SUCCEEDED:
        data["error"] = run.error
    ev = PendingEvent(f"run|{status}|r{run.redrives}", f"run.{status}", encode_data(data), None, s.clock.now_ms())
    append_events(s.store, run.run_id, [ev])


__all__ = ["Event", "episode", "opens_run", "run_ended", "write"]
