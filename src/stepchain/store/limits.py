"""Concurrency slots and rate buckets of a limit key, in the checkpoint table (issue 19).

One partition per (limit name, key): ``LIMIT#<name>#<key>``. Its items:

- ``sk = "C"``, the key's concurrency slots: ``n`` (how many hold one) and one field per holder,
  ``h_<holder>`` = the epoch ms its slot's lease ends (the node lease of the activation that holds
  it); its queue: ``nw`` (how many wait) and per waiting step ``w_<id>`` (its place: the ms it first
  waited less its priority) and ``x_<id>`` (when its entry goes stale unless refreshed by its next
  try). Acquiring is ONE conditional write when nobody waits (``n < limit``, ``nw < 1``: ADD ``n`` 1,
  SET ``h_<holder>``); else slots go to the first live waiters, in order;
  releasing is ONE (REMOVE ``h_<holder>``, ADD ``n`` -1, if the field is still there: a fenced or
  repeated release changes nothing). Slots whose lease ended are reclaimed by the next acquire that
  finds the key full (one more conditional write, on the exact values it saw).
- ``sk = "R"``, the key's rate bucket (GCRA): ``tat``, the theoretical arrival time in epoch
  microseconds. Taking ``d`` µs of it is ``tat = max(tat, now) + d``: ONE conditional write when the
  caller guesses right whether the bucket is busy (``tat > now``: ADD) or idle (SET), two otherwise.

A step with several limits takes them all in ONE request (:meth:`LimitOps.write_all`: a
TransactWriteItems of :func:`slot_take` and :func:`bucket_take`, all or nothing), and gives its slots
back and charges its token limits in one more; when any condition fails nothing was written and the
caller falls back to the one-item writes above.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from stepchain.store.port import Cond, StorePort, TxUpdate, Update

SLOTS_SK, BUCKET_SK = "C", "R"
HOLDER, WAIT, EXPIRES = "h_", "w_", "x_"
#: limit items are kept this long after their last use (TTL, seconds)
KEEP_S = 7 * 86_400


def limit_pk(name: str, key: str) -> str:
    """The partition of a limit key (a long or odd key is hashed)."""
    safe = key if len(key) <= 128 and key.isprintable() else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return f"LIMIT#{name}#{safe}"


def holder_field(owner: str) -> str:
    """The slot field of an activation (its node lease owner)."""
    return HOLDER + hashlib.sha256(owner.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SlotTry:
    """An acquire's result: ``acquired``; else the earliest moment a live holder's lease ends and the
    caller's place in the key's queue (0: next)."""

    acquired: bool
    holders: int
    lease_ends_ms: int | None = None
    position: int | None = None


@dataclass(frozen=True)
class Waiter:
    """A step waiting for a slot: ``id`` stable across its activations (its run and node), ``seq`` its
    place (the ms it first waited, less its priority), ``stale_ms`` how long its entry lives unrefreshed."""

    id: str
    seq: int
    stale_ms: int


def slot_take(pk: str, owner: str, limit: int, lease_until_ms: int, now_ms: int) -> TxUpdate:
    """Take a slot if one is free and nobody waits (the acquire's first write)."""
    keep = {"expires_at": now_ms // 1000 + KEEP_S}
    u = Update(sets={holder_field(owner): lease_until_ms, **keep}, adds={"n": 1}, inits={"nw": 0})
    return TxUpdate(pk, SLOTS_SK, u, Cond(absent=True, clauses=(("n", "<", limit), ("nw", "<", 1))))


def slot_give(pk: str, owner: str) -> TxUpdate:
    """Give the slot back if still held (a fenced or repeated release fails its condition)."""
    me = holder_field(owner)
    return TxUpdate(pk, SLOTS_SK, Update(adds={"n": -1}, removes=[me]), Cond(absent=False, clauses=((me, ">", 0),)))


def bucket_take(pk: str, now_us: int, cost_us: int, tolerance_us: int, *, busy: bool) -> TxUpdate:
    """Reserve ``cost_us`` of the bucket if the reservation starts now, to the ms (``tat - tolerance``
    before the next ms, as a reservation's start is rounded down; a prioritized step passes its reach
    too); ``busy``: the caller's guess (``tat > now``: ADD, else SET)."""
    keep = {"expires_at": now_us // 1_000_000 + KEEP_S}
    starts_now = ("tat", "<", now_us + tolerance_us + 1000)
    if cost_us <= 0:  # nothing to reserve, only a test: no guess needed (an absent bucket starts idle)
        return TxUpdate(
            pk, BUCKET_SK, Update(sets=keep, inits={"tat": now_us}), Cond(absent=True, clauses=(starts_now,))
        )
    if not busy:
        cond = Cond(absent=True, clauses=(("tat", "<", now_us + 1),))
        return TxUpdate(pk, BUCKET_SK, Update(sets={"tat": now_us + cost_us, **keep}), cond)
    cond = Cond(absent=False, clauses=(("tat", ">", now_us), starts_now))
    return TxUpdate(pk, BUCKET_SK, Update(sets=keep, adds={"tat": cost_us}), cond)


def bucket_move(pk: str, now_us: int, delta_us: int, *, busy: bool) -> TxUpdate | None:
    """``tat = max(tat, now) + delta`` as one conditional update, by the caller's guess (``busy``:
    ``tat > now``); None: nothing to do (an idle bucket has nothing to refund)."""
    keep = {"expires_at": now_us // 1_000_000 + KEEP_S}
    if busy:
        return TxUpdate(
            pk,
            BUCKET_SK,
            Update(sets=keep, adds={"tat": delta_us}),
            Cond(absent=False, clauses=(("tat", ">", now_us),)),
        )
    if delta_us <= 0:
        return None
    cond = Cond(absent=True, clauses=(("tat", "<", now_us + 1),))
    return TxUpdate(pk, BUCKET_SK, Update(sets={"tat": now_us + delta_us, **keep}), cond)


class LimitOps(StorePort):
    """The limit half of :class:`~stepchain.store.base.CheckpointStore` (on the port's primitives)."""

    def acquire_slot(
        self, pk: str, owner: str, limit: int, lease_until_ms: int, now_ms: int, waiter: Waiter | None = None
    ) -> SlotTry:
        """Take one of the key's ``limit`` slots until ``lease_until_ms``. Nobody waiting and a slot
        free: one conditional write. Else the item that came back decides: a free slot (or one whose
        holder's lease ended) goes to the first live waiters in ``seq`` order, in one more conditional
        write on the values read; a caller that must wait is queued (or its entry refreshed), one write."""
        me = holder_field(owner)
        keep = {"expires_at": now_ms // 1000 + KEEP_S}
        failed = self.write_all([slot_take(pk, owner, limit, lease_until_ms, now_ms)])
        if failed is None:
            return SlotTry(True, 1)
        old = failed[1]
        if old is None:  # cannot happen (the item exists when the write failed): say busy
            return SlotTry(False, limit, now_ms)
        holders = {f: int(v) for f, v in old.items() if f.startswith(HOLDER)}
        dead = sorted(f for f, until in holders.items() if until < now_ms)
        live = [until for until in holders.values() if until >= now_ms]
        n, nw = int(old.get("n", 0)), int(old.get("nw", 0))
        queue = {f[len(WAIT) :]: int(v) for f, v in old.items() if f.startswith(WAIT)}
        mine = None if waiter is None else queue.get(waiter.id)
        stale = sorted(i for i in queue if int(old.get(EXPIRES + i, 0)) < now_ms and (waiter is None or i != waiter.id))
        # a place: the waiter's seq (ms) x 1000 + how many waited when it came (FIFO within one ms)
        place = None if waiter is None else mine if mine is not None else waiter.seq * 1000 + min(999, len(queue))
        me_at = (place, waiter.id) if place is not None and waiter is not None else (2**62, "~")
        ahead = sum(1 for i, seq in queue.items() if i not in stale and (seq, i) < me_at)
        busy = SlotTry(False, n, min(live) if live else now_ms, ahead)
        if ahead < limit - (n - len(dead)):  # a slot for us: reclaim ended leases and stale entries as read
            gone = [f for i in stale for f in (WAIT + i, EXPIRES + i)]
            if mine is not None and waiter is not None:
                gone += [WAIT + waiter.id, EXPIRES + waiter.id]
            clauses = (
                *((f, "=", holders[f]) for f in dead),
                *((EXPIRES + i, "=", old[EXPIRES + i]) for i in stale if EXPIRES + i in old),
                ("n", "=", n),
                ("nw", "=", nw),
            )
            adds = {"n": 1 - len(dead), "nw": -len(stale) - (mine is not None)}
            u = Update(sets={me: lease_until_ms, **keep}, adds=adds, removes=[*dead, *gone])
            if self._update(pk, SLOTS_SK, u, Cond(absent=False, clauses=clauses))[0]:
                return SlotTry(True, n - len(dead) + 1)
            return busy
        if waiter is not None:  # queue up (first time) or keep the entry alive
            until = {EXPIRES + waiter.id: now_ms + waiter.stale_ms}
            if mine is None:
                self._update(pk, SLOTS_SK, Update(sets={WAIT + waiter.id: place, **until}, adds={"nw": 1}))
            else:
                self._update(pk, SLOTS_SK, Update(sets=until), Cond(clauses=((WAIT + waiter.id, "=", mine),)))
        return busy

    def write_all(self, ops: list[TxUpdate]) -> tuple[int, dict[str, Any] | None] | None:
        """Every op or none, in ONE request (an UpdateItem for one op, else a TransactWriteItems). None:
        written; else the index of the first op whose condition failed and its item as it is."""
        if len(ops) == 1:
            op = ops[0]
            ok, old = self._update(op.pk, op.sk, op.update, op.cond, old_on_failure=True)
            return None if ok else (0, old)
        return self._transact(ops)

    def extend_slot(self, pk: str, owner: str, lease_until_ms: int) -> bool:
        """A heartbeat: move the holder's slot lease (one conditional write); False: no longer held."""
        me = holder_field(owner)
        cond = Cond(absent=False, clauses=((me, ">", 0),))
        return self._update(pk, SLOTS_SK, Update(sets={me: lease_until_ms}), cond)[0]

    def release_slot(self, pk: str, owner: str) -> bool:
        """Give the slot back (one conditional write); False: it was not held (released, reclaimed)."""
        return self.write_all([slot_give(pk, owner)]) is None

    def slot_holders(self, pk: str) -> dict[str, int]:
        """The key's holders and their lease ends (one read; tests and views)."""
        item = self._get(pk, SLOTS_SK) or {}
        return {f: int(v) for f, v in item.items() if f.startswith(HOLDER)}

    def advance_bucket(self, pk: str, now_us: int, delta_us: int, *, busy: bool) -> int:
        """``tat = max(tat, now) + delta`` (``delta`` may be < 0 on a busy bucket: a refund); returns
        the new ``tat``. ``busy``: the caller's guess (``tat > now``), right: one write, else two."""
        for _ in range(3):  # a guess proven wrong by the item that came back is not made again
            op = bucket_move(pk, now_us, delta_us, busy=busy)
            if op is None:
                return now_us  # an idle bucket has nothing to refund
            ok, item = self._update(pk, BUCKET_SK, op.update, op.cond, return_new=True, old_on_failure=True)
            if ok and item is not None:
                return int(item["tat"])
            busy = item is not None and int(item.get("tat", 0)) > now_us
        raise RuntimeError(f"rate bucket {pk} changed under three writes in a row")

    def reserve_within(self, pk: str, now_us: int, cost_us: int, reach_us: int, *, busy: bool) -> tuple[bool, int]:
        """Reserve ``cost_us`` only if the reservation starts within ``reach_us`` of now (``tat <
        now + reach``, to the ms): ``(True, the new tat)``, else ``(False, the tat as it is)``, nothing
        taken. ``busy``: the caller's guess; right, one conditional write, else two."""
        for _ in range(3):  # a guess proven wrong by the item that came back is not made again
            op = bucket_take(pk, now_us, cost_us, reach_us, busy=busy)
            ok, item = self._update(pk, BUCKET_SK, op.update, op.cond, return_new=True, old_on_failure=True)
            if ok and item is not None:
                return True, int(item["tat"])
            tat = int((item or {}).get("tat", 0))
            if tat >= now_us + reach_us + 1000:
                return False, tat
            busy = tat > now_us
        raise RuntimeError(f"rate bucket {pk} changed under three writes in a row")

    def push_bucket(self, pk: str, until_us: int, now_us: int) -> bool:
        """Nothing of the key before ``until_us`` (a provider's 429 Retry-After): one conditional write."""
        u = Update(sets={"tat": until_us, "expires_at": now_us // 1_000_000 + KEEP_S})
        return self._update(pk, BUCKET_SK, u, Cond(absent=True, clauses=(("tat", "<", until_us),)))[0]

    def bucket_tat(self, pk: str) -> int | None:
        item = self._get(pk, BUCKET_SK)
        return None if item is None else int(item["tat"])


__all__ = [
    "BUCKET_SK",
    "SLOTS_SK",
    "LimitOps",
    "SlotTry",
    "Waiter",
    "bucket_move",
    "bucket_take",
    "holder_field",
    "limit_pk",
    "slot_give",
    "slot_take",
]
