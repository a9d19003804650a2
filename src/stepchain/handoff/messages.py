"""What travels between steps: a small ``Activation`` (never a payload), and what a step returns."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from stepchain.exceptions import ValidationError


def iso_seconds(ms: int) -> str:
    """RFC 3339 UTC timestamp rounded up to the second (what a Step Functions Wait accepts)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(math.ceil(ms / 1000), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Activation:
    """ "Work on node ``node`` (item ``index``) of run ``run_id``": the handoff message.

    ``action`` is ``run`` (normal), ``timeout`` (an event wait's deadline check), ``expire``
    (forced timeout, from Step Functions), ``join`` (map fan-in, from Step Functions) or ``recheck``
    (a queue's periodic re-check of a step its run's budget holds: run as ``run``; a harness does not
    skip time to it, as to a deadline).
    """

    run_id: str
    workflow: str
    version: str
    node: str
    index: int | None = None
    action: str = "run"
    token: str | None = None
    #: the loop iteration of the node this activation is for (see ``records.node_key``)
    iteration: int = 0
    #: the node key whose output is this activation's input (None: the node's own stored input,
    #: or its chain predecessor's output)
    src: str | None = None
    #: that output's reference string itself, when short: the worker needs no read for its input
    input: str | None = None
    #: the run's durable state reference (:mod:`stepchain.define.state`) the node starts from, when short
    state: str | None = None

    def with_(self, **changes: Any) -> Activation:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "version": self.version,
            "node": self.node,
        }
        if self.index is not None:
            d["index"] = self.index
        if self.action != "run":
            d["action"] = self.action
        if self.token is not None:
            d["token"] = self.token
        if self.iteration:
            d["iteration"] = self.iteration
        if self.src is not None:
            d["src"] = self.src
        if self.input is not None:
            d["input"] = self.input
        if self.state is not None:
            d["state"] = self.state
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Activation:
        try:
            idx = d.get("index")
            return cls(
                run_id=str(d["run_id"]),
                workflow=str(d["workflow"]),
                version=str(d["version"]),
                node=str(d["node"]),
                index=None if idx is None else int(idx),
                action=str(d.get("action", "run")),
                token=d.get("token"),
                iteration=int(d.get("iteration") or 0),
                src=d.get("src"),
                input=d.get("input"),
                state=d.get("state"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not a stepchain activation: {exc}") from exc

    @classmethod
    def from_json(cls, body: str) -> Activation:
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"activation is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValidationError("activation must be a JSON object")
        return cls.from_dict(doc)


class OutcomeKind(StrEnum):
    DONE = "DONE"  # node finished (now, or earlier: checkpoint served); ``next`` continues the run
    CONTINUE = "CONTINUE"  # progress saved; run the same activation again in a fresh invocation
    WAIT = "WAIT"  # run the same activation again at ``wake_at_ms`` (sleep, retry backoff)
    BUSY = "BUSY"  # another live invocation holds the node's lease until ``wake_at_ms``
    SUSPENDED = "SUSPENDED"  # waiting for an event; ``wake_at_ms`` is the deadline
    FANOUT = "FANOUT"  # map node: ``items`` created; ``next`` starts the first window
    FAILED = "FAILED"  # the run failed
    DROPPED = "DROPPED"  # nothing to do (stale or duplicate message, cancelled run)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    next: tuple[Activation, ...] = ()
    wake_at_ms: int | None = None
    items: int = 0
    error: dict[str, str] | None = None
    detail: str = ""
    #: DONE: the successor the node hands on to (sent or not; None: the run ended). Step Functions'
    #: route Choice reads it from the task state (``route``, ``iteration``, ``src``, ``input``)
    then: Activation | None = None
    #: DONE: run ``next[0]`` in this invocation (stepchain.engine.fusion): "fused" (its claim rides on
    #: this checkpoint) or "walk" (a completed chain met again: on to its first unfinished node)
    inline: str = ""
    #: the activation this outcome is about when the invocation ran a fused chain past its message
    #: (what a queue re-sends on WAIT/CONTINUE); None: the message's own
    at: Activation | None = None

    def to_state(self, msg: Activation) -> dict[str, Any]:
        """The small JSON a Step Functions task returns (see ``stepchain.deploy.asl``)."""
        out: dict[str, Any] = {**msg.to_dict(), "status": self.kind.value}
        out.pop("token", None)
        out.pop("action", None)
        if self.wake_at_ms is not None:
            out["wake_at"] = iso_seconds(self.wake_at_ms)
        if self.kind is OutcomeKind.FANOUT:
            out["items"] = list(range(self.items))
        if self.error is not None:
            out["error"] = self.error
        out["iteration"] = msg.iteration  # every task state has it (the next task's payload reads it)
        if self.kind is OutcomeKind.DONE:
            out.update(route_state(self.then, msg.iteration))
        return out


def route_state(then: Activation | None, iteration: int = 0) -> dict[str, Any]:
    """The task-state fields naming a node's successor: its node (``route``; ``__end__`` when the
    run ended), iteration, input's node and input. ``then`` unknown: the chain's successor in
    ``iteration`` (the current node's) reads its input."""
    if then is None:  # nothing to hand on (or not known here): a successor reads its input
        return {"route": "__end__", "iteration": iteration, "src": None, "input": None, "state": None}
    return {"route": then.node, "iteration": then.iteration, "src": then.src, "input": then.input, "state": then.state}
