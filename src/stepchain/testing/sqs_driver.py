"""``SqsHarness``: the :class:`Harness` over REAL SQS queues (moto), in virtual time.

It creates one queue per node (plus ``*``) and a dead-letter queue, and drives them like a Lambda
event source mapping: receive a batch (as deployed: 1 record on a step's queue, up to 10 on the
control function's), call the real
:func:`stepchain.runtimes.aws.sqs_worker.handle_sqs_batch` with a :class:`VirtualLambdaContext`, delete the
records that succeeded and leave the failed ones, which come back after the visibility timeout.

Time is virtual. moto applies ``DelaySeconds`` and visibility timeouts in real time, so:

* a botocore hook on SendMessage/SendMessageBatch records every message sent (``sent``), strips
  its ``DelaySeconds`` and tags it with the virtual moment it becomes visible; the driver holds such a
  message (deletes it and sends it again, undelayed, once virtual time gets there), as SQS would;
* the queues' real visibility timeout is 12 h; the driver makes a message that was not deleted
  (failed record, crashed or timed-out invocation) visible again once virtual time passes the
  emulated visibility timeout (the invocation's deadline + the lease grace + 1 s), or, with
  ``heartbeat=``, where the heartbeat last set that message's visibility (``visibility``).

from stepchain.testing.sqs_driver import SqsHarness

with SqsHarness(wf, duplicate_delivery=True) as h:
    h.crash_at("before_handoff", node="fetch")
    run_id = h.start("demo", {"q": 1})
    h.run()
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from stepchain.define.context import LambdaContextLike
from stepchain.define.workflow import Workflow
from stepchain.engine import LEASE_GRACE_MS, Engine
from stepchain.engine.heartbeat import HeartbeatPolicy
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation, Outcome
from stepchain.handoff.sqs import CONTROL_BATCH_SIZE, MAX_DELAY_S, MAX_RECEIVE_COUNT, STEP_BATCH_SIZE
from stepchain.runtimes.aws.sqs_worker import handle_sqs_batch
from stepchain.runtimes.local_probes import DuplicatingSqsHandoff
from stepchain.testing.clock import InvocationTimeout, VirtualClock, VirtualLambdaContext
from stepchain.testing.harness import MAX_ACTIVATIONS, Harness, InvocationLog
from stepchain.testing.probe import HarnessProbe, InjectedCrash
from stepchain.testing.sqs_visibility import VisibilityModel

REGION = "us-east-1"
#: the message attribute the send hook uses to carry a stripped delay (virtual epoch ms)
VISIBLE_AT = "harness_visible_at_ms"
#: the queues' real visibility timeout (12 h, the maximum): virtual time decides redelivery
REAL_VISIBILITY_S = 43_200


@dataclass(frozen=True)
class SentMessage:
    """One message as the framework handed it to SQS (before the driver stripped its delay)."""

    at_ms: int
    queue_url: str
    body: str
    delay_s: int
    attributes: dict[str, Any]

    @property
    def activation(self) -> Activation | None:
        try:
            return Activation.from_json(self.body)
        except ValidationError:
            return None


@dataclass(frozen=True)
class BatchLog:
    queue_url: str
    size: int
    failed: int
    result: str  # "ok", "crashed", "timed_out" or "error"


@dataclass
class _Pending:
    """A message outside the queue's visible set: delayed (held by the driver) or in flight."""

    due_ms: int
    queue_url: str
    body: str
    attributes: dict[str, Any]
    receipt: str | None  # in flight (make visible at due); None: held (send again at due)

    @property
    def is_timeout(self) -> bool:
        try:
            return Activation.from_json(self.body).action in ("timeout", "recheck")
        except ValidationError:
            return False


class _Timeline:
    """Probe in front of the harness probe: notes claims and checkpoints in virtual time."""

    def __init__(self, inner: HarnessProbe, clock: VirtualClock, events: list[tuple[int, str, str]]) -> None:
        self.inner = inner
        self.clock = clock
        self.events = events

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        if boundary in ("after_claim", "after_checkpoint"):
            self.events.append((self.clock.now_ms(), boundary, key))
        self.inner.reached(boundary, run_id, key, detail)


