"""The change tables, written once for every adapter: how a
:class:`~stepchain.store.base.NodeChanges` / :class:`~stepchain.store.base.RunChanges` becomes an
adapter-neutral :class:`~stepchain.store.port.Update` (the DynamoDB adapter renders it as an
UpdateExpression, the in-memory adapter applies it to a dict), and the active-run index fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepchain.requests import STORED_PREFIX, take_for_node_write
from stepchain.store.port import Update
from stepchain.store.records import HistoryPush, RunStatus

if TYPE_CHECKING:
    from stepchain.store.changes import NodeChanges, RunChanges

#: the sparse index of runs the sweeper looks at (``list_active_runs``): only active runs, and
#: cancelled ones until their cancel finished, carry its key attributes
ACTIVE_INDEX = "active"
ACTIVE_PK = "active_pk"
ACTIVE_SK = "active_sk"
ACTIVE = "ACTIVE"
ACTIVE_RUN = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)


def active_sk(now_ms: int, run_id: str) -> str:
    return f"{now_ms:015d}#{run_id}"


def history_fields(push: HistoryPush) -> dict[str, Any]:
    """SET the node's new history window as a value (no list_append: simpler to evaluate)."""
    return {"history": [h.to_dict() for h in push.window], "hist_n": push.count}


def node_update(c: NodeChanges, push: HistoryPush | None = None) -> Update:
    """The one translation of :class:`NodeChanges` into stored fields."""
    sets: dict[str, Any] = {"status": c.status.value, "lease_until": 0, "updated": c.now_ms}
    for name, value in (
        ("output", c.output_ref),
        ("input", c.input_ref),
        ("error", c.error),
        ("attempts", c.attempts),
        ("wake_at", c.wake_at_ms),
        ("event_name", c.event_name),
        ("task_token", c.task_token),
        ("items_total", c.items_total),
        ("route", c.route),
        ("state", c.state_ref),
        ("chain_until", c.chain_until_ms),
    ):
        if value is not None:
            sets[name] = value
    if c.ended:
        sets["ended"] = c.now_ms
    adds = {
        name: inc
        for name, inc in (
            ("duration_ms", c.add_duration_ms),
            ("cost_nano", c.add_cost_nano),
            ("input_tokens", c.add_input_tokens),
            ("output_tokens", c.add_output_tokens),
            ("checkpoint_hits", c.add_checkpoint_hits),
            ("effect_reruns", c.add_effect_reruns),
            ("gen", int(c.new_generation)),
            ("crashes", c.add_crashes),
            ("redriven", int(c.add_redrive)),
        )
        if inc
    }
    # the AWS requests of the activation so far, this write included (stepchain.requests)
    adds.update({STORED_PREFIX + k: v for k, v in take_for_node_write(c.status.value).items()})
    # a new error replaces the old one; clear_error without one removes it
    removes = ["owner", "error"] if c.clear_error and c.error is None else ["owner"]
    if push is not None:
        sets.update(history_fields(push))
    return Update(sets=sets, adds=adds, removes=removes)


def run_update(c: RunChanges, run_id: str) -> Update:
    """The one translation of :class:`RunChanges` into stored fields (and the active-run index)."""
    u = Update(sets={"updated": c.now_ms})
    for name, value in (
        ("status", None if c.status is None else c.status.value),
        ("current", c.current),
        ("output", c.output_ref),
        ("error", c.error),
    ):
        if value is not None:
            u.sets[name] = value
    if c.clear_error and c.error is None:  # a new error replaces the old one
        u.removes.append("error")
    if c.ended:
        u.sets["ended"] = c.now_ms
    if c.add_redrive:
        u.adds["redrives"] = 1
    if c.settled or c.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        u.removes += [ACTIVE_PK, ACTIVE_SK]  # leaves the sparse active-run index
    elif c.status is not None and c.status in ACTIVE_RUN:  # (back) in the index, e.g. a redrive
        u.sets[ACTIVE_PK] = ACTIVE
        u.inits[ACTIVE_SK] = active_sk(c.now_ms, run_id)
    return u


__all__ = [
    "ACTIVE",
    "ACTIVE_INDEX",
    "ACTIVE_PK",
    "ACTIVE_RUN",
    "ACTIVE_SK",
    "active_sk",
    "history_fields",
    "node_update",
    "run_update",
]
