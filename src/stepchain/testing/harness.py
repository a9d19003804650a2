"""``Harness``: run workflows in-process, in memory (default) or on moto-backed AWS, in virtual time.

In memory by default: the in-memory store passes the same store contract tests as the DynamoDB
adapter (tests/functional/test_store_contract.py) at 0.2-0.7 ms per step, 100x+ less than moto
(25-40 ms per step on a quiet machine: 98% inside moto's request dispatch, expression parsing and
evaluation; bench/RESULTS.md measures both and AWS's durable functions local runner in one run).
``backend="moto"`` runs the real DynamoDB and S3 adapters on moto (what the adapter tests use).

from stepchain.testing import Harness

def test_my_agent():
    with Harness(wf) as h:
        h.crash_at("after_checkpoint", node="fetch")
        run_id = h.start("my-agent", {"q": "..."})
        h.run()
        assert h.status(run_id) == "SUCCEEDED"
        assert h.executions["fetch"] == 1
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from stepchain.define.workflow import Registry, Workflow
from stepchain.engine import LEASE_GRACE_MS, Engine
from stepchain.engine.fusion import function_timeout_s
from stepchain.engine.sweeper import Sweeper, SweepPolicy
from stepchain.handoff.inprocess import InProcessHandoff
from stepchain.handoff.messages import Activation, Outcome
from stepchain.runtimes.serve import serve
from stepchain.store.base import CheckpointStore
from stepchain.store.memory import MemoryStore
from stepchain.store.payloads import DEFAULT_INLINE_LIMIT, BlobStore, MemoryBlobStore, PayloadCodec, S3BlobStore
from stepchain.testing.clock import InvocationTimeout, VirtualClock, VirtualLambdaContext
from stepchain.testing.probe import HarnessProbe, InjectedCrash
from stepchain.testing.runs_api import RunsApi

TABLE = "stepchain-test"
BUCKET = "stepchain-test-payloads"
#: how many activations ``run()`` delivers at most by default (a guard against endless loops)
MAX_ACTIVATIONS = 100_000


@dataclass(frozen=True)
class InvocationLog:
    key: str
    action: str
    budget_ms: int
    elapsed_ms: float
    outcome: str  # an OutcomeKind value, or "crashed" / "timed_out"


class _Handoff(InProcessHandoff):
    def __init__(self, clock: VirtualClock, duplicate: bool) -> None:
        super().__init__(clock)
        self.duplicate = duplicate

    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        super()._send(msgs, at_ms)
        if self.duplicate:  # every message is delivered twice
            super()._send(msgs, at_ms)


#: moto's backends are process-global and not thread-safe (an UpdateItem that creates an item
#: makes it visible to other threads before its attributes are set); SfnHarness runs tasks in
#: moto's threads. Real DynamoDB applies each call atomically: so does the harness, with this lock.
_MOTO_DYNAMODB = threading.RLock()


def _serialize_calls(client: Any) -> None:
    call = client._make_api_call

    def serialized(operation: str, params: dict[str, Any]) -> Any:
        with _MOTO_DYNAMODB:
            return call(operation, params)

    client._make_api_call = serialized


@contextmanager
def moto_aws(config: dict[str, Any] | None = None) -> Iterator[None]:
    """moto's ``mock_aws`` (with ``config``, e.g. Step Functions executing) and the environment it
    needs (no real endpoint, fake credentials)."""
    from moto import mock_aws

    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_SESSION_TOKEN",
        )
    }
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        with mock_aws(config=config):  # type: ignore[arg-type]
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Harness(RunsApi):
    """Runs workflows in memory (default) or with the real adapters on moto (``backend="moto"``), in
    virtual time.

    ``budget_ms`` is each simulated invocation's time limit (default: the node's ``timeout_s``).
    Steps spend virtual time with ``time.sleep(s)`` (patched while a step runs, unless
    ``virtual_sleep=False``) or ``harness.clock.advance(ms)``; passing the deadline kills the
    invocation, like Lambda does. Killed or crashed invocations are redelivered after their lease
    runs out, as SQS would after its visibility timeout. ``duplicate_delivery``: every activation
    is delivered twice.

    It is also the base of :class:`~stepchain.testing.SqsHarness` and
    :class:`~stepchain.testing.SfnHarness`: ``start``, ``send_event``, ``cancel``, ``redrive``,
    ``status``, ``output``, ``view``, ``runs``, ``crash_at``, ``executions`` and ``invocations``
    are the same on all three; each transport drives ``run`` and ``advance`` its own way, with the
    same meaning and the same result.
    """

    #: start moto even with ``backend="memory"`` (the transport itself is moto's)
    _transport_on_moto = False
    #: ``mock_aws`` configuration (Step Functions needs ``execute_state_machine``)
    _moto_config: dict[str, Any] | None = None

    def __init__(
        self,
        *workflows: Workflow,
        backend: str = "memory",
        budget_ms: int | None = None,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
        duplicate_delivery: bool = False,
        virtual_sleep: bool = True,
    ) -> None:
        if backend not in ("moto", "memory"):
            raise ValueError("backend must be 'moto' or 'memory'")
        self.clock = VirtualClock()
        self.probe = HarnessProbe()
        self.registry = Registry(workflows)
        self.budget_ms = budget_ms
        self.virtual_sleep = virtual_sleep
        self.duplicate_delivery = duplicate_delivery
        self.invocations: list[InvocationLog] = []
        self.api_calls: Counter[str] = Counter()  # AWS calls the framework made (not the harness's own reads)
        self._counting = True
        self.run_ids: list[str] = []  # runs started through :meth:`start`, in order
        self._stack = ExitStack()
        self.store: CheckpointStore
        self.blobs: BlobStore
        if backend == "moto" or self._transport_on_moto:
            self._stack.enter_context(moto_aws(self._moto_config))
        if backend == "moto":
            self.store, self.blobs = self._moto_backend()
        else:
            self.store, self.blobs = MemoryStore(), MemoryBlobStore()
        self.codec = PayloadCodec(self.blobs, inline_limit)
        self.handoff = _Handoff(self.clock, duplicate_delivery)
        self.engine = Engine(self.registry, self.store, self.codec, self.handoff, clock=self.clock, probe=self.probe)
        self._n = 0

    def _count_calls(self, client: Any) -> None:
        def count(event_name: str, **_: Any) -> None:
            if self._counting:
                self.api_calls[event_name.split(".", 1)[1]] += 1

        client.meta.events.register("before-call.*.*", count)

    def _moto_backend(self) -> tuple[CheckpointStore, BlobStore]:
        import boto3

        from stepchain.store.dynamodb import DynamoDBStore, create_table

        ddb = boto3.client("dynamodb", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        _serialize_calls(ddb)
        create_table(ddb, TABLE)
        s3.create_bucket(Bucket=BUCKET)
        self._count_calls(ddb)
        self._count_calls(s3)
        return DynamoDBStore(TABLE, ddb), S3BlobStore(BUCKET, s3)

    # -- context management ----------------------------------------------------------------------
    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    # -- driving runs (the same on every harness) ----------------------------------------------------
    @property
    def executions(self) -> Counter[str]:
        """Completed executions of each node's code, by node key (map items: ``node#00003``)."""
        return self.probe.executions

    @property
    def effects(self) -> Counter[str]:
        """Real executions of ``ctx.once`` effect functions, by ``<node key>/<operation id>``: counted
        when the function returns, so an effect re-run after a crash in its ``effect_window`` counts 2."""
        return self.probe.effects

    def crash_at(self, boundary: str, *, node: str | None = None, times: int = 1, skip: int = 0) -> None:
        """Kill the worker at ``boundary`` (one of :data:`~stepchain.testing.BOUNDARIES`) the next
        ``times`` times it is reached (after letting ``skip`` matches pass), for node ``node`` (a
        node id, which also matches its map items ``node#00003``, or one item key; None: any)."""
        self.probe.crash(boundary, node=node, times=times, skip=skip)

    def sweep(self, policy: SweepPolicy | None = None) -> int:
        """Run the recovery sweeper once at the current virtual time (its activations are queued:
        :meth:`run` delivers them). Returns how many activations it re-issued or runs it failed."""
        return Sweeper(self.engine, policy).sweep().acted

    def run(self, run_id: str | None = None, *, max_activations: int | None = None, until_ms: int | None = None) -> str:
        """Deliver queued activations, skipping virtual time to each one's due moment (sleeps,
        retry backoffs, redeliveries), until none is left (or ``max_activations`` were delivered,
        or the next is due after ``until_ms``). Time does not skip to an event wait's deadline:
        use :meth:`advance` for that.

        Returns the status of ``run_id`` (default: the run started last) as :meth:`status` does:
        ``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``WAITING`` (for an event) or ``RUNNING``.
        :attr:`invocations` logs every invocation made.
        """
        delivered = 0
        while delivered < (MAX_ACTIVATIONS if max_activations is None else max_activations):
            head = self.handoff.peek()
            if head is None:
                break
            due = head[0]
            if until_ms is not None and due > until_ms:
                break
            if until_ms is None and due > self.clock.now_ms() and self.handoff.only_timeouts_left():
                break  # only event deadlines are left: time does not skip to them on its own
            popped = self.handoff.pop()
            assert popped is not None
            self.clock.set_to(popped[0])
            self.deliver(popped[1])
            delivered += 1
        if until_ms is not None:
            self.clock.set_to(until_ms)
        return self._status_after_run(run_id)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, delivering whatever falls due meanwhile (sleeps
        ending, event waits timing out). Follow it with :meth:`run` to let the runs move on."""
        self.run(until_ms=self.clock.now_ms() + int(seconds * 1000))

    def _status_after_run(self, run_id: str | None) -> str:
        self._counting = False  # the harness's own read is no call of the framework's
        try:
            return super()._status_after_run(run_id)
        finally:
            self._counting = True

    def deliver(self, msg: Activation) -> Outcome | None:
        """One simulated Lambda invocation for ``msg``."""
        wf = self.registry.find(msg.workflow, msg.version)  # None: the engine fails the run (version gone)
        budget = self.budget_ms or (self.function_ms(wf, msg.node) if wf and wf.has_node(msg.node) else 60_000)
        self._n += 1
        ctx = VirtualLambdaContext(self.clock, budget, f"inv-{self._n:06d}")
        self.clock.set_deadline(ctx.deadline_ms)
        key = msg.node if msg.index is None else f"{msg.node}#{msg.index:05d}"
        outcome: Outcome | None = None
        result = "crashed"
        try:
            with self._virtual_sleep():
                outcome = serve(self.engine, msg, ctx)
            result = outcome.kind.value
        except (InjectedCrash, InvocationTimeout) as died:
            result = "timed_out" if isinstance(died, InvocationTimeout) else "crashed"
            # The queue hands the message out again once its visibility timeout (>= lease) is over.
            self.handoff.push_back(msg, int(ctx.deadline_ms) + LEASE_GRACE_MS + 1_000)
        finally:
            self.clock.set_deadline(None)
            self.invocations.append(InvocationLog(key, msg.action, budget, ctx.elapsed_ms(), result))
        return outcome

    def function_ms(self, wf: Workflow, node_id: str) -> int:
        """The timeout of the function serving ``wf``'s node as deployed (longer when ``wf`` fuses steps)."""
        return function_timeout_s(wf.node(node_id), wf.fuse_max_steps) * 1000

    def redeliver(self, msg: Activation, at_ms: int | None = None) -> None:
        """Deliver ``msg`` once more at virtual time ``at_ms`` (default: now): a late duplicate, as
        when a queue hands out again a message it delivered long ago. It is queued directly (no
        ``before_handoff`` boundary) and served by the next :meth:`run`."""
        self.handoff.push_back(msg, self.clock.now_ms() if at_ms is None else at_ms)

    @contextmanager
    def _virtual_sleep(self) -> Iterator[None]:
        """Inside a step, ``time.sleep(s)`` spends ``s`` of virtual time (and no real time)."""
        if not self.virtual_sleep:
            yield
            return
        real_sleep, worker = time.sleep, threading.get_ident()

        def sleep(seconds: float) -> None:
            if threading.get_ident() == worker:
                self.clock.advance(seconds * 1000)
            else:  # another thread (e.g. moto's Step Functions interpreter) sleeps for real
                real_sleep(seconds)

        with mock.patch("time.sleep", sleep):
            yield
