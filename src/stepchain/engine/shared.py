"""Small helpers the worker core, the node kinds and the run service share."""

from __future__ import annotations

import secrets

from stepchain.handoff.messages import Activation
from stepchain.store.records import node_key

#: added to the invocation's remaining time to form its lease: Lambda has killed it by then
LEASE_GRACE_MS = 2_000


def error_of(exc: BaseException, node: str) -> dict[str, str]:
    """The error a node and its run record: the exception's type and (cut) message."""
    return {"node": node, "type": type(exc).__name__, "message": str(exc)[:1000]}


def activation(msg: Activation, node: str, index: int | None = None) -> Activation:
    """An activation of ``node`` (item ``index``) in the run and loop iteration of ``msg``."""
    return Activation(msg.run_id, msg.workflow, msg.version, node, index, iteration=msg.iteration)


def key_of(msg: Activation) -> str:
    """The key of the node (or map item) an activation is for, in its loop iteration."""
    return node_key(msg.node, msg.index, msg.iteration)


def new_run_id(now_ms: int) -> str:
    """24 hex chars, time-ordered: 12 of milliseconds, 12 random."""
    return f"{now_ms:012x}{secrets.token_hex(6)}"


__all__ = ["LEASE_GRACE_MS", "activation", "error_of", "key_of", "new_run_id"]
