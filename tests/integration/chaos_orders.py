"""An order-fulfilment workflow for the chaos test: unlike the research agent, it moves money.

validate -> itemize -> charge (map: one ``ctx.once`` per order line) -> pack (two unnamed
``ctx.each`` loops: reserve stock, then notify the customer with a ``ctx.once`` inside every item)
-> approval (``wait_for_event``) -> cool_off (``wf.sleep`` of 20 minutes) -> ship (a ``ctx.once``
booking the courier, and a multi-MB output that goes to the claim-check blob store).

Its effects go to :class:`Ledger` objects (bank, warehouse, mailer, courier) that stand for
external providers: thread-safe, deduplicating by idempotency key the way payment APIs do, and
counting every raw execution. The chaos test checks "money moved exactly once" from the world's
side, not only from the harness's counters.

:func:`expected_output` computes what a correct run returns from the order alone (no engine code).
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stepchain import RetryPolicy, StepContext, TerminalError, Workflow
from stepchain.testing import VirtualClock

WORKFLOW = "order-fulfilment"
SLEEP_S = 20 * 60  # longer than a Lambda invocation can live
WAIT_TIMEOUT_S = 7 * 86_400
#: pack's budget: 3 s while its items take 0.2-0.7 s each, so the step continues in fresh
#: invocations, sometimes between its two loops
PACK_TIMEOUT_S = 3
#: crashes count as attempts: enough for every crash a chaos plan injects into one node
RETRY = RetryPolicy(max_attempts=10, backoff_s=1.0, backoff_rate=2.0, max_backoff_s=60.0)
NAMES = ("ana", "bo", "chen", "dara", "eli", "fatou", "gus", "hana", "ivo", "juno")


class Ledger:
    """An external provider keyed by idempotency key (a bank, a warehouse ...).

    ``call(key, request, result)`` is one execution of the effect: it is counted in
    ``executions``; the first call for a key applies ``result`` and later calls return the applied
    result (the provider deduplicates). The same key with another request is recorded in
    ``conflicts`` (a real provider would reject it).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.applied: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.sequence: list[str] = []  # keys in the order they were applied
        self.executions: Counter[str] = Counter()
        self.conflicts: list[str] = []

    def call(self, key: str, request: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.executions[key] += 1
            if key in self.applied:
                first, applied = self.applied[key]
                if first != request:
                    self.conflicts.append(f"{self.name}: key {key!r} reused for {request} (first {first})")
                return dict(applied)
            self.applied[key] = (dict(request), dict(result))
            self.sequence.append(key)
            return dict(result)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.applied[k][0] for k in self.sequence]

    @property
    def reruns(self) -> int:
        """Executions beyond the first, per key, summed (the effect ran again)."""
        with self._lock:
            return sum(n - 1 for n in self.executions.values())


@dataclass
class World:
    """Everything outside the workflow that its steps touch."""

    clock: VirtualClock | None = None
    bank: Ledger = field(default_factory=lambda: Ledger("bank"))
    warehouse: Ledger = field(default_factory=lambda: Ledger("warehouse"))
    mailer: Ledger = field(default_factory=lambda: Ledger("mailer"))
    courier: Ledger = field(default_factory=lambda: Ledger("courier"))
    offline_skus: set[str] = field(default_factory=set)
    completed: Counter[str] = field(default_factory=Counter)  # finished item bodies: reserve, notify
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def spend(self, ms: int) -> None:
        """Work for ``ms`` of virtual time (past the invocation's deadline: the Lambda is killed)."""
        assert self.clock is not None, "World.clock is set when the harness is opened"
        self.clock.advance(ms)

    def done(self, what: str) -> None:
        with self._lock:
            self.completed[what] += 1

    def ledgers(self) -> tuple[Ledger, ...]:
        return (self.bank, self.warehouse, self.mailer, self.courier)


# -- what the providers answer (a pure function of the request, as real ones are to us) ----------
def txn_id(order_id: str, line: int) -> str:
    return "txn-" + hashlib.sha256(f"{order_id}/{line}".encode()).hexdigest()[:12]


def bin_of(sku: str) -> str:
    return f"B{int(hashlib.sha256(sku.encode()).hexdigest(), 16) % 97:02d}"


def msg_id(order_id: str, line: int) -> str:
    return "msg-" + hashlib.sha256(f"{order_id}/notice/{line}".encode()).hexdigest()[:10]


def tracking_of(order_id: str) -> str:
    return "trk-" + hashlib.sha256(f"{order_id}/parcel".encode()).hexdigest()[:10].upper()


def notice_text(line: int, qty: int, sku: str, where: str) -> str:
    return f"line {line}: {qty} x {sku} packed from bin {where}"


