"""The run's progress stream: ``EV#<seq>`` items in the run's partition, written on the store
port's primitives (no new abstract method, no new table or IAM).

Appending (:func:`append_events`): ONE prefix query for the stream's head (the newest ``EV#``
item), then ONE transaction that puts the events as ``EV#<head+1>``.. (each put-if-absent) together
with one ``EVID#<stable id>`` marker per event (put-if-absent). So:

* gap-free and ordered: ``EV#<n>`` is only ever written while ``EV#<n-1>`` exists (the head was read,
  or a put at ``n-1`` failed because it exists), and a batch becomes visible all at once. A reader that
  has seen ``n`` never later finds a new event ``<= n``: resuming with ``after=n`` loses nothing.
* at-least-once safe: an event whose stable id was stored before (a crashed invocation's re-run, a
  duplicate delivery, a zombie worker) fails its marker's condition and is dropped; the rest of the
  batch is written again. A reader never sees one id twice.
* concurrent writers (map items, parallel branches) race on the next sequence number: the loser's
  transaction fails on its first put, it reads the head again and retries (no counter item per event).

Readers (:func:`read_events`) query ``EV#`` items after a sequence (one query).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stepchain.exceptions import StoreConflict, ValidationError
from stepchain.store.port import ABSENT, Cond, StorePort
from stepchain.store.records import run_pk

EV_PREFIX = "EV#"
EVID_PREFIX = "EVID#"
#: events per transaction (two puts each; DynamoDB allows 100 per transaction)
BATCH = 40
#: the largest ``data`` of one event, as JSON
MAX_DATA_BYTES = 16_384
#: a writer gives up after this many lost races for the head (heavy contention)
MAX_RACES = 50


def ev_sk(seq: int) -> str:
    return f"{EV_PREFIX}{seq:012d}"


@dataclass(frozen=True)
class StreamEvent:
    """One event of a run's stream. ``id`` is stable across re-runs of the operation that emitted it."""

    seq: int
    id: str
    kind: str
    data: Any
    node: str | None
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "kind": self.kind,
            "data": self.data,
            "node": self.node,
            "at": self.at_ms,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StreamEvent:
        return cls(
            int(item["seq"]),
            str(item["id"]),
            str(item["kind"]),
            json.loads(str(item["data"])),
            item.get("node"),
            int(item["at"]),
        )


@dataclass(frozen=True)
class PendingEvent:
    """An event not yet written: its stable id, kind, JSON data, node key and time."""

    id: str
    kind: str
    data_json: str
    node: str | None
    at_ms: int


def encode_data(data: Any) -> str:
    try:
        text = json.dumps(data, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"ctx.emit data must be JSON-serializable: {exc}") from None
    if len(text.encode()) > MAX_DATA_BYTES:
        raise ValidationError(f"ctx.emit data is over {MAX_DATA_BYTES} bytes as JSON")
    return text


def head(store: StorePort, run_id: str) -> int:
    """The stream's last sequence number (0 when empty): ONE query for one item."""
    items = store._query(run_pk(run_id), EV_PREFIX, newest_first=True, limit=1)
    return int(items[0]["seq"]) if items else 0


def append_events(store: StorePort, run_id: str, events: list[PendingEvent], *, hint: int | None = None) -> int:
    """Append ``events`` in order, dropping those whose id is stored already; returns the last sequence
    number known to exist after it (a ``hint`` for the next call). Per batch of :data:`BATCH`: one
    transaction, plus one head query when there is no ``hint`` (the head this writer saw last) or
    another writer moved the head since."""
    for start in range(0, len(events), BATCH):
        hint = _append_batch(store, run_id, list(events[start : start + BATCH]), hint)
    return head(store, run_id) if hint is None else hint


