"""Which SQS functions need no heartbeat: a queue whose own visibility returns a killed worker's message in time.

The heartbeat (:mod:`stepchain.engine.heartbeat`) costs one ``ChangeMessageVisibilityBatch`` per received batch
(one per step at batch size 1, $0.40 per million steps) to bound kill -> resume by V whatever the
function timeout. A function whose timeout T is short does not need it: its queue's VisibilityTimeout
can be Q = T + 5 s (AWS only requires Q >= T), and when Q <= V the message comes back by itself no later
than the heartbeat would bring it back. The template generator (:mod:`stepchain.deploy.samgen`) applies
:func:`queue_visibility_s` and tells such a function Q (``STEPCHAIN_SQS_QUEUE_VISIBILITY_S``); its SQS
worker (:func:`sqs_policy_from_env`) then runs no heartbeat. Arithmetic and trade-offs: ARCHITECTURE.md,
*Resuming after a kill*.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from stepchain.engine.heartbeat import HeartbeatPolicy
from stepchain.exceptions import ValidationError

#: env var: the queue's own VisibilityTimeout Q (set by the template generator on the functions whose
#: queue got a short one, see :func:`queue_visibility_s`); Q <= V: no heartbeat (:func:`sqs_policy_from_env`)
ENV_QUEUE_VISIBILITY = "STEPCHAIN_SQS_QUEUE_VISIBILITY_S"
#: the deployed default of V (template parameter ``MessageVisibilitySeconds``)
DEFAULT_VISIBILITY_S = 20
#: a queue's short visibility is the function timeout + this: the lease grace (2 s, the lease of an
#: invocation without heartbeat ends 2 s after its deadline) + 3 s for the receive -> handler start
#: (the mapping's invoke and a cold start), so the message comes back after the lease has ended
SHORT_QUEUE_SLACK_S = 5


def queue_visibility_s(timeout_s: int, visibility_s: int = DEFAULT_VISIBILITY_S) -> int:
    """The VisibilityTimeout of the queue of a function with timeout ``timeout_s``: ``timeout + 5 s``
    when that is <= ``visibility_s`` (V: a killed invocation's message then comes back by itself no
    later than the heartbeat would bring it back, so the worker skips the heartbeat and its receive-time
    ``ChangeMessageVisibilityBatch``), else 6 x the timeout (AWS's guidance for SQS event sources; the
    heartbeat bounds the resume). AWS requires >= the function timeout either way."""
    short = timeout_s + SHORT_QUEUE_SLACK_S
    return short if short <= visibility_s else 6 * timeout_s


def sqs_policy_from_env(env: Mapping[str, str] | None = None) -> HeartbeatPolicy | None:
    """The SQS worker's heartbeat: :meth:`HeartbeatPolicy.from_env`, but None (no receive-time
    visibility change, no beats) when the function's queue visibility Q (``STEPCHAIN_SQS_QUEUE_VISIBILITY_S``)
    is <= V: its messages come back by themselves within Q of their receipt, no later than within V of
    a kill. The lease then comes from the invocation's remaining time (deadline + 2 s), which ends
    before the message returns (Q = timeout + 5 s, :func:`queue_visibility_s`)."""
    e = os.environ if env is None else env
    policy = HeartbeatPolicy.from_env(e)
    raw = e.get(ENV_QUEUE_VISIBILITY, "").strip()
    if policy is None or not raw:
        return policy
    try:
        q = int(raw)
    except ValueError as exc:
        raise ValidationError(f"{ENV_QUEUE_VISIBILITY}: {exc}") from exc
    return None if 0 < q <= policy.visibility_s else policy


__all__ = [
    "DEFAULT_VISIBILITY_S",
    "ENV_QUEUE_VISIBILITY",
    "SHORT_QUEUE_SLACK_S",
    "queue_visibility_s",
    "sqs_policy_from_env",
]