def manifest(order_id: str, size: int) -> str:
    """``size`` ASCII characters derived from the order: the large output (claim-checked)."""
    unit = hashlib.sha256(order_id.encode()).hexdigest()
    return (unit * (size // len(unit) + 1))[:size]


# -- the order (random per seed) -------------------------------------------------------------------
def make_order(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(2, 6)
    skus = rng.sample(range(1000, 10_000), n)
    return {
        "order_id": f"ord-{rng.randrange(16**10):010x}",
        "customer": rng.choice(NAMES),
        "manifest_bytes": rng.randint(1_500_000, 3_000_000),
        "lines": [
            {
                "sku": f"SKU-{sku}",
                "qty": rng.randint(1, 5),
                "price": rng.randint(99, 19_999),
                "work_ms": [rng.randint(200, 700), rng.randint(200, 700)],  # reserve, notify
            }
            for sku in skus
        ],
    }


def make_approval(rng: random.Random) -> dict[str, Any]:
    return {"approved": True, "by": rng.choice(NAMES), "note": f"ok-{rng.randrange(10**6):06d}"}


def expected_output(order: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
    """What a correct run returns, from the order and the approval alone."""
    oid = order["order_id"]
    lines = order["lines"]
    charges = [
        {"line": i, "sku": ln["sku"], "qty": ln["qty"], "amount": ln["qty"] * ln["price"], "txn": txn_id(oid, i)}
        for i, ln in enumerate(lines)
    ]
    reservations = [
        {"line": i, "sku": ln["sku"], "qty": ln["qty"], "bin": bin_of(ln["sku"])} for i, ln in enumerate(lines)
    ]
    notices = [
        {"line": i, "msg_id": msg_id(oid, i), "text": notice_text(i, ln["qty"], ln["sku"], bin_of(ln["sku"]))}
        for i, ln in enumerate(lines)
    ]
    return {
        "order_id": oid,
        "customer": order["customer"],
        "approval": approval,
        "charges": charges,
        "total": sum(c["amount"] for c in charges),
        "reservations": reservations,
        "notices": notices,
        "tracking": tracking_of(oid),
        "manifest": manifest(oid, order["manifest_bytes"]),
    }


# -- the workflow --------------------------------------------------------------------------------
def build(world: World) -> Workflow:
    """A fresh definition whose steps act on ``world`` (same name and version every time)."""
    wf = Workflow(WORKFLOW)

    @wf.step(retry=RETRY)
    def validate(ctx: StepContext, order: dict[str, Any]) -> dict[str, Any]:
        if not order.get("lines"):
            raise TerminalError("an order needs lines")
        return {
            "order_id": order["order_id"],
            "customer": order["customer"],
            "manifest_bytes": order["manifest_bytes"],
            "lines": [{"line": i, **ln} for i, ln in enumerate(order["lines"])],
        }

    @wf.step(retry=RETRY)
    def itemize(ctx: StepContext, order: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"order_id": order["order_id"], **ln} for ln in order["lines"]]

    @wf.map(max_concurrency=2, retry=RETRY)
    def charge(ctx: StepContext, line: dict[str, Any]) -> dict[str, Any]:
        i, amount = line["line"], line["qty"] * line["price"]
        request = {"order_id": line["order_id"], "line": i, "amount": amount}
        key = f"{ctx.idempotency_key}/charge"
        receipt = ctx.once(
            "charge", lambda: world.bank.call(key, request, {"txn": txn_id(line["order_id"], i), "amount": amount})
        )
        return {"line": i, "sku": line["sku"], "qty": line["qty"], "amount": receipt["amount"], "txn": receipt["txn"]}

    @wf.step(retry=RETRY, timeout_s=PACK_TIMEOUT_S)
    def pack(ctx: StepContext, charges: list[dict[str, Any]]) -> dict[str, Any]:
        order = ctx.output_of("validate")
        work = {ln["line"]: ln["work_ms"] for ln in order["lines"]}
        base = ctx.idempotency_key

        def reserve(c: dict[str, Any]) -> dict[str, Any]:
            if c["sku"] in world.offline_skus:
                raise TerminalError(f"warehouse offline for {c['sku']}")
            world.spend(work[c["line"]][0])
            request = {"line": c["line"], "sku": c["sku"], "qty": c["qty"]}
            got = world.warehouse.call(f"{base}/reserve/{c['line']}", request, {"bin": bin_of(c["sku"])})
            world.done("reserve")
            return {"line": c["line"], "sku": c["sku"], "qty": c["qty"], "bin": got["bin"]}

        reservations = ctx.each(charges, reserve)

        def notify(r: dict[str, Any]) -> dict[str, Any]:
            world.spend(work[r["line"]][1])
            text = notice_text(r["line"], r["qty"], r["sku"], r["bin"])
            key = f"{base}/notify/{r['line']}"
            answer = {"msg_id": msg_id(order["order_id"], r["line"])}
            # a once with a fixed name inside an each item: it must be per item
            sent = ctx.once("notify", lambda: world.mailer.call(key, {"line": r["line"], "text": text}, answer))
            world.done("notify")
            return {"line": r["line"], "msg_id": sent["msg_id"], "text": text}

        notices = ctx.each(reservations, notify)
        return {"reservations": reservations, "notices": notices}

    wf.wait_for_event("approval", timeout_s=WAIT_TIMEOUT_S)
    wf.sleep(SLEEP_S, name="cool_off")

    @wf.step(retry=RETRY)
    def ship(ctx: StepContext, approval: dict[str, Any]) -> dict[str, Any]:
        order = ctx.output_of("validate")
        charges = ctx.output_of("charge")
        packed = ctx.output_of("pack")
        oid = order["order_id"]
        request = {"order_id": oid, "parcels": len(order["lines"])}
        key = f"{ctx.idempotency_key}/book"
        booking = ctx.once("book", lambda: world.courier.call(key, request, {"tracking": tracking_of(oid)}))
        return {
            "order_id": oid,
            "customer": order["customer"],
            "approval": approval,
            "charges": charges,
            "total": sum(c["amount"] for c in charges),
            "reservations": packed["reservations"],
            "notices": packed["notices"],
            "tracking": booking["tracking"],
            "manifest": manifest(oid, order["manifest_bytes"]),
        }

    return wf