def _append_batch(store: StorePort, run_id: str, batch: list[PendingEvent], hint: int | None) -> int:
    pk = run_pk(run_id)
    seq = head(store, run_id) if hint is None else hint
    for _ in range(MAX_RACES):
        if not batch:
            return seq
        puts: list[tuple[dict[str, Any], Cond]] = []
        for i, ev in enumerate(batch):
            n = seq + 1 + i
            exp = store.expires_at(ev.at_ms)
            item = {"pk": pk, "sk": ev_sk(n), "seq": n, "id": ev.id, "kind": ev.kind, "data": ev.data_json}
            puts.append(({**item, "node": ev.node, "at": ev.at_ms, "expires_at": exp}, ABSENT))
            marker = {"pk": pk, "sk": EVID_PREFIX + ev.id, "seq": n, "expires_at": exp}
            puts.append((marker, ABSENT))
        failed = store._transact(puts)
        if failed is None:
            return seq + len(batch)
        index, _old = failed
        if index % 2 == 1:  # this event's id is stored: a re-run's duplicate, drop it
            del batch[index // 2]
        else:  # another writer took the sequence number: read the head again
            seq = head(store, run_id)
    raise StoreConflict(f"run {run_id!r}: lost {MAX_RACES} races for the stream's head")


def read_events(store: StorePort, run_id: str, *, after: int = 0, limit: int = 100) -> list[StreamEvent]:
    """The events with a sequence number above ``after``, oldest first, at most ``limit`` (one query)."""
    items = store._query(run_pk(run_id), EV_PREFIX, after=ev_sk(after), limit=limit)
    return [StreamEvent.from_item(i) for i in items]


#: an emit's kind: safe in logs and URLs; ``node.*`` is the engine's own (lifecycle events)
KIND_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: an emit flushes at once when the last flush is at least this old, else at the next such emit or
#: with the node's checkpoint (``EmitBuffer.flush``)
FLUSH_MS = 200


class EmitBuffer:
    """The events one invocation of a step emitted and has not written yet.

    An emit's stable id is ``<node key>|g<generation>|<operation scope>|e<n>``: its position among the
    emits of its ``ctx.each`` item / ``ctx.once`` scope (or the step's top), with no attempt number, so
    the re-run of a crashed or duplicated invocation emits the same ids and :func:`append_events` drops
    them. Lifecycle events (``node.*``) carry ids the engine chooses (:meth:`lifecycle`)."""

    def __init__(
        self,
        store: StorePort,
        run_id: str,
        key: str,
        generation: int,
        now_ms: Callable[[], int],
        *,
        rerun: bool = False,
    ) -> None:
        self.store, self.run_id, self.key, self.generation, self._now_ms = store, run_id, key, generation, now_ms
        #: an earlier invocation of this node may have written some of our ids: the first flush reads
        #: them (one query) rather than dropping each copy with a failed transaction of its own
        self._known: set[str] | None = None if rerun else set()
        self._pending: list[PendingEvent] = []
        self._counters: dict[str, int] = {}
        self._last_flush_ms: int | None = None
        self._head: int | None = None  # the last sequence number this buffer wrote or saw
        self._batches: dict[str, str] = {}  # lifecycle event id -> its batch (``lifecycle(batch=)``)
        self._user_pending = False  # a ``ctx.emit`` event is buffered (``flush_user`` writes then)
        self._lock = threading.Lock()

    def emit(self, kind: str, data: Any, scope: str) -> None:
        if not KIND_RE.match(kind) or kind.startswith("node."):
            raise ValidationError(f"ctx.emit kind {kind!r}: 1-64 of A-Z a-z 0-9 _ . : - (node.* is reserved)")
        text = encode_data(data)
        now = self._now_ms()
        with self._lock:
            n = self._counters.get(scope, 0) + 1
            self._counters[scope] = n
            ev_id = f"{self.key}|g{self.generation}|{scope}|e{n}"
            self._pending.append(PendingEvent(ev_id, kind, text, self.key, now))
            self._user_pending = True
            due = self._last_flush_ms is None or now - self._last_flush_ms >= FLUSH_MS
        if due:
            self.flush()

    def lifecycle(self, kind: str, data: dict[str, Any], id_suffix: str, *, batch: str | None = None) -> None:
        """Buffer a ``node.<kind>`` event (written by the next flush: no write of its own). With
        ``batch``, it replaces a pending event of the same batch (``ctx.each`` progress: the newest
        count wins; a reader sees the counts grow, not every one)."""
        ev_id = f"{self.key}|g{self.generation}|node|{id_suffix}"
        ev = PendingEvent(ev_id, f"node.{kind}", encode_data(data), self.key, self._now_ms())
        with self._lock:
            if batch is not None:
                self._pending = [e for e in self._pending if self._batches.get(e.id) != batch]
                self._batches[ev_id] = batch
            self._pending.append(ev)

    def run_event(self, kind: str, data: dict[str, Any], id_suffix: str) -> None:
        """Buffer a ``run.<kind>`` event (no node) whose id is scoped by this node (so a re-run's
        first flush finds it stored): the run's start, buffered by its first node."""
        ev_id = f"{self.key}|g{self.generation}|run|{id_suffix}"
        with self._lock:
            self._pending.append(PendingEvent(ev_id, f"run.{kind}", encode_data(data), None, self._now_ms()))

    def flush_user(self) -> None:
        """Flush before an ``each`` item's or a ``once`` effect's checkpoint: only when a user emit is
        pending (a lifecycle event rides along then; alone it waits for the invocation's end flush:
        lifecycle events cost at most one write per invocation)."""
        with self._lock:
            due = self._user_pending
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the buffered events: no request when there are none, else one transaction (plus one
        head query on the invocation's first flush, or when another writer moved the head)."""
        with self._lock:
            batch, self._pending, self._user_pending = self._pending, [], False
            self._last_flush_ms = self._now_ms()
            if batch and self._known is None:
                prefix = f"{EVID_PREFIX}{self.key}|g{self.generation}|"
                found = self.store._query(run_pk(self.run_id), prefix)
                self._known = {str(i["sk"])[len(EVID_PREFIX) :] for i in found}
            if self._known:
                batch = [e for e in batch if e.id not in self._known]
            if batch:  # under the lock: one flush at a time keeps this invocation's events in order
                self._head = append_events(self.store, self.run_id, batch, hint=self._head)


__all__ = [
    "BATCH",
    "EVID_PREFIX",
    "EV_PREFIX",
    "FLUSH_MS",
    "MAX_DATA_BYTES",
    "EmitBuffer",
    "PendingEvent",
    "StreamEvent",
    "append_events",
    "encode_data",
    "ev_sk",
    "head",
    "read_events",
]
