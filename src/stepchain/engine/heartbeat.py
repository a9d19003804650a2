"""The SQS heartbeat: a killed worker's message (and its node) come back within seconds.

AWS refuses an SQS event source mapping whose queue visibility timeout is below the function
timeout, so a queue's own timeout is minutes long and a dead worker's message would come back
only after it. Instead, per message (``ChangeMessageVisibility`` with the record's receipt handle):

* when a batch arrives, every record's visibility is set to ``V`` = ``visibility_s`` (one
  ``ChangeMessageVisibilityBatch`` per queue, up to 10 records);
* every ``H`` = ``interval_s`` seconds while the invocation runs, a heartbeat first extends the
  running node's lease to ``beat + V - margin`` (one conditional ``UpdateItem``: status RUNNING and
  owner = this worker, :meth:`CheckpointStore.extend_lease`), THEN sets the visibility of every record
  of the batch not finished yet to ``V`` again (one ``ChangeMessageVisibilityBatch``);
* the first heartbeat comes ``H`` after the batch arrived: a step shorter than ``H`` makes no
  heartbeat write at all.

Because the lease is always written before the visibility, and ``margin`` short of it, the lease of
a worker that dies has expired when its message comes back, so the redelivery takes the node over
(and is not dropped as BUSY). Kill at ``t``: the last heartbeat was at ``b <= t``, the message is
visible again at ``b + V <= t + V``, and the lease ended at ``b + V - margin``: resumed by
``t + V`` + one poll.

Cost: per ``H`` seconds of step time, 1 ``ChangeMessageVisibilityBatch`` + 1 ``UpdateItem``
(at ``H`` = 5 s: 24 requests per minute of step time); plus one ``ChangeMessageVisibilityBatch`` per
batch invocation when it arrives. These requests go to the run's ledger with the claiming
activation's next node write (:func:`stepchain.requests.attach`). A function whose queue's own
visibility is short enough runs no heartbeat at all (:mod:`stepchain.engine.short_queues`).

The timer is a daemon thread on a real clock; it is stopped and joined before the handler returns
(Lambda freezes the sandbox between invocations: nothing may run then). On a virtual clock (the
test harness, :class:`stepchain.testing.clock.VirtualClock`) beats fire as virtual time passes.

A heartbeat that finds the lease lost (taken over) stops extending it; the step cannot checkpoint
either (its commit is conditional on the owner), so a fenced worker never overwrites the new owner.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stepchain import requests
from stepchain.clock import Clock
from stepchain.exceptions import ValidationError
from stepchain.logs import logger

if TYPE_CHECKING:
    from stepchain.store.base import CheckpointStore

#: env var: the per-message visibility V in whole seconds (0 or unset: no heartbeat)
ENV_VISIBILITY = "STEPCHAIN_SQS_VISIBILITY_S"
#: env var: the heartbeat interval H in seconds (default V / 4)
ENV_INTERVAL = "STEPCHAIN_HEARTBEAT_S"
#: the largest visibility timeout SQS takes (12 h)
MAX_VISIBILITY_S = 43_200


@dataclass(frozen=True)
class HeartbeatPolicy:
    """``visibility_s`` (V, whole seconds, as SQS takes it) and ``interval_s`` (H < V - margin)."""

    visibility_s: int
    interval_s: float

    def __post_init__(self) -> None:
        if not 1 <= self.visibility_s <= MAX_VISIBILITY_S:
            raise ValidationError(f"heartbeat visibility_s must be 1..{MAX_VISIBILITY_S}, got {self.visibility_s}")
        if not 0 < self.interval_s * 1000 < self.lease_ms:
            raise ValidationError(
                f"heartbeat interval_s must be > 0 and < visibility_s - margin ({self.lease_ms / 1000} s), "
                f"got {self.interval_s}"
            )

    @property
    def margin_ms(self) -> int:
        """How long before its message comes back a lease ends (clock skew between hosts)."""
        return min(1000, self.visibility_s * 250)

    @property
    def lease_ms(self) -> int:
        """A lease written at a heartbeat lasts this long: V - margin."""
        return self.visibility_s * 1000 - self.margin_ms

    @property
    def interval_ms(self) -> int:
        return max(1, int(self.interval_s * 1000))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HeartbeatPolicy | None:
        """From ``STEPCHAIN_SQS_VISIBILITY_S`` / ``STEPCHAIN_HEARTBEAT_S``; None when V is unset or 0."""
        e = os.environ if env is None else env
        raw = e.get(ENV_VISIBILITY, "").strip()
        if not raw or raw == "0":
            return None
        try:
            v = int(raw)
            h = float(e.get(ENV_INTERVAL) or v / 4)
        except ValueError as exc:
            raise ValidationError(f"{ENV_VISIBILITY}/{ENV_INTERVAL}: {exc}") from exc
        if v >= 1 and not 0 < h * 1000 < v * 1000 - min(1000, v * 250):
            logger.error(  # a misconfigured H must not fail every message: beat often enough instead
                "heartbeat interval not below V - margin; using V / 4",
                extra={ENV_VISIBILITY: v, ENV_INTERVAL: h},
            )
            h = v / 4
        return cls(v, h)

    def writes_per_minute(self) -> float:
        """Heartbeat requests per minute of step time (1 visibility change + 1 lease write per beat)."""
        return 2 * 60 / self.interval_s


@runtime_checkable
class TickingClock(Protocol):
    """A clock that fires listeners at their due moments as its (virtual) time passes, e.g. the
    harness's VirtualClock: it sets its time to each due moment, then calls ``tick``."""

    def subscribe(self, listener: TickListener) -> None: ...

    def unsubscribe(self, listener: TickListener) -> None: ...


