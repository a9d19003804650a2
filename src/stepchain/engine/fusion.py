"""Step fusion: consecutive steps served by one function run in one invocation (issue 20).

When a step's successor is a plain step of the same function and the invocation has the time for
it, the worker runs the successor inline instead of handing it off. Each fused step is still its
own node record (attempts, invocation ledger, crash semantics, stream events, state); only the
handoff and the successor's claim write go away:

* the predecessor's checkpoint (one conditional write, as always) also records the invocation's
  lease on its successor: ``chain_until`` (the invocation's deadline + the lease grace). That is
  the successor's claim: no other write takes it;
* the successor's first write is its checkpoint (or its retry, continuation, failure, budget
  hold), a conditional write that creates the node only while it is absent (the *implied claim*,
  :data:`IMPLIED` marks its owner): a worker that claimed the node meanwhile (a recovery after the
  lease ended) fences it out, so a zombie never commits after a takeover;
* a completed node met again whose ``chain_until`` lease is live and whose successor is absent is
  held (WAIT until the lease ends): nothing runs the successor twice while its invocation may be
  alive. Once the lease ended (or the successor exists), recovery walks the chain inline
  (:meth:`~stepchain.engine.worker.Worker.served_from_checkpoint`) to the first unfinished node.

:func:`fusable` is the ONE place that decides; a new reason not to fuse (a flow limit on the
successor, ...) goes there. Enabled by the workflow's definition, ``Workflow(name, fuse=True)`` (or
``fuse=N``: at most N steps per invocation; :attr:`~stepchain.define.workflow.Workflow.fuse_max_steps`),
the one switch the generator (``.fused`` Choices, function timeouts, the cap), the runtime and every
harness read. ``STEPCHAIN_FUSE_MAX_STEPS`` (the generated template sets it on a fusing function, read
when the worker is built) is an operator's cap on top: it lowers a workflow's cap (``1``: no fusion),
never raises it, and unset it leaves the definition's cap alone, so the runtime can never fuse a step
the generated state machine has no ``.fused`` Choice for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from stepchain.define.routing import END
from stepchain.define.step_options import DEFAULT_FUSE_MAX_STEPS
from stepchain.define.workflow import Node, Workflow
from stepchain.engine import limits
from stepchain.engine.nodes import handler_for
from stepchain.engine.nodes.scope import KindServices
from stepchain.engine.routing import next_activation, successor
from stepchain.engine.shared import LEASE_GRACE_MS, key_of
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike
from stepchain.store.base import IMPLIED_OWNER as IMPLIED  # an implied claim's owner suffix (store.base.finish)
from stepchain.store.base import FinishResult, NodeChanges
from stepchain.store.records import Invocation, NodeRecord, NodeStatus

#: env var: an operator's cap on the steps one invocation runs (set by the generated template from the
#: definitions; it lowers a workflow's ``fuse`` cap, never raises it)
ENV_MAX_STEPS = "STEPCHAIN_FUSE_MAX_STEPS"
#: ``Workflow(fuse=True)``'s cap
DEFAULT_MAX_STEPS = DEFAULT_FUSE_MAX_STEPS
#: time kept free after a fused successor's declared timeout (its checkpoint write, the handoff)
MARGIN_MS = 2_000


def max_steps_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """``STEPCHAIN_FUSE_MAX_STEPS``, the operator's cap (None: unset, the definitions decide)."""
    raw = (os.environ if env is None else env).get(ENV_MAX_STEPS, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValidationError(f"{ENV_MAX_STEPS} must be a whole number >= 1, got {raw!r}")
    return value


def max_steps(wf: Workflow, cap: int | None = None) -> int:
    """The most steps one invocation runs of ``wf``: its definition's ``fuse``, lowered by the operator's
    ``cap`` (:func:`max_steps_from_env`) when there is one."""
    return wf.fuse_max_steps if cap is None else min(wf.fuse_max_steps, cap)


def settings_key(node: Node) -> str:
    """The function settings that decide which function serves a step (``stepchain template``)."""
    return json.dumps([node.timeout_s, node.memory_mb, node.reserved_concurrency, node.environment, node.policies])


def same_function(a: Node, b: Node) -> bool:
    """Does the generated template serve both nodes by one function? An explicit ``function=`` names
    it; default-named steps with the same settings share one (:func:`stepchain.deploy.samgen.plan`)."""
    if a.function or b.function:
        return a.function == b.function
    return settings_key(a) == settings_key(b)


def static_fusable(node: Node, nxt: Node, wf: Workflow | None = None) -> bool:
    """The part of :func:`fusable` known before a run: both plain steps (no map, wait, sleep, call,
    parallel), the successor not opted out (``fuse=False``), one function; with ``wf``, the successor
    declares no concurrency or rate limit (its own or its workflow's, :mod:`stepchain.engine.limits`):
    a limited step always starts from a handoff, so a throttled one waits without a running Lambda."""
    plain = handler_for(node).fusable and handler_for(nxt).fusable and nxt.fuse and same_function(node, nxt)
    return plain and (wf is None or not limits.declared(wf, nxt))


@dataclass
class Chain:
    """The invocation's fused chain: its lease on inline successors and how many steps it ran."""

    lctx: LambdaContextLike
    lease_until_ms: int  #: the ``chain_until`` a fusing checkpoint records: the invocation's end + grace
    max_steps: int | None  #: the operator's cap (``STEPCHAIN_FUSE_MAX_STEPS``; None: the workflow's ``fuse``)
    steps: int = 1  #: steps run in this invocation so far (the first one included)
    implied: str | None = None  #: the key the next claim takes by the lease (no write)

    def remaining_ms(self) -> int:
        return int(self.lctx.get_remaining_time_in_millis())


_CHAIN: ContextVar[Chain | None] = ContextVar("stepchain_chain", default=None)


def current() -> Chain | None:
    return _CHAIN.get()


@contextmanager
def holding(chain: Chain) -> Iterator[Chain]:
    token = _CHAIN.set(chain)
    try:
        yield chain
    finally:
        _CHAIN.reset(token)


def fits(chain: Chain, nxt: Node) -> bool:
    """Does the invocation have the time for ``nxt`` (its declared timeout, plus a margin)?"""
    return chain.remaining_ms() >= nxt.timeout_s * 1000 + MARGIN_MS


def fusable(wf: Workflow, node: Node, msg: Activation, nxt: Activation, chain: Chain | None) -> bool:
    """THE fusion predicate: run ``nxt`` inline after ``node`` (just checkpointed) in this invocation?

    Yes when: ``wf`` fuses (``Workflow(fuse=...)``) and the invocation has run fewer steps than its cap
    (:func:`max_steps`: the definition's, lowered by ``STEPCHAIN_FUSE_MAX_STEPS``); ``node`` is a
    plain step, not a map item; ``nxt`` is a plain step of the same function (same generated
    settings) without ``fuse=False`` and without a concurrency or rate limit; the invocation's
    remaining time allows ``nxt``'s declared timeout.
    """
    if chain is None or msg.index is not None or nxt.index is not None:
        return False
    if chain.steps >= max_steps(wf, chain.max_steps):
        return False
    succ = wf.node(nxt.node)
    return static_fusable(node, succ, wf) and fits(chain, succ)


def exits(wf: Workflow, node: Node) -> list[str]:
    """Where a Step Functions task of ``node`` may leave to when its invocation fused the steps after
    it: every node a chain of statically fusable steps from ``node`` reaches, and ``END`` when one
    of them may end the run. Empty: ``node`` never fuses (its task goes on as before), as every node
    of a workflow defined without ``fuse``."""
    if wf.fuse_max_steps <= 1:
        return []
    seen: set[str] = set()
    out: set[str] = set()
    todo = [node]
    while todo:
        cur = todo.pop()
        for nxt_id in _successor_ids(wf, cur):
            if nxt_id == END:
                if cur is not node:
                    out.add(END)
                continue
            nxt = wf.node(nxt_id)
            if not static_fusable(cur, nxt, wf):
                if cur is not node:
                    out.add(nxt_id)
                continue
            out.add(nxt_id)
            if nxt_id not in seen:
                seen.add(nxt_id)
                todo.append(nxt)
    return sorted(out) if seen else []


def _successor_ids(wf: Workflow, node: Node) -> list[str]:
    """The chain's next node (or END) and, for a routing step, its routes."""
    nxt = successor(wf, node, 0, None)
    return [nxt[0].id if nxt is not None else END, *node.routes]


def node_max_steps(wf: Workflow, node: Node) -> int:
    """The fusion cap ``node``'s function is deployed with for ``wf`` (1: it fuses nothing there)."""
    return wf.fuse_max_steps if handler_for(node).fusable else 1


def function_timeout_s(node: Node, max_steps: int) -> int:
    """The timeout of the function serving ``node`` as the template deploys it: with fusion, twice the
    step's (at most Lambda's 900 s), so a chain goes on while its steps took at most ``timeout_s``
    together (:func:`fits` keeps the next step's whole timeout free)."""
    if max_steps > 1 and handler_for(node).fusable:
        return min(900, 2 * node.timeout_s)
    return node.timeout_s


def walk(w: KindServices, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord, now: int) -> Outcome | None:
    """A completed node met again whose invocation took its successor inline (``chain_until``): no
    message of the successor's own exists, so the walk goes on to it in this invocation (its claim
    serves it from its checkpoint or runs it), unless the fused invocation may still be running it
    (absent, lease live: WAIT until the lease ends) or it waits for its retry. A successor the dead
    invocation held (absent, lease ended) is taken over and handed off, not run inline: each crash
    then comes back through the crashed step's own message (SQS receive count, Step Functions task
    Retry), not again through the chain head's, which a few crashes in one chain would exhaust."""
    nxt = next_activation(wf, node, msg, rec.route, rec.output_ref, rec.state_ref)
    if nxt is None:
        return None
    succ = w.store.get_node(msg.run_id, key_of(nxt))
    chain_until = rec.chain_until_ms or 0
    if succ is None and chain_until >= now:
        return Outcome(OutcomeKind.WAIT, wake_at_ms=chain_until + 1, detail="fused chain running")
    waits = succ is not None and succ.status in (NodeStatus.RETRYING, NodeStatus.SLEEPING)
    if waits and succ is not None and succ.wake_at_ms is not None and succ.wake_at_ms > now:
        return Outcome(OutcomeKind.WAIT, wake_at_ms=succ.wake_at_ms, detail="fused step waits")
    if succ is None:  # taken over: handed off, so a crash in it comes back through its own message
        _crashed_inline(w, msg, rec, nxt, now)
        return Outcome(OutcomeKind.DONE, next=(nxt,), detail="takeover", then=nxt)
    if succ.status is NodeStatus.PENDING:  # taken over (the handoff lost) or its handoff lost: again
        w.store.add_crash_event(msg.run_id, now, rec.key, "lost_handoff")
        return Outcome(OutcomeKind.DONE, next=(nxt,), detail="lost handoff", then=nxt)
    return Outcome(OutcomeKind.DONE, next=(nxt,), detail="checkpoint", then=nxt, inline="walk")


def _crashed_inline(w: KindServices, msg: Activation, pred: NodeRecord, nxt: Activation, now: int) -> None:
    """The invocation that held ``nxt`` (its predecessor's checkpoint was its claim) died before the
    step's own write: record that attempt as a claim's takeover would (a crashed invocation from the
    claim to the lease's end, an attempt and a crash counted, a ``takeover`` crash event), creating
    the node PENDING for the walk's claim. One put-if-absent: concurrent walkers record it once."""
    key, started = key_of(nxt), pred.ended_ms or now
    lost = NodeRecord(msg.run_id, key, nxt.node, None, NodeStatus.RUNNING, invocations=1, created_ms=started,
                      started_ms=started, current_started_ms=started, iteration=nxt.iteration, fused=True)  # fmt: skip
    inv = Invocation(started, pred.chain_until_ms or now, "crashed")
    changes = NodeChanges(NodeStatus.PENDING, now, invocation=inv, attempts=2, add_crashes=1, prior=lost)
    if w.store.finish(msg.run_id, key, changes, owner="recovery" + IMPLIED) is FinishResult.OK:
        w.store.add_crash_event(msg.run_id, now, key, "takeover")


def chain_lease(now_ms: int, lctx: LambdaContextLike) -> int:
    return now_ms + int(lctx.get_remaining_time_in_millis()) + LEASE_GRACE_MS


__all__ = [
    "DEFAULT_MAX_STEPS",
    "ENV_MAX_STEPS",
    "IMPLIED",
    "Chain",
    "chain_lease",
    "current",
    "exits",
    "fits",
    "function_timeout_s",
    "fusable",
    "holding",
    "max_steps",
    "max_steps_from_env",
    "node_max_steps",
    "same_function",
    "settings_key",
    "static_fusable",
    "walk",
]
