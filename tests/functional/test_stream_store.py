"""The progress stream on the store port, on both adapters (the contract suite's fixtures):
gap-free sequence under concurrent writers, duplicates dropped by stable id, reads after a sequence."""

from __future__ import annotations

import random
import threading

import pytest
from tests.functional import test_store_contract as contract
from tests.functional.test_store_contract import T0, StoreUnderTest

from stepchain.exceptions import ValidationError
from stepchain.store.memory import MemoryStore
from stepchain.store.port import ABSENT
from stepchain.store.stream import BATCH, EmitBuffer, PendingEvent, append_events, encode_data, head, read_events

# the contract suite's fixtures: both adapters
moto, make_store, sut = contract.moto, contract.make_store, contract.sut


def ev(i: str, data: object = None) -> PendingEvent:
    return PendingEvent(i, "k", encode_data(data), "n", T0)


def test_append_is_gap_free_drops_known_ids_and_reads_after(sut: StoreUnderTest) -> None:
    store = sut.store
    assert head(store, "r") == 0 and read_events(store, "r") == []
    assert append_events(store, "r", [ev("a", 1), ev("b", 2)]) == 2
    # a re-run's copy of "b" is dropped; "c" is new; a stale hint (0) races and recovers
    assert append_events(store, "r", [ev("b", 2), ev("c", 3)], hint=0) == 3
    got = read_events(store, "r")
    assert [(e.seq, e.id, e.data) for e in got] == [(1, "a", 1), (2, "b", 2), (3, "c", 3)]
    assert [e.id for e in read_events(store, "r", after=1)] == ["b", "c"]
    assert [e.id for e in read_events(store, "r", after=1, limit=1)] == ["b"]
    assert read_events(store, "r", after=3) == []
    assert sut.raw("RUN#r", "EV#000000000001") is not None or sut.kind == "memory"


def test_more_than_one_transaction_of_events(sut: StoreUnderTest) -> None:
    events = [ev(f"e{i}", i) for i in range(BATCH * 2 + 3)]
    assert append_events(sut.store, "r", events) == len(events)
    assert append_events(sut.store, "r", events[-2:]) == len(events)  # duplicates: nothing written
    assert [e.data for e in read_events(sut.store, "r", limit=1000)] == list(range(len(events)))


def test_a_rerun_buffer_reads_its_node_ids_once_and_skips_them(sut: StoreUnderTest) -> None:
    first = EmitBuffer(sut.store, "r", "n", 0, lambda: T0)
    for i in range(3):
        first.emit("k", i, "")
    first.flush()
    again = EmitBuffer(sut.store, "r", "n", 0, lambda: T0, rerun=True)
    for i in range(5):
        again.emit("k", i, "")
    again.flush()
    assert [(e.seq, e.data) for e in read_events(sut.store, "r")] == [(i + 1, i) for i in range(5)]


def test_concurrent_writers_get_ordered_gap_free_sequences() -> None:
    """Eight writers (map items) append overlapping copies of their events at random: every event
    once, sequences 1..n, and each writer's events in its order (seeded, reproducible)."""
    store = MemoryStore()
    rng = random.Random(18)
    plans = {w: [ev(f"w{w}-{i}", [w, i]) for i in range(30)] for w in range(8)}
    chunks = {w: [plans[w][i : i + rng.randint(5, 8)] for i in range(0, 30, 5)] for w in plans}

    def writer(w: int) -> None:
        hint = None
        for chunk in chunks[w]:
            hint = append_events(store, "r", chunk, hint=hint)

    threads = [threading.Thread(target=writer, args=(w,)) for w in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_events(store, "r", limit=10_000)
    assert [e.seq for e in got] == list(range(1, 8 * 30 + 1))
    for w in plans:
        assert [e.data for e in got if e.data[0] == w] == [[w, i] for i in range(30)]


def test_emit_validation() -> None:
    buf = EmitBuffer(MemoryStore(), "r", "n", 0, lambda: T0)
    with pytest.raises(ValidationError):
        buf.emit("node.started", None, "")  # the engine's own kinds
    with pytest.raises(ValidationError):
        buf.emit("bad kind", None, "")
    with pytest.raises(ValidationError):
        buf.emit("k", {1, 2}, "")  # not JSON
    with pytest.raises(ValidationError):
        buf.emit("k", "x" * 20_000, "")


class _ConflictOnce:
    """A DynamoDB client stub whose first transaction is cancelled by a concurrent one."""

    def __init__(self) -> None:
        self.calls = 0

    def transact_write_items(self, **_: object) -> dict[str, object]:
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.calls == 1:
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}]
            error = {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}
            raise ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]
        return {}


def test_dynamodb_retries_a_transaction_cancelled_by_a_concurrent_one() -> None:
    from stepchain.store.dynamodb import DynamoDBStore

    client = _ConflictOnce()
    store = DynamoDBStore("t", client)  # type: ignore[arg-type]
    assert store._transact([({"pk": "p", "sk": "s"}, ABSENT)]) is None
    assert client.calls == 2
