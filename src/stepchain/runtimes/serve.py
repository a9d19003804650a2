"""``serve``: one activation served by a worker, on any transport.

Every worker does the same two things for a message: make durable progress on it
(:meth:`Engine.process <stepchain.engine.Engine.process>`), then let the transport carry out the
outcome (:meth:`Handoff.apply <stepchain.handoff.base.Handoff.apply>`: send the next activations, a
delayed retry, a deadline check ...). The SQS worker, the Step Functions worker, the in-process
harness and the embedded runtime (through the SQS worker) all call this; no transport writes
"process, then apply" itself. A crash between the two is a crash after the checkpoint, before
the handoff: the next delivery of the same message is served from the checkpoint and re-issues
the handoff (see ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable

from stepchain.engine import Engine
from stepchain.handoff.messages import Activation, Outcome
from stepchain.logs import LambdaContextLike
from stepchain.requests import metering

#: a transport's adjustment of an outcome before it is applied (e.g. Step Functions' ``expire``)
Settle = Callable[[Activation, Outcome], Outcome]


def serve(
    engine: Engine,
    message: Activation,
    lambda_context: LambdaContextLike,
    *,
    settle: Settle | None = None,
    apply: bool = True,
) -> Outcome:
    """Process ``message`` and apply its outcome through the engine's handoff; returns the outcome.

    ``settle`` may replace the outcome before it is applied; ``apply=False`` skips the handoff
    (a worker served by a transport that does not carry its outcomes)."""
    with metering(engine.handoff.delivery):  # the run's AWS requests, stored with its node writes
        outcome = engine.process(message, lambda_context)
    if settle is not None:
        outcome = settle(message, outcome)
    if apply:  # after a fused chain, the outcome is about the chain's last activation (``outcome.at``)
        engine.handoff.apply(outcome.at or message, outcome, engine.clock.now_ms())
    return outcome


__all__ = ["Settle", "serve"]
