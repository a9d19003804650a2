"""``Harness``: run workflows in-process, on moto-backed AWS or in memory, in virtual time.

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
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from stepchain.engine import LEASE_GRACE_MS, Engine
from stepchain.handoff.inprocess import InProcessHandoff
from stepchain.ledger import RunView, describe
from stepchain.messages import Activation, Outcome
from stepchain.payloads import DEFAULT_INLINE_LIMIT, BlobStore, MemoryBlobStore, PayloadCodec, S3BlobStore
from stepchain.records import RunStatus
from stepchain.store.base import CheckpointStore
from stepchain.store.memory import MemoryStore
from stepchain.sweeper import Sweeper, SweepPolicy
from stepchain.testing.clock import InvocationTimeout, VirtualClock, VirtualLambdaContext
from stepchain.testing.probe import HarnessProbe, InjectedCrash
from stepchain.workflow import Registry, Workflow

TABLE = "stepchain-test"
BUCKET = "stepchain-test-payloads"


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


@contextmanager
def moto_aws() -> Iterator[None]:
    """moto's ``mock_aws`` with the environment it needs (no real endpoint, fake credentials)."""
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
        with mock_aws():
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Harness:
    """Runs workflows with real adapters (``backend="moto"``) or in memory, in virtual time.

    ``budget_ms`` is each simulated invocation's time limit (default: the node's ``timeout_s``).
    Steps spend virtual time with ``time.sleep(s)`` (patched while a step runs, unless
    ``virtual_sleep=False``) or ``harness.clock.advance(ms)``; passing the deadline kills the
    invocation, like Lambda does. Killed or crashed invocations are redelivered after their lease
    runs out, as SQS would after its visibility timeout.
    """

    def __init__(
        self,
        *workflows: Workflow,
        backend: str = "moto",
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
        self.invocations: list[InvocationLog] = []
        self.api_calls: Counter[str] = Counter()
        self._stack = ExitStack()
        self.store: CheckpointStore
        self.blobs: BlobStore
        if backend == "moto":
            self._stack.enter_context(moto_aws())
            self.store, self.blobs = self._moto_backend()
        else:
            self.store, self.blobs = MemoryStore(), MemoryBlobStore()
        self.codec = PayloadCodec(self.blobs, inline_limit)
        self.handoff = _Handoff(self.clock, duplicate_delivery)
        self.engine = Engine(self.registry, self.store, self.codec, self.handoff, clock=self.clock, probe=self.probe)
        self._n = 0

    def _count_calls(self, client: Any) -> None:
        def count(event_name: str, **_: Any) -> None:
            self.api_calls[event_name.split(".", 1)[1]] += 1

        client.meta.events.register("before-call.*.*", count)

    def _moto_backend(self) -> tuple[CheckpointStore, BlobStore]:
        import boto3

        from stepchain.store.dynamodb import DynamoDBStore, create_table

        ddb = boto3.client("dynamodb", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
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

    # -- driving runs ------------------------------------------------------------------------------
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
        """Kill the worker at ``boundary`` (after_claim, mid_item, after_checkpoint, before_handoff,
        effect_window, item_window)."""
        self.probe.crash(boundary, node=node, times=times, skip=skip)

    def start(self, workflow: str, input: Any = None, *, idempotency_key: str | None = None) -> str:
        run, _ = self.engine.start(workflow, input, idempotency_key=idempotency_key)
        return run.run_id

    def send_event(self, run_id: str, name: str, payload: Any = None) -> str:
        return self.engine.deliver_event(run_id, name, payload)

    def sweep(self, policy: SweepPolicy | None = None) -> int:
        """Run the recovery sweeper once at the current virtual time (its activations are queued:
        :meth:`run` delivers them). Returns how many activations it re-issued or runs it failed."""
        return Sweeper(self.engine, policy).sweep().acted

    def runs(self) -> list[str]:
        """Every run id the store knows (e.g. of a start that died before it could answer)."""
        ids: list[str] = []
        for name in self.registry.names():
            cursor = None
            while True:
                page = self.store.list_runs(name, limit=100, cursor=cursor)
                ids.extend(r.run_id for r in page.runs)
                if (cursor := page.cursor) is None:
                    break
        return ids

    def run(self, *, max_activations: int = 100_000, until_ms: int | None = None) -> int:
        """Deliver queued activations, skipping virtual time to each one's due moment (sleeps,
        retry backoffs, redeliveries), until none is left. Time does not skip to an event wait's
        deadline: use :meth:`advance` for that. Returns how many were delivered."""
        delivered = 0
        while delivered < max_activations:
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
        return delivered

    def advance(self, seconds: float) -> int:
        """Let ``seconds`` pass, delivering whatever falls due meanwhile."""
        return self.run(until_ms=self.clock.now_ms() + int(seconds * 1000))

    def deliver(self, msg: Activation) -> Outcome | None:
        """One simulated Lambda invocation for ``msg``."""
        wf = self.registry.find(msg.workflow, msg.version)  # None: the engine fails the run (version gone)
        budget = self.budget_ms or (wf.node(msg.node).timeout_s if wf and wf.has_node(msg.node) else 60) * 1000
        self._n += 1
        ctx = VirtualLambdaContext(self.clock, budget, f"inv-{self._n:06d}")
        self.clock.set_deadline(ctx.deadline_ms)
        key = msg.node if msg.index is None else f"{msg.node}#{msg.index:05d}"
        outcome: Outcome | None = None
        result = "crashed"
        try:
            with self._virtual_sleep():
                outcome = self.engine.process(msg, ctx)
            self.handoff.apply(msg, outcome, self.clock.now_ms())
            result = outcome.kind.value
        except (InjectedCrash, InvocationTimeout) as died:
            result = "timed_out" if isinstance(died, InvocationTimeout) else "crashed"
            # The queue hands the message out again once its visibility timeout (>= lease) is over.
            self.handoff.push_back(msg, int(ctx.deadline_ms) + LEASE_GRACE_MS + 1_000)
        finally:
            self.clock.set_deadline(None)
            self.invocations.append(InvocationLog(key, msg.action, budget, ctx.elapsed_ms(), result))
        return outcome

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
        with mock.patch("time.sleep", lambda seconds: self.clock.advance(seconds * 1000)):
            yield

    # -- looking at runs ---------------------------------------------------------------------------
    def status(self, run_id: str) -> str:
        return self.engine.get_run(run_id).status.value

    def output(self, run_id: str) -> Any:
        run = self.engine.get_run(run_id)
        if run.status is not RunStatus.SUCCEEDED:
            raise AssertionError(f"run {run_id} is {run.status.value}: {run.error}")
        return self.codec.decode(run.output_ref)

    def view(self, run_id: str) -> RunView:
        return describe(self.store, self.registry, self.engine.get_run(run_id))
