"""A store item (a dict of stored fields) and the changes the engine makes to it: how each
:class:`~stepchain.store.base.NodeChanges` / :class:`~stepchain.store.base.RunChanges` becomes
stored fields. :func:`node_field_changes` is the one translation of a node change: the in-memory
adapter applies it to a dict, the DynamoDB adapter turns it into an update expression. Both share
the claim conflict classification too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepchain.requests import STORED_PREFIX, take_for_node_write
from stepchain.store.base import ACTIVE_RUN, ClaimKind, ClaimResult, NodeChanges, RunChanges
from stepchain.store.records import HistoryPush, NodeRecord, NodeStatus, RunStatus


def set_history(item: dict[str, Any], push: HistoryPush) -> None:
    item["history"] = [h.to_dict() for h in push.window]
    item["hist_n"] = push.count


@dataclass(frozen=True)
class FieldChanges:
    """What a change does to a stored item, adapter-neutral: fields SET, counters ADDed, fields REMOVEd."""

    sets: dict[str, Any]
    adds: dict[str, int]
    removes: tuple[str, ...]


def node_field_changes(c: NodeChanges) -> FieldChanges:
    """The one translation of :class:`NodeChanges` into stored fields (both adapters use it)."""
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
        )
        if inc
    }
    # the AWS requests of the activation so far, this write included (stepchain.requests)
    adds.update({STORED_PREFIX + k: v for k, v in take_for_node_write(c.status.value).items()})
    # a new error replaces the old one; clear_error without one removes it
    removes = ("owner", "error") if c.clear_error and c.error is None else ("owner",)
    return FieldChanges(sets, adds, removes)


def apply_node_changes(item: dict[str, Any], c: NodeChanges) -> None:
    fields = node_field_changes(c)
    for name in fields.removes:
        item.pop(name, None)
    item.update(fields.sets)
    for name, inc in fields.adds.items():
        item[name] = item.get(name, 0) + inc


def apply_run_changes(item: dict[str, Any], c: RunChanges) -> None:
    item["updated"] = c.now_ms
    for name, value in (
        ("status", None if c.status is None else c.status.value),
        ("current", c.current),
        ("output", c.output_ref),
        ("error", c.error),
    ):
        if value is not None:
            item[name] = value
    if c.clear_error and c.error is None:  # a new error replaces the old one (as in DynamoDB)
        item.pop("error", None)
    if c.ended:
        item["ended"] = c.now_ms
    if c.add_redrive:
        item["redrives"] = item.get("redrives", 0) + 1
    if c.settled:
        item["settled"] = True
    elif c.status is not None and c.status in ACTIVE_RUN:
        item.pop("settled", None)


def needs_sweeping(item: dict[str, Any]) -> bool:
    """Is the run in the active-run index (``CheckpointStore.list_active_runs``)?"""
    status = RunStatus(item["status"])
    return status in ACTIVE_RUN or (status is RunStatus.CANCELLED and not item.get("settled"))


def classify_conflict(old: dict[str, Any] | None) -> ClaimResult:
    if old is None:
        return ClaimResult(ClaimKind.GONE, None)
    rec = NodeRecord.from_item(old)
    if rec.status is NodeStatus.SUCCEEDED:
        return ClaimResult(ClaimKind.DONE, rec)
    if rec.status in (NodeStatus.FAILED, NodeStatus.CANCELLED):
        return ClaimResult(ClaimKind.GONE, rec)
    return ClaimResult(ClaimKind.BUSY, rec)


__all__ = ["apply_node_changes", "apply_run_changes", "classify_conflict", "needs_sweeping", "set_history"]
