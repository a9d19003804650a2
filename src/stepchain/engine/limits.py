"""Concurrency and rate limits by key (issue 19): admit a step, or hold it throttled.

A step's limits are its workflow's plus its own (:mod:`stepchain.define.flow`). After the claim and
before the user's function (:func:`acquire`, from :mod:`stepchain.engine.admission`):

1. each :class:`~stepchain.define.flow.Concurrency` limit takes a slot of its key
   (:meth:`~stepchain.store.limits.LimitOps.acquire_slot`: one conditional write) leased until the
   node's own lease ends; an SQS heartbeat extends both. The key full (or others queued first): the
   slots taken so far are given back, the step keeps its place in the key's FIFO queue (its
   ``priority`` moves it ahead) and is *throttled* for ``poll_s``.
2. each :class:`~stepchain.define.flow.RateLimit` reserves its cost in its key's bucket
   (:meth:`~stepchain.store.limits.LimitOps.advance_bucket`: one conditional write when the
   process-local guess of the bucket's state is right). The reservation's start is in the future:
   the slots are given back and the step is throttled until then, holding its reservation
   (FIFO per key: a later reservation starts later). A reservation of 0 units (a token limit
   without ``estimate``) holds nothing: the step asks again at the expected start. A limit with a
   ``priority`` reserves only a start within the step's priority (seconds) of now, else nothing: the
   step asks again when the key's queue comes that close, so higher priorities reserve first.

Throttled: the node goes RETRYING without counting an attempt (its ``error`` says ``Throttled``,
the limit, the key and ``until_ms``, the expected start) and the activation comes back at that time
(SQS message delay, a Step Functions Wait state, the harnesses' virtual time): no Lambda runs
meanwhile; at least ``MIN_WAIT_MS``. An activation of the node that comes more than ``EARLY_MS``
before that (a duplicate's copy: the copy that throttled it carries the wake) puts the node back and
answers BUSY (queues send nothing; Step Functions waits again); one less early is on time (skew).
The reservation is valid for the node's next invocation only (``inv``): a crash, a takeover or a
duplicate that used it voids it, so no reservation is used twice; and only up to ``max(1 s, one
unit's interval)`` after its start: a later one (a slow transport, a Wait state's whole seconds) is
dropped and taken again, so late steps never go at once. A request limit thus has at most
``limit + burst - 1`` starts in any window of ``per_s`` when on time, one more late.

After the step's function, right before its node write (:func:`release`; so these requests are on
the node's ledger): the slots are given back (one conditional write each), a token
limit is charged what the step recorded minus its estimate (one write, none when equal), and a
``RetryableError(retry_after_s=)`` pushes every rate bucket of the step to ``now + retry_after``
(the provider's 429 slows the key for every run).

Crashes: a holder that dies keeps its slot until its lease ends (then the next acquire that finds
the key full reclaims it). A crash between the release and the node write: the node's lease runs
out, the step runs again and takes a slot again (no slot is held twice). A crash after
a reservation and before the node write wastes that reservation: the key runs under its limit,
never over. An unestimated token limit's usage is charged at the release: a crash before it
loses the charge (nobody knows what the dead step used). Costs: none for a step without limits; per
admitted activation at most two requests: its limits taken in one (one UpdateItem, or one
TransactWriteItems for several, :func:`_admit_at_once`) and given back and charged in one more
(:func:`_settle_at_once`); a busy key or a wrong guess of a bucket falls back to one write per limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stepchain.define.context import CostMeter, StepContext
from stepchain.define.flow import Concurrency, Limit, RateLimit
from stepchain.define.workflow import Node, Workflow
from stepchain.engine import heartbeat
from stepchain.engine.nodes.scope import KindServices
from stepchain.exceptions import RetryableError, ValidationError
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.store.changes import NodeChanges
from stepchain.store.limits import (
    BUCKET_SK,
    Waiter,
    bucket_move,
    bucket_take,
    holder_field,
    limit_pk,
    slot_give,
    slot_take,
)
from stepchain.store.port import TxUpdate
from stepchain.store.records import NodeRecord, NodeStatus

THROTTLED = "Throttled"
#: the outcome detail of a throttled step (the transport re-delivers the activation at its wake time)
DETAIL = "throttled"
#: process-local guess of each bucket's ``tat`` (µs): right, an admission costs one write
_seen: dict[str, int] = {}
#: a throttled step waits at least this long; an activation less than EARLY_MS before its expected
#: start (clock skew between workers) is on time, one more than that early is a duplicate's copy
MIN_WAIT_MS, EARLY_MS = 100, 50


def declared(wf: Workflow, node: Node) -> tuple[Limit, ...]:
    """The limits an activation of ``node`` is subject to (its workflow's, then its own)."""
    return (*wf.limits, *node.limits) if node.runs_user_code else ()


@dataclass
class Held:
    """What an admitted activation holds until :func:`release`."""

    owner: str
    slots: list[str] = field(default_factory=list)
    rates: list[tuple[RateLimit, str]] = field(default_factory=list)


def _keys(
    wf: Workflow, node: Node, lims: tuple[Limit, ...], ctx: StepContext, value_of: Callable[[], Any]
) -> list[str]:
    out = []
    for i, lim in enumerate(lims):
        name = lim.name or f"{wf.name}.{node.id}.{i}"
        try:
            k = "*" if lim.key is None else lim.key(ctx, value_of())
        except Exception as exc:
            raise ValidationError(f"the key function of limit {name!r} raised {type(exc).__name__}: {exc}") from exc
        if k is None or isinstance(k, dict | list | set):
            raise ValidationError(f"the key function of limit {name!r} returned {k!r}: return a string or number")
        out.append(limit_pk(name, str(k)))
    return out


def _held_back(rec: NodeRecord) -> tuple[int, bool] | None:
    """The expected start an earlier throttle of the node wrote, and whether THIS invocation may use
    its reservation (it is the node's next invocation after the throttle); None: not throttled."""
    e = rec.error or {}
    if e.get("type") != THROTTLED or "until_ms" not in e:
        return None
    return int(e["until_ms"]), e.get("reserved") == "1" and e.get("inv") == str(rec.invocations - 1)


@dataclass(frozen=True)
class Attempt:
    """A claimed step about to run: what admission (and the step's run) needs."""

    w: KindServices
    wf: Workflow
    node: Node
    msg: Activation
    key: str
    rec: NodeRecord
    ctx: StepContext
    value_of: Callable[[], Any]  # the step's input, decoded once


def acquire(a: Attempt) -> Held | Outcome | None:
    """None: no limits. :class:`Held`: admitted. An :class:`Outcome`: throttled (the node written)."""
    w, wf, node, msg, key, rec = a.w, a.wf, a.node, a.msg, a.key, a.rec
    lims = declared(wf, node)
    if not lims:
        return None
    assert rec.owner is not None
    pks = _keys(wf, node, lims, a.ctx, a.value_of)
    now = w.clock.now_ms()
    held = Held(rec.owner)
    back = _held_back(rec)
    if back is not None and back[0] > now + EARLY_MS:
        # Early: another copy of this activation (a duplicate) throttled the node and carries its wake
        # (a throttle waits MIN_WAIT_MS > EARLY_MS: a copy served right after it always lands here), or a
        # Wait state rounded its time down. Put the node back as it was (a reservation stays valid for
        # the next invocation) and send nothing: BUSY (Step Functions waits again until then).
        e = dict(rec.error or {}, inv=str(rec.invocations))
        w.store.finish(
            msg.run_id, key, NodeChanges(NodeStatus.RETRYING, now, error=e, wake_at_ms=back[0]), owner=rec.owner
        )
        return Outcome(OutcomeKind.BUSY, wake_at_ms=back[0])
    # a reservation used late (a slow transport) is dropped and taken again: late ones never bunch up
    slack = max([1000.0] + [lim.us_per_unit / 1000 for lim in lims if isinstance(lim, RateLimit)])
    reserved = back[0] if back is not None and back[1] and now - back[0] <= slack else None
    if reserved is not None and reserved > now:  # on time by a skewed clock: the reservation starts now
        reserved = now
    if _admit_at_once(w, lims, pks, rec, now, held, reserved=reserved is not None):
        return _hold(w, held)
    for lim, pk in zip(lims, pks, strict=True):
        if isinstance(lim, Concurrency):
            waiter = Waiter(holder_field(f"{msg.run_id}/{key}")[2:], now - _ahead_ms(lim, a), _stale_ms(lim))
            got = w.store.acquire_slot(pk, rec.owner, lim.limit, rec.lease_until_ms, now, waiter)
            if not got.acquired:
                wake = now + int(lim.poll_s * 1000)
                return _throttle(w, msg, key, rec, held, pk, wake, reserved=reserved is not None, place=got.position)
            held.slots.append(pk)
    held.rates.extend((lim, pk) for lim, pk in zip(lims, pks, strict=True) if isinstance(lim, RateLimit))
    # a limit with nothing to reserve (tokens, no estimate) is only a test, made first: when it says
    # wait, no other bucket is charged (a reservation taken then dropped would burn a unit per wake)
    for lim, pk in held.rates:
        if lim.cost == 0 and (start := _reserve(w, lim, pk, now)) > now:
            return _throttle(w, msg, key, rec, held, pk, start, reserved=False)
    if reserved is None:
        paid: list[tuple[str, int]] = []
        # a prioritized limit first: beyond its reach the step reserves nothing and asks again later
        for lim, pk in sorted(held.rates, key=lambda r: r[0].priority is None):
            if lim.cost > 0 and lim.priority is not None:
                start, ok = _reserve_within(w, lim, pk, now, _ahead_ms(lim, a))
                if not ok:
                    return _throttle(w, msg, key, rec, held, pk, start, reserved=False)
                paid.append((pk, start))
            elif lim.cost > 0:
                paid.append((pk, _reserve(w, lim, pk, now)))
        pk, start = max(paid, key=lambda p: p[1], default=("", now))
        if start > now:  # the reservations are the step's: its next invocation uses them
            return _throttle(w, msg, key, rec, held, pk, start, reserved=True)
    return _hold(w, held)


def _hold(w: KindServices, held: Held) -> Held:
    keeper = heartbeat.active()
    if held.slots and keeper is not None:  # its beats move the slots' leases with the node's
        keeper.also_extend(lambda until: [w.store.extend_slot(pk, held.owner, until) for pk in held.slots])
    return held


def _admit_at_once(
    w: KindServices, lims: tuple[Limit, ...], pks: list[str], rec: NodeRecord, now: int, held: Held, *, reserved: bool
) -> bool:
    """A step of several limits, each free now (a slot with nobody queued, a bucket that starts now):
    all taken in ONE request. False: not tried (one limit: its own write is as cheap) or a condition
    failed (nothing taken: the caller takes them one by one, which queues, reclaims and reserves)."""
    if len(lims) < 2:
        return False
    assert rec.owner is not None and rec.lease_until_ms is not None
    now_us = now * 1000
    ops: list[TxUpdate] = []
    for lim, pk in zip(lims, pks, strict=True):
        if isinstance(lim, Concurrency):
            ops.append(slot_take(pk, rec.owner, lim.limit, rec.lease_until_ms, now))
        elif not reserved or lim.cost == 0:  # a reservation covers the paid buckets; a test is made anew
            ops.append(bucket_take(pk, now_us, lim.cost_us, lim.tolerance_us, busy=_seen.get(pk, 0) > now_us))
    failed = w.store.write_all(ops) if ops else None
    if failed is not None:
        i, item = failed
        if ops[i].sk == BUCKET_SK:  # the guess was wrong (or the bucket is ahead): guess right next time
            _seen[ops[i].pk] = int((item or {}).get("tat", 0))
        return False
    for lim, pk in zip(lims, pks, strict=True):
        if isinstance(lim, Concurrency):
            held.slots.append(pk)
        else:
            held.rates.append((lim, pk))
            if not reserved or lim.cost == 0:  # a guess of the new tat (a transaction returns none)
                _seen[pk] = max(_seen.get(pk, 0), now_us) + lim.cost_us
    return True


def _ahead_ms(lim: Limit, a: Attempt) -> int:
    """How far ahead a waiting step goes (its priority, seconds; 0 without one): ahead of its arrival
    in a concurrency key's queue, how far ahead of now it may reserve a rate key's units."""
    if lim.priority is None:
        return 0
    try:
        p = lim.priority(a.ctx, a.value_of())
    except Exception as exc:
        raise ValidationError(f"the priority function of limit {lim.name!r} raised {type(exc).__name__}") from exc
    if isinstance(p, bool) or not isinstance(p, int | float) or not -86_400 <= p <= 86_400:
        raise ValidationError(f"the priority function of limit {lim.name!r} returned {p!r}: seconds in -86400..86400")
    return int(p * 1000)


def _reserve_within(w: KindServices, lim: RateLimit, pk: str, now_ms: int, ahead_ms: int) -> tuple[int, bool]:
    """A prioritized step's reservation: ``(its start, True)`` when it starts within ``ahead_ms`` (0
    or less: now), else ``(when the key's queue comes that close, False)``, nothing reserved."""
    now_us = now_ms * 1000
    cost_us, tolerance_us = lim.cost_us, lim.tolerance_us
    reach_us = tolerance_us + max(0, ahead_ms) * 1000
    ok, tat = w.store.reserve_within(pk, now_us, cost_us, reach_us, busy=_seen.get(pk, 0) > now_us)
    _seen[pk] = tat
    if not ok:
        return (tat - reach_us) // 1000, False
    return max(now_us, tat - cost_us - tolerance_us) // 1000, True


def _stale_ms(lim: Concurrency) -> int:
    """A waiter that stops asking (its run cancelled, its wake lost) loses its place after this long."""
    return int(3 * lim.poll_s * 1000) + 10_000


def _reserve(w: KindServices, lim: RateLimit, pk: str, now_ms: int) -> int:
    """Reserve ``lim.cost`` units of the bucket; the epoch ms the reservation starts."""
    now_us = now_ms * 1000
    cost_us, tolerance_us = lim.cost_us, lim.tolerance_us
    if len(_seen) > 10_000:  # a guess only: forget old keys rather than grow
        _seen.clear()
    if cost_us == 0:  # nothing to reserve: a test of the bucket, one write that needs no guess
        failed = w.store.write_all([bucket_take(pk, now_us, 0, tolerance_us, busy=False)])
        tat = now_us if failed is None else int((failed[1] or {}).get("tat", now_us))
        _seen[pk] = max(tat, _seen.get(pk, 0) if failed is None else 0)
        return max(now_us, tat - tolerance_us) // 1000
    tat = w.store.advance_bucket(pk, now_us, cost_us, busy=_seen.get(pk, 0) > now_us)
    _seen[pk] = tat
    start_us = max(now_us, tat - cost_us - tolerance_us)
    return start_us // 1000  # to the ms: a unit may start under 1 ms early, never a whole ms


def _throttle(
    w: KindServices,
    msg: Activation,
    key: str,
    rec: NodeRecord,
    held: Held,
    pk: str,
    until: int,
    *,
    reserved: bool,
    place: int | None = None,
) -> Outcome:
    _give_back(w, held)
    now = w.clock.now_ms()
    until = max(until, now + MIN_WAIT_MS)
    name, _, limit_key = pk.removeprefix("LIMIT#").partition("#")
    err = {
        "node": key,
        "type": THROTTLED,
        "message": f"throttled by limit {name!r} (key {limit_key!r}): expected to start at {until} (epoch ms)",
        "limit": name,
        "key": limit_key,
        "until_ms": str(until),
        "reserved": "1" if reserved else "0",
        "inv": str(rec.invocations),
    }
    if place is not None:  # its place in the key's queue of waiting steps (0: next)
        err["position"] = str(place)
    w.store.finish(msg.run_id, key, NodeChanges(NodeStatus.RETRYING, now, error=err, wake_at_ms=until), owner=rec.owner)
    return Outcome(OutcomeKind.WAIT, wake_at_ms=until, error=err, detail=DETAIL)


def _give_back(w: KindServices, held: Held) -> None:
    for pk in held.slots:
        w.store.release_slot(pk, held.owner)
    held.slots.clear()


def _settle_at_once(w: KindServices, held: Held, charges: list[tuple[str, int]], now_us: int) -> bool:
    """Slots given back and token limits charged in ONE request, when there are two or more writes.
    False: not tried, or a condition failed (a slot reclaimed, a wrong guess of a bucket): nothing was
    written, the caller writes them one by one."""
    ops = [slot_give(pk, held.owner) for pk in held.slots]
    moves = [
        (pk, op) for pk, delta in charges if (op := bucket_move(pk, now_us, delta, busy=_seen.get(pk, 0) > now_us))
    ]
    if len(ops) + len(moves) < 2:
        return False
    failed = w.store.write_all([*ops, *(op for _, op in moves)])
    if failed is not None:
        i, item = failed
        if i >= len(ops):
            _seen[moves[i - len(ops)][0]] = int((item or {}).get("tat", 0))
        return False
    held.slots.clear()
    for pk, delta in charges:  # a guess of the new tat (a transaction returns none)
        _seen[pk] = max(_seen.get(pk, 0), now_us) + delta
    return True


def release(w: KindServices, held: Held | None, cost: CostMeter, exc: BaseException | None = None) -> None:
    """Before the step's node write: give the slots back, charge token limits, and let a provider's 429
    (``RetryableError(retry_after_s=)``) hold every rate key of the step."""
    if held is None:
        return
    now_us = w.clock.now_ms() * 1000
    used = cost.input_tokens + cost.output_tokens
    charges = [
        (pk, round((used - lim.estimate) * lim.us_per_unit))
        for lim, pk in held.rates
        if lim.unit == "tokens" and used != lim.estimate
    ]
    if not _settle_at_once(w, held, charges, now_us):  # one by one: each its own conditional write
        _give_back(w, held)
        for pk, delta in charges:
            _seen[pk] = w.store.advance_bucket(pk, now_us, delta, busy=_seen.get(pk, 0) > now_us)
    if isinstance(exc, RetryableError) and exc.retry_after_s is not None:
        until = now_us + int(exc.retry_after_s * 1_000_000)
        for _, pk in held.rates:
            w.store.push_bucket(pk, until, now_us)
            _seen[pk] = until


__all__ = ["DETAIL", "THROTTLED", "Attempt", "Held", "acquire", "declared", "release"]
