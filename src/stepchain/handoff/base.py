"""The handoff port: how the next unit of work gets to a worker.

Adapters: in-process (tests, the embedded runtime), SQS, Step Functions. The engine decides
*what* happens next (an :class:`~stepchain.handoff.messages.Outcome`); the handoff decides *how*.

Two capabilities: :class:`Handoff` sends activations (every transport); :class:`RunLifecycle`
carries a run's lifecycle (start, resume a wait, cancel, redrive, recover). A transport that
drives runs itself (Step Functions) implements both; queue transports get
:class:`QueueLifecycle`, which turns each lifecycle event into activations. Use
:func:`lifecycle_of` to get a handoff's lifecycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.probe import NoProbe, Probe
from stepchain.store.records import NodeRecord, RunRecord, node_key

#: the engine's join of a parent node, run where the transport asks for it: its outcome and the
#: node's record (None: nothing to join)
JoinHere = Callable[[], tuple[Outcome, NodeRecord | None] | None]


#: the action (and outcome detail) of a held step's periodic re-check (stepchain.engine.budget)
RECHECK = "recheck"


class Handoff(ABC):
    """Port. Delivery is at-least-once: a duplicate activation is harmless to the engine."""

    probe: Probe = NoProbe()
    #: requests each activation's delivery costs (estimated, see stepchain.requests); the harness's queue: none
    delivery: Mapping[str, int] = MappingProxyType({})

    def dispatch(self, msgs: Sequence[Activation], *, at_ms: int | None = None) -> None:
        """Deliver ``msgs`` to workers, not before ``at_ms`` (epoch ms) when given."""
        for m in msgs:
            self.probe.reached("before_handoff", m.run_id, node_key(m.node, m.index, m.iteration))
        if msgs:
            self._send(msgs, at_ms)

    @abstractmethod
    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None: ...

    def apply(self, msg: Activation, outcome: Outcome, now_ms: int) -> None:
        """Queue-style transports turn an outcome into messages (Step Functions does not use this)."""
        kind = outcome.kind
        if kind is OutcomeKind.CONTINUE:
            self.dispatch([msg])
        elif kind is OutcomeKind.WAIT:  # a budget hold's re-check: like a deadline, a harness never skips to it
            self.dispatch([msg.with_(action=RECHECK) if outcome.detail == RECHECK else msg], at_ms=outcome.wake_at_ms)
        elif kind is OutcomeKind.SUSPENDED and outcome.wake_at_ms is not None:
            # the deadline check of an event wait
            self.dispatch([msg.with_(action="timeout", token=None)], at_ms=outcome.wake_at_ms)
        elif kind in (OutcomeKind.DONE, OutcomeKind.FANOUT) and outcome.next:
            self.dispatch(outcome.next)
        # BUSY: the live owner still has its own message, which comes back if it dies (queue
        # visibility timeout >= lease); FAILED / DROPPED: nothing to do.


@runtime_checkable
class RunLifecycle(Protocol):
    """Optional capability of a transport that carries runs itself (Step Functions)."""

    def start(self, run: RunRecord, first: Activation) -> None:
        """A new run: deliver its first activation."""
        ...

    def resume_wait(self, wait: Activation, successor: Activation | None) -> None:
        """An event completed a wait node: continue with ``successor`` (None: it was the last node)."""
        ...

    def rejoin(self, join: Activation, here: JoinHere) -> None:
        """A child run of the parent node ``join`` names ended: have the node joined (a queue
        sends the ``join`` activation; Step Functions joins ``here`` and completes the node's
        task token with the outcome)."""
        ...

    def cancel(self, run: RunRecord) -> None:
        """The run was cancelled (Step Functions stops its execution)."""
        ...

    def redrive(self, run: RunRecord, msgs: Sequence[Activation], top_node: str) -> None:
        """A failed run is resumed at ``top_node``; ``msgs`` re-activate its failed nodes."""
        ...

    def recover(self, run: RunRecord, msgs: Sequence[Activation]) -> int | None:
        """The sweeper found ``msgs`` lost (their sender died before the handoff): deliver them
        again. Returns how many were re-issued (0: the transport still drives the run itself);
        ``None``: the run's carrier has ended (a Step Functions execution) and the run needs a new
        one: the caller bumps the run's execution counter and calls again."""
        ...


class QueueLifecycle:
    """The run lifecycle of a queue transport: every lifecycle event is activations to send."""

    def __init__(self, handoff: Handoff) -> None:
        self.handoff = handoff

    def start(self, run: RunRecord, first: Activation) -> None:
        """A new run: deliver its first activation."""
        self.handoff.dispatch([first])

    def resume_wait(self, wait: Activation, successor: Activation | None) -> None:
        """An event completed a wait node: continue with ``successor`` (None: it was the last node)."""
        if successor is not None:
            self.handoff.dispatch([successor])

    def rejoin(self, join: Activation, here: JoinHere) -> None:
        """A child run ended: the parent node's ``join`` activation (its worker joins it)."""
        self.handoff.dispatch([join])

    def cancel(self, run: RunRecord) -> None:
        """The run was cancelled (Step Functions stops its execution)."""
        return None

    def redrive(self, run: RunRecord, msgs: Sequence[Activation], top_node: str) -> None:
        """A failed run is resumed at ``top_node``; ``msgs`` re-activate its failed nodes."""
        self.handoff.dispatch(msgs)

    def recover(self, run: RunRecord, msgs: Sequence[Activation]) -> int | None:
        """The sweeper found ``msgs`` lost (their sender died before the handoff): deliver them
        again. Returns how many were re-issued (0: the transport still drives the run itself);
        ``None``: the run's carrier has ended (a Step Functions execution) and the run needs a new
        one: the caller bumps the run's execution counter and calls again."""
        self.handoff.dispatch(msgs)
        return len(msgs)


def lifecycle_of(handoff: Handoff) -> RunLifecycle:
    """The handoff's run lifecycle: its own when it carries runs, else the queue default."""
    return handoff if isinstance(handoff, RunLifecycle) else QueueLifecycle(handoff)