class TickListener(Protocol):
    def next_due_ms(self) -> int | None: ...

    def tick(self, now_ms: int) -> None: ...


class LeaseKeeper(Protocol):
    """What the worker core asks of a heartbeat (see :func:`active`)."""

    def lease_until(self, now_ms: int) -> int | None: ...

    def hold(self, run_id: str, key: str, owner: str) -> None: ...

    def also_extend(self, extend: Callable[[int], object]) -> None: ...

    @property
    def redelivered(self) -> bool:
        """The record being served was received before (SQS ``ApproximateReceiveCount`` > 1)."""
        ...


_ACTIVE: ContextVar[LeaseKeeper | None] = ContextVar("stepchain_heartbeat", default=None)


def active() -> LeaseKeeper | None:
    """The heartbeat of the record being served, if the transport runs one."""
    return _ACTIVE.get()


@dataclass(frozen=True)
class InFlight:
    """One record of the batch: its message id, queue and receipt handle."""

    message_id: str
    queue_url: str
    receipt: str


class SqsHeartbeat:
    """The heartbeat of one batch invocation (see the module docstring). Use as a context manager."""

    def __init__(
        self,
        policy: HeartbeatPolicy,
        store: CheckpointStore,
        sqs: Any,
        records: Sequence[InFlight],
        clock: Clock,
    ) -> None:
        self.policy = policy
        self.store = store
        self.sqs = sqs
        self.clock = clock
        self._inflight = {r.message_id: r for r in records}
        self._held: tuple[str, str, str] | None = None  # run_id, key, owner of the running node
        self._also: list[Callable[[int], object]] = []  # leases extended with the node's (limit slots)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_ms = 0
        self.visible_at_ms = 0
        self.beats = 0
        self.lost = False
        self._redelivered = False
        self._uncounted: Counter[str] = Counter()  # requests not yet in an activation's ledger

    @classmethod
    def lease_only(cls, policy: HeartbeatPolicy, store: CheckpointStore, clock: Clock) -> SqsHeartbeat:
        """A heartbeat without messages (Step Functions): the lease is V - margin from each beat."""
        return cls(policy, store, None, [], clock)

    # -- the worker's side ----------------------------------------------------------------------
    def lease_until(self, now_ms: int) -> int | None:
        """The lease a claim takes now: it ends ``margin`` before the message can come back. None
        when the message's visibility could not be shortened (the lease comes from the invocation's
        remaining time then, as without a heartbeat)."""
        requests.attach(self._drain)  # the claiming activation's node writes carry this batch's requests
        with self._lock:
            if not self.visible_at_ms:
                return None
            return max(now_ms, self.visible_at_ms - self.policy.margin_ms)

    def _drain(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._uncounted)
            self._uncounted.clear()
        return out

    def _count(self, name: str) -> None:
        if requests.metered():  # a beat on the activation's own thread (a virtual clock): already counted
            return
        with self._lock:
            self._uncounted[name] += 1
            if name == "ddb_write":
                self._uncounted["ddb_wru"] += 1

    def hold(self, run_id: str, key: str, owner: str) -> None:
        """From now on, heartbeats extend this node's lease (the node this worker just claimed)."""
        with self._lock:
            self._held, self._also = (run_id, key, owner), []

    def also_extend(self, extend: Callable[[int], object]) -> None:
        """A beat that extends the node's lease calls ``extend(its end)`` too (limit slots: a write each)."""
        with self._lock:
            self._also.append(extend)

    @property
    def redelivered(self) -> bool:
        return self._redelivered

    @contextmanager
    def serving(self, message_id: str, *, receive_count: int = 1) -> Iterator[None]:
        """Around one record: the worker core sees this heartbeat; afterwards the record is done
        (no more visibility changes: the mapping deletes it, or it comes back within V to be retried).

        ``receive_count`` > 1 marks a redelivery: with a short V, a dead worker's message can come
        back sooner than ``LEASE_GRACE_MS`` after its checkpoint, so the time alone no longer tells a
        redelivery (whose handoff may be lost) from an immediate duplicate."""
        self._redelivered = receive_count > 1
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            with self._lock:
                self._held, self._also = None, []
                self._inflight.pop(message_id, None)

    # -- the timer ------------------------------------------------------------------------------
    def __enter__(self) -> SqsHeartbeat:
        now = self.clock.now_ms()
        self._change_visibility(now)
        self._next_ms = now + self.policy.interval_ms
        if isinstance(self.clock, TickingClock):
            self.clock.subscribe(self)
        else:
            self._thread = threading.Thread(target=self._loop, name="stepchain-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating, deterministically: no beat runs after this returns."""
        self._stop.set()
        if isinstance(self.clock, TickingClock):
            self.clock.unsubscribe(self)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(max(0.0, (self._next_ms - self.clock.now_ms()) / 1000)):
            self._beat(self.clock.now_ms())

    def next_due_ms(self) -> int | None:
        return None if self._stop.is_set() else self._next_ms

    def tick(self, now_ms: int) -> None:
        self._beat(now_ms)

    def _beat(self, at_ms: int) -> None:
        self._next_ms = at_ms + self.policy.interval_ms
        with self._lock:
            held = self._held
        if held is None and not self._inflight:
            return
        self.beats += 1
        if held is not None:  # the lease first, then the visibility: the lease ends before the message returns
            run_id, key, owner = held
            try:
                self._count("ddb_write")
                ok = self.store.extend_lease(run_id, key, owner=owner, lease_until_ms=at_ms + self.policy.lease_ms)
            except Exception:  # a store hiccup: the next beat tries again; a lease that ends is fenced
                logger.warning("heartbeat could not extend the lease", exc_info=True, extra={"node": key})
                return
            if ok:
                self._extend_also(at_ms + self.policy.lease_ms)
            if not ok:
                with self._lock:  # unless the step finished meanwhile (its commit ended the lease): lost
                    lost = self._held == held
                    if lost:
                        self.lost, self._held = True, None
                if lost:
                    self._report_lost(run_id, key, owner)
        if not self._change_visibility(at_ms) and held is not None and not self.lost:
            # the message keeps its earlier deadline: bring the lease back under it, or the message
            # would come back while the lease still looks live (and be dropped as BUSY)
            run_id, key, owner = held
            try:
                self._count("ddb_write")
                self.store.extend_lease(
                    run_id, key, owner=owner, lease_until_ms=self.visible_at_ms - self.policy.margin_ms
                )
            except Exception:
                logger.warning("heartbeat could not shorten the lease back", exc_info=True, extra={"node": key})

    def _extend_also(self, until_ms: int) -> None:
        with self._lock:
            also = list(self._also)
        for extend in also:
            try:
                self._count("ddb_write")
                extend(until_ms)
            except Exception:  # a slot whose lease ends is reclaimed by others: fenced like the node
                logger.warning("heartbeat could not extend a limit slot", exc_info=True)

    def _report_lost(self, run_id: str, key: str, owner: str) -> None:
        """Warn only when another worker holds the node now: a lease that ended because the node
        finished (its commit raced this beat) is no takeover, and is not worth a warning."""
        try:
            self._count("ddb_read")
            rec = self.store.get_node(run_id, key)
        except Exception:  # cannot tell: say what is known
            rec = None
        if rec is not None and rec.owner is not None and rec.owner != owner:
            logger.warning("heartbeat found the lease lost (taken over)", extra={"run_id": run_id, "node": key})
        else:
            logger.debug("heartbeat: the lease ended (the node finished)", extra={"run_id": run_id, "node": key})

    def _change_visibility(self, at_ms: int) -> bool:
        """Set every unfinished record's visibility to V; False when SQS refused (they keep the old one)."""
        with self._lock:
            records = list(self._inflight.values())
        by_queue: dict[str, list[InFlight]] = {}
        for r in records:
            by_queue.setdefault(r.queue_url, []).append(r)
        ok = True
        for url, group in by_queue.items():
            for start in range(0, len(group), 10):
                entries: list[Any] = [
                    {"Id": str(i), "ReceiptHandle": r.receipt, "VisibilityTimeout": self.policy.visibility_s}
                    for i, r in enumerate(group[start : start + 10])
                ]
                try:
                    self._count("sqs_other")
                    failed = self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries).get("Failed")
                except Exception:
                    logger.warning("heartbeat could not change message visibility", exc_info=True)
                    failed = True
                if failed:
                    logger.warning("SQS refused a visibility change", extra={"failed": str(failed)[:500]})
                    ok = False
        if ok:
            with self._lock:
                self.visible_at_ms = at_ms + self.policy.visibility_s * 1000
        return ok


def queue_url_for_arn(arn: str, known: Sequence[str]) -> str:
    """The queue URL of an event source ARN: the known URL (the handoff's queues) ending in its name
    and account, else the public SQS endpoint's URL for it."""
    parts = arn.split(":")
    region, account, name = parts[3], parts[4], parts[5]
    for url in known:
        if url.rstrip("/").endswith(f"/{account}/{name}"):
            return url
    return f"https://sqs.{region}.amazonaws.com/{account}/{name}"


__all__ = [
    "ENV_INTERVAL",
    "ENV_VISIBILITY",
    "HeartbeatPolicy",
    "InFlight",
    "LeaseKeeper",
    "SqsHeartbeat",
    "TickListener",
    "TickingClock",
    "active",
    "queue_url_for_arn",
]
