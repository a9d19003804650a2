"""SQS handoff: every activation is a small message on the queue of the node it names.

Delays (sleeps, retry backoffs, event-wait deadlines) use the message's ``DelaySeconds``, which SQS
caps at 900 s. A message due later also carries its due time in the ``not_before_ms`` message
attribute; the worker (:mod:`stepchain.runtimes.aws.sqs_worker`) sends a message that arrives early back
with the next delay chunk, so a delay of any length is a chain of at most 15-minute hops.

Queue settings this transport relies on:

* ``VisibilityTimeout`` >= the consuming function's timeout + ``LEASE_GRACE_MS`` (2 s). A worker that
  dies keeps its node's lease until then; its message must not come back before that lease is over
  (a duplicate that meets a live lease is dropped as BUSY, and the owner's own message is the one
  that comes back). With the heartbeat (:mod:`stepchain.engine.heartbeat`) each message's own visibility
  is short (V) and the lease ends before it, so a dead worker's message comes back within V.
* A dead-letter queue with ``maxReceiveCount`` (:data:`MAX_RECEIVE_COUNT`): a message no worker can
  handle (malformed, unknown workflow) ends there instead of circulating.
* The event source mapping reports ``ReportBatchItemFailures`` so only failed records are retried;
  its ``BatchSize`` is :data:`STEP_BATCH_SIZE` on a step's (or map's) queue, :data:`CONTROL_BATCH_SIZE`
  on the control function's.

The generated template, the embedded runtime's queues and ``SqsHarness`` read these constants.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from stepchain.clock import Clock, SystemClock
from stepchain.exceptions import StepchainError, ValidationError
from stepchain.handoff.base import Handoff
from stepchain.handoff.messages import Activation
from stepchain.requests import instrument

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

#: the message attribute holding an activation's due time (epoch ms)
NOT_BEFORE = "not_before_ms"
#: SQS's largest per-message delay, in seconds
MAX_DELAY_S = 900
#: SendMessageBatch takes at most this many entries
BATCH_SIZE = 10

#: (body, due) of the activations sent in the current batch invocation (see ``SqsHandoff.coalescing``)
_SENT: ContextVar[set[tuple[str, int | None]] | None] = ContextVar("stepchain_sqs_sent", default=None)

#: the queues' redrive policy: a message received this many times goes to the dead-letter queue
MAX_RECEIVE_COUNT = 5
#: the event source mappings' BatchSize: 1 on a step's queue, 10 on the control function's
STEP_BATCH_SIZE, CONTROL_BATCH_SIZE = 1, 10


class SqsSendError(StepchainError):
    """SQS refused some messages of a batch; the caller's record fails and is retried."""

    code = "sqs_send_error"


def delay_seconds(at_ms: int | None, now_ms: int) -> int:
    """The ``DelaySeconds`` for a message due at ``at_ms``: the remaining time, rounded up, at most 900."""
    if at_ms is None or at_ms <= now_ms:
        return 0
    return min(MAX_DELAY_S, math.ceil((at_ms - now_ms) / 1000))


class SqsHandoff(Handoff):
    """Sends activations to ``queues[node]`` (or ``queues["*"]``), batched ten to a call."""

    #: the sender's SendMessage, the event source's ReceiveMessage and DeleteMessage, the invocation
    delivery = MappingProxyType({"sqs_send": 1, "sqs_receive": 1, "sqs_delete": 1, "lambda_invoke": 1})

    def __init__(
        self, queues: Mapping[str, str], client: SQSClient | None = None, *, clock: Clock | None = None
    ) -> None:
        self.queues = dict(queues)
        self.clock = clock or SystemClock()
        self._client = instrument(client)

    @property
    def client(self) -> SQSClient:
        if self._client is None:
            import boto3

            self._client = instrument(boto3.client("sqs"))
        return self._client

    def queue_for(self, node: str) -> str:
        url = self.queues.get(node) or self.queues.get("*")
        if not url:
            raise ValidationError(f"no queue configured for node {node!r} (and no '*' default)")
        return url

    @contextmanager
    def coalescing(self) -> Iterator[None]:
        """Within this block (one batch invocation) each activation is sent at most once per due time.

        Records of one batch that name the same node (duplicate deliveries, redeliveries after a
        crash) would otherwise each re-issue the same successor, and duplicates would multiply.
        """
        token = _SENT.set(set())
        try:
            yield
        finally:
            _SENT.reset(token)

    def forward(self, msg: Activation, due_ms: int) -> None:
        """Send on a message that arrived before ``due_ms``: the next hop of a delay longer than 900 s."""
        self._post([msg], due_ms)

    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        fresh = self._fresh(msgs, at_ms)
        if fresh:
            self._post(fresh, at_ms)

    @staticmethod
    def _fresh(msgs: Sequence[Activation], at_ms: int | None) -> list[Activation]:
        """``msgs`` less those already sent in the current :meth:`coalescing` block."""
        sent = _SENT.get()
        if sent is None:
            return list(msgs)
        fresh = []
        for m in msgs:
            key = (m.to_json(), at_ms)
            if key not in sent:
                sent.add(key)
                fresh.append(m)
        return fresh

    def _post(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        delay = delay_seconds(at_ms, self.clock.now_ms())
        attributes: dict[str, Any] = {}
        if delay and at_ms is not None:
            attributes = {NOT_BEFORE: {"DataType": "Number", "StringValue": str(at_ms)}}
        by_queue: dict[str, list[Activation]] = {}
        for m in msgs:
            by_queue.setdefault(self.queue_for(m.node), []).append(m)
        for url, group in by_queue.items():
            for start in range(0, len(group), BATCH_SIZE):
                self._send_chunk(url, group[start : start + BATCH_SIZE], delay, attributes)

    def _send_chunk(self, url: str, chunk: Sequence[Activation], delay: int, attributes: dict[str, Any]) -> None:
        if len(chunk) == 1:
            self.client.send_message(
                QueueUrl=url, MessageBody=chunk[0].to_json(), DelaySeconds=delay, MessageAttributes=attributes
            )
            return
        entries: list[Any] = [
            {"Id": str(i), "MessageBody": m.to_json(), "DelaySeconds": delay, "MessageAttributes": attributes}
            for i, m in enumerate(chunk)
        ]
        failed = self.client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
        if failed:
            reasons = "; ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in failed)
            raise SqsSendError(f"SQS refused {len(failed)} of {len(entries)} messages to {url}: {reasons}")