class _LoggedEngine(Engine):
    """Records one :class:`InvocationLog` per record the worker hands to the engine."""

    log: list[InvocationLog]

    def process(self, msg: Activation, lambda_context: LambdaContextLike) -> Outcome:
        t0 = self.clock.monotonic_ms()
        result = "crashed"
        try:
            outcome = super().process(msg, lambda_context)
            result = outcome.kind.value
            return outcome
        except InvocationTimeout:
            result = "timed_out"
            raise
        except Exception:
            result = "error"  # the record fails; SQS retries it
            raise
        finally:
            key = msg.node if msg.index is None else f"{msg.node}#{msg.index:05d}"
            budget = int(getattr(lambda_context, "budget_ms", 0))
            self.log.append(InvocationLog(key, msg.action, budget, self.clock.monotonic_ms() - t0, result))


def _to_event_record(m: dict[str, Any], arn: str) -> dict[str, Any]:
    """A ReceiveMessage message, shaped the way the event source mapping hands it to Lambda."""
    attrs = {
        name: {
            "stringValue": a.get("StringValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": a["DataType"],
        }
        for name, a in m.get("MessageAttributes", {}).items()
        if name != VISIBLE_AT
    }
    return {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": dict(m.get("Attributes", {})),
        "messageAttributes": attrs,
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    }


class SqsHarness(Harness):
    """The harness, with activations travelling over moto SQS and served by the real SQS worker.

    ``batch_size``: records per invocation, default as deployed (a crash fails the whole batch).
    ``duplicate_delivery``: every message the engine sends is sent twice. ``sent`` lists every
    message the framework sent, ``batches`` every invocation, ``timeline`` claims, checkpoints and
    sends in virtual order, ``dlq_bodies()`` what ended in the dead-letter queue.
    """

    def __init__(
        self,
        *workflows: Workflow,
        backend: str = "moto",
        budget_ms: int | None = None,
        inline_limit: int | None = None,
        duplicate_delivery: bool = False,
        max_receive_count: int = MAX_RECEIVE_COUNT,
        batch_size: int | None = None,
        heartbeat: HeartbeatPolicy | Literal["env"] | None = None,
        virtual_sleep: bool = True,
    ) -> None:
        if batch_size is not None and not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be 1..10 (the event source mapping's BatchSize for SQS)")
        kwargs: dict[str, Any] = {} if inline_limit is None else {"inline_limit": inline_limit}
        super().__init__(*workflows, backend=backend, budget_ms=budget_ms, duplicate_delivery=duplicate_delivery,
                         virtual_sleep=virtual_sleep, **kwargs)  # fmt: skip
        import boto3

        # the SQS heartbeat (per-message visibility V); None: off; "env": as deployed (sqs_policy_from_env)
        self.heartbeat = heartbeat
        self.visibility = VisibilityModel(self.clock, 3600)  # real seconds: within SQS's 12 h total
        self.sent: list[SentMessage] = []
        self.batches: list[BatchLog] = []
        self.timeline: list[tuple[int, str, str]] = []
        self._pending: list[_Pending] = []
        self._dirty: set[str] = set()
        self._driver = boto3.client("sqs", region_name=REGION)  # the event source mapping's own client
        self.sqs = boto3.client("sqs", region_name=REGION)  # the framework's client (hooked, counted)
        self.sqs.meta.events.register("before-parameter-build.sqs.SendMessage", self._on_send)
        self.sqs.meta.events.register("before-parameter-build.sqs.SendMessageBatch", self._on_send_batch)
        self._count_calls(self.sqs)
        self.visibility.install(self.sqs)
        self.dlq_url, self.queues, self._arns = self._create_queues(max_receive_count)
        steps = {n.id for wf in self.registry for n in wf.nodes if n.runs_user_code}
        self._batch_sizes = {
            url: batch_size or (STEP_BATCH_SIZE if node in steps else CONTROL_BATCH_SIZE)
            for node, url in self.queues.items()
        }
        self.handoff_sqs = DuplicatingSqsHandoff(self.queues, self.sqs, clock=self.clock)
        self.handoff_sqs.duplicate = duplicate_delivery
        engine = _LoggedEngine(
            self.registry,
            self.store,
            self.codec,
            self.handoff_sqs,
            clock=self.clock,
            probe=_Timeline(self.probe, self.clock, self.timeline),
        )
        engine.log = self.invocations
        self.engine = engine

    # -- set-up --------------------------------------------------------------------------------
    def _create_queues(self, max_receive_count: int) -> tuple[str, dict[str, str], dict[str, str]]:
        dlq = self._driver.create_queue(QueueName="stepchain-dlq")["QueueUrl"]
        dlq_arn = self._arn(dlq)
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
        node_ids = sorted({n.id for wf in self.registry for n in wf.nodes})
        queues: dict[str, str] = {}
        for node in [*node_ids, "*"]:
            name = "stepchain-default" if node == "*" else f"stepchain-{node.replace('_', '-')}"
            created = self._driver.create_queue(
                QueueName=name, Attributes={"VisibilityTimeout": str(REAL_VISIBILITY_S), "RedrivePolicy": redrive}
            )
            queues[node] = created["QueueUrl"]
        return dlq, queues, {url: self._arn(url) for url in queues.values()}

    @staticmethod
    def _arn(url: str) -> str:
        account, name = url.rstrip("/").split("/")[-2:]
        return f"arn:aws:sqs:{REGION}:{account}:{name}"

    # -- the send hook: record, strip the delay, tag the virtual visibility moment ----------------
    def _strip(self, url: str, entry: dict[str, Any]) -> None:
        delay = int(entry.pop("DelaySeconds", 0) or 0)
        if delay > MAX_DELAY_S:
            raise AssertionError(f"DelaySeconds {delay} > {MAX_DELAY_S}: SQS would reject this message")
        attributes = dict(entry.get("MessageAttributes") or {})
        now = self.clock.now_ms()
        self.sent.append(SentMessage(now, url, entry["MessageBody"], delay, attributes))
        act = self.sent[-1].activation
        key = "?" if act is None else (act.node if act.index is None else f"{act.node}#{act.index:05d}")
        self.timeline.append((now, "sent", key))
        if delay:
            attributes[VISIBLE_AT] = {"DataType": "Number", "StringValue": str(now + delay * 1000)}
            entry["MessageAttributes"] = attributes
        self._dirty.add(url)

    def _on_send(self, params: dict[str, Any], **_: Any) -> None:
        self._strip(params["QueueUrl"], params)

    def _on_send_batch(self, params: dict[str, Any], **_: Any) -> None:
        for entry in params["Entries"]:
            self._strip(params["QueueUrl"], entry)

    _transport_on_moto = True  # with backend="memory" the store is in memory, the queues still are moto's

    # -- driving -----------------------------------------------------------------------------------
    def run(self, run_id: str | None = None, *, max_activations: int | None = None, until_ms: int | None = None) -> str:
        """Poll the queues and invoke the worker, skipping virtual time to each next delivery, until
        nothing is left (or ``max_activations`` invocations, or ``until_ms``). Time does not skip to
        an event wait's deadline on its own. Returns the run's status, as :meth:`Harness.run`;
        :attr:`batches` logs every invocation (a batch), :attr:`invocations` every record served."""
        invoked = self._poll(list(self._arns))  # includes messages a test sent around the hook
        while invoked < (MAX_ACTIVATIONS if max_activations is None else max_activations):
            self._release_due()
            n = self._poll([u for u in self._arns if u in self._dirty])
            invoked += n
            if n or self._dirty:  # a dirty queue may still hold visible messages
                continue
            if not self._pending:
                break
            due = min(p.due_ms for p in self._pending)
            if until_ms is not None and due > until_ms:
                break
            if until_ms is None and due > self.clock.now_ms() and all(p.is_timeout for p in self._pending):
                break  # only event deadlines are left: time does not skip to them on its own
            self.clock.set_to(due)
        if until_ms is not None:
            self.clock.set_to(until_ms)
        return self._status_after_run(run_id)

    def deliver(self, msg: Activation) -> Outcome | None:
        """Send ``msg`` to its node's queue (it is served on the next :meth:`run`)."""
        self.handoff_sqs.dispatch([msg])
        return None

    def redeliver(self, msg: Activation, at_ms: int | None = None) -> None:
        """A late duplicate: ``msg`` appears on its node's queue once more when virtual time reaches
        ``at_ms`` (default: now), as when SQS hands out again a message it delivered long ago."""
        due = self.clock.now_ms() if at_ms is None else at_ms
        self._pending.append(_Pending(due, self.handoff_sqs.queue_for(msg.node), msg.to_json(), {}, None))

    def _poll(self, urls: list[str]) -> int:
        """One receive per queue; each non-empty one is a Lambda invocation. Returns how many."""
        invoked = 0
        for url in urls:
            msgs = self._receive(url)
            if msgs:
                self._invoke(url, msgs)
                invoked += 1
        return invoked

    def _receive(self, url: str) -> list[dict[str, Any]]:
        n = self.batch_size_of(url)
        got = self._driver.receive_message(
            QueueUrl=url, MaxNumberOfMessages=n, AttributeNames=["All"], MessageAttributeNames=["All"]
        )
        msgs: list[Any] = list(got.get("Messages", []))
        if len(msgs) < n:
            self._dirty.discard(url)
        now = self.clock.now_ms()
        ready = []
        for m in msgs:
            attributes = dict(m.get("MessageAttributes", {}))
            visible_at = attributes.pop(VISIBLE_AT, None)
            if visible_at is not None and int(visible_at["StringValue"]) > now:  # still delayed: hold it
                self._driver.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                self._pending.append(_Pending(int(visible_at["StringValue"]), url, m["Body"], attributes, None))
            else:
                ready.append(m)
        return ready

    def batch_size_of(self, url: str) -> int:
        """The BatchSize of the event source mapping that polls queue ``url``."""
        return self._batch_sizes[url]

    def _release_due(self) -> None:
        now = self.clock.now_ms()
        due = [p for p in self._pending if p.due_ms <= now]
        self._pending = [p for p in self._pending if p.due_ms > now]
        for p in due:
            if p.receipt is None:  # the delay is over: SQS makes it visible as a fresh message
                self._driver.send_message(QueueUrl=p.queue_url, MessageBody=p.body, MessageAttributes=p.attributes)
            else:  # the visibility timeout is over
                self._driver.change_message_visibility(
                    QueueUrl=p.queue_url, ReceiptHandle=p.receipt, VisibilityTimeout=0
                )
            self._dirty.add(p.queue_url)

    def _invoke(self, url: str, msgs: list[dict[str, Any]]) -> None:
        """One Lambda invocation for a batch, as the event source mapping makes it."""
        budget = self.budget_ms or max(self._budget_of(m["Body"]) for m in msgs)
        self._n += 1
        ctx = VirtualLambdaContext(self.clock, budget, f"sqs-{self._n:06d}")
        event = {"Records": [_to_event_record(m, self._arns[url]) for m in msgs]}
        failed = {m["MessageId"] for m in msgs}
        result = "ok"
        self.clock.set_deadline(ctx.deadline_ms)
        try:
            with self._virtual_sleep():
                response = handle_sqs_batch(self.engine, event, ctx, heartbeat=self.heartbeat)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except InjectedCrash:
            result = "crashed"  # the process died: nothing is deleted
        except InvocationTimeout:
            result = "timed_out"
        except Exception:
            result = "error"  # the handler raised (e.g. every record failed): the whole batch is retried
        finally:
            self.clock.set_deadline(None)
        self.batches.append(BatchLog(url, len(msgs), len(failed), result))
        visible_again = int(ctx.deadline_ms) + LEASE_GRACE_MS + 1_000  # the emulated visibility timeout
        done = [m for m in msgs if m["MessageId"] not in failed]
        if done:
            entries: list[Any] = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            self._driver.delete_message_batch(QueueUrl=url, Entries=entries)
        for m in msgs:
            if m["MessageId"] in failed:
                attributes = {k: v for k, v in m.get("MessageAttributes", {}).items() if k != VISIBLE_AT}
                due = self.visibility.visible_again(m["ReceiptHandle"], visible_again)
                self._pending.append(_Pending(due, url, m["Body"], attributes, m["ReceiptHandle"]))

    def _budget_of(self, body: str) -> int:
        try:
            msg = Activation.from_json(body)
            return self.function_ms(self.registry.get(msg.workflow, msg.version), msg.node)
        except Exception:
            return 60_000

    # -- looking at the queues ---------------------------------------------------------------------
    def sends_for(self, node: str) -> list[SentMessage]:
        return [s for s in self.sent if (a := s.activation) is not None and a.node == node]

    def dlq_bodies(self) -> list[str]:
        got = self._driver.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [m["Body"] for m in got.get("Messages", [])]


__all__ = ["BatchLog", "SentMessage", "SqsHarness"]
