"""The CheckpointStore contract: ONE suite, run against MemoryStore and DynamoDBStore (on moto).

Every test takes the ``store`` fixture, parametrized over both adapters, so a behaviour that differs
between them fails here. DynamoDB-only facts (one API call per operation, no second read on a lost
claim, TTL attributes) are checked through a botocore event counter and raw ``GetItem`` reads.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from stepchain.engine.fusion import IMPLIED
from stepchain.exceptions import IdempotencyConflict, StoreConflict
from stepchain.store.base import (
    CheckpointStore,
    ClaimKind,
    FinishResult,
    NewRun,
    NodeChanges,
    NodeInit,
    RunChanges,
)
from stepchain.store.dynamodb import DynamoDBStore, create_table, from_item, to_item
from stepchain.store.memory import MemoryStore
from stepchain.store.port import StorePort
from stepchain.store.records import (
    HISTORY_WINDOW,
    RUN_SK,
    CrashEvent,
    EachRecord,
    Invocation,
    NodeRecord,
    NodeStatus,
    OnceStart,
    RunStatus,
    each_sk,
    event_sk,
    history_sk,
    node_sk,
    once_sk,
    run_pk,
)
from stepchain.testing import moto_aws

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
RETENTION_S = 7 * 86400


@dataclass
class StoreUnderTest:
    """The adapter plus what the tests need to look underneath it."""

    kind: str
    store: CheckpointStore
    raw: Callable[[str, str], dict[str, Any] | None]
    calls: Counter[str]  # DynamoDB operations by name (empty for the memory adapter)


def _memory(retention_s: int | None) -> StoreUnderTest:
    store = MemoryStore(retention_s=retention_s)

    def raw(pk: str, sk: str) -> dict[str, Any] | None:
        item = store._items.get((pk, sk))
        return None if item is None else dict(item)

    return StoreUnderTest("memory", store, raw, Counter())


@dataclass
class MotoSession:
    client: Any  # the adapter's client; every call it makes is counted in ``calls``
    peek: Any  # a second client for the tests' own reads (not counted)
    calls: Counter[str]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSession]:
    """One mock_aws (no AWS_ENDPOINT_URL, fake credentials) for the module; each store gets its own table."""
    import boto3

    with moto_aws():
        assert "AWS_ENDPOINT_URL" not in os.environ
        client = boto3.client("dynamodb", region_name="us-east-1")
        session = MotoSession(client, boto3.client("dynamodb", region_name="us-east-1"), Counter())

        def count(event_name: str, **_: Any) -> None:
            session.calls[event_name.rsplit(".", 1)[1]] += 1

        client.meta.events.register("before-call.dynamodb.*", count)
        yield session


_tables = itertools.count()


def _dynamodb(moto: MotoSession, retention_s: int | None) -> StoreUnderTest:
    table = f"contract-{next(_tables)}"
    create_table(moto.client, table)

    def raw(pk: str, sk: str) -> dict[str, Any] | None:
        resp = moto.peek.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True)
        return None if "Item" not in resp else from_item(resp["Item"])

    moto.calls.clear()
    return StoreUnderTest("dynamodb", DynamoDBStore(table, moto.client, retention_s=retention_s), raw, moto.calls)


@pytest.fixture(params=["memory", "dynamodb"])
def make_store(request: pytest.FixtureRequest) -> Callable[..., StoreUnderTest]:
    """``make_store(retention_s)``: a fresh, empty store of the parametrized adapter."""
    if request.param == "dynamodb":
        moto: MotoSession = request.getfixturevalue("moto")
        return lambda retention_s=RETENTION_S: _dynamodb(moto, retention_s)
    return lambda retention_s=RETENTION_S: _memory(retention_s)


@pytest.fixture
def sut(make_store: Callable[..., StoreUnderTest]) -> StoreUnderTest:
    return make_store()


# ------------------------------------------------------------------------------------ helpers
def new_run(
    run_id: str = "run1",
    *,
    workflow: str = "wf",
    now: int = T0,
    key: str | None = None,
    request_hash: str | None = None,
    first: str = "plan",
    extra: dict[str, Any] | None = None,
) -> NewRun:
    return NewRun(
        run_id,
        workflow,
        "v1",
        '{"v":1}',
        now,
        NodeInit(run_id, first, first, '{"v":1}'),
        idempotency_key=key,
        request_hash=request_hash,
        extra=extra or {},
    )


def claim(store: CheckpointStore, key: str, *, run_id: str = "run1", owner: str = "w1", now: int = T0) -> Any:
    node, _, idx = key.partition("#")
    return store.claim(
        run_id,
        key,
        node=node,
        index=int(idx) if idx else None,
        owner=owner,
        now_ms=now,
        lease_until_ms=now + 10_000,
    )


def put_in_status(store: CheckpointStore, key: str, status: NodeStatus, *, run_id: str = "run1") -> None:
    """A node in ``status``: created PENDING, then claimed and finished into the status if needed."""
    assert store.put_node_if_absent(NodeInit(run_id, key, key.partition("#")[0], '{"v":0}'), T0)
    if status is NodeStatus.PENDING:
        return
    assert claim(store, key, run_id=run_id).kind is ClaimKind.CLAIMED
    if status is not NodeStatus.RUNNING:
        assert store.finish(run_id, key, NodeChanges(status, T0 + 1), owner="w1") is FinishResult.OK


# ------------------------------------------------------------------------------------ create_run
def test_create_run_writes_run_and_first_node(sut: StoreUnderTest) -> None:
    run, created = sut.store.create_run(new_run(extra={"trace": "abc"}))
    assert created is True
    assert (run.run_id, run.workflow, run.version, run.status) == ("run1", "wf", "v1", RunStatus.RUNNING)
    assert (run.created_ms, run.updated_ms, run.current, run.input_ref) == (T0, T0, "plan", '{"v":1}')
    assert run.idempotency_key is None and run.crash_events == () and run.redrives == 0
    assert sut.store.get_run("run1") == run
    node = sut.store.get_node("run1", "plan")
    assert node is not None
    assert (node.status, node.input_ref, node.attempts, node.invocations, node.index) == (
        NodeStatus.PENDING,
        '{"v":1}',
        1,
        0,
        None,
    )
    assert sut.raw(run_pk("run1"), RUN_SK)["trace"] == "abc"  # type: ignore[index]
    assert sut.store.get_run("nope") is None
    assert sut.store.get_node("run1", "nope") is None


def test_create_run_same_idempotency_key_and_hash_returns_the_first_run(sut: StoreUnderTest) -> None:
    first, created = sut.store.create_run(new_run("run1", key="k1", request_hash="h1"))
    assert created is True and first.idempotency_key == "k1"
    again, created2 = sut.store.create_run(new_run("run2", key="k1", request_hash="h1", now=T0 + 5))
    assert created2 is False
    assert again.run_id == "run1" and again.created_ms == T0
    assert sut.store.get_run("run2") is None  # nothing of the second request was written
    assert sut.store.get_node("run2", "plan") is None
    assert [r.run_id for r in sut.store.list_runs("wf").runs] == ["run1"]


def test_create_run_same_idempotency_key_different_hash_conflicts(sut: StoreUnderTest) -> None:
    sut.store.create_run(new_run("run1", key="k1", request_hash="h1"))
    with pytest.raises(IdempotencyConflict):
        sut.store.create_run(new_run("run2", key="k1", request_hash="h2"))
    assert sut.store.get_run("run2") is None


def test_idempotency_keys_are_per_workflow(sut: StoreUnderTest) -> None:
    _, a = sut.store.create_run(new_run("run1", workflow="wf-a", key="k", request_hash="h1"))
    _, b = sut.store.create_run(new_run("run2", workflow="wf-b", key="k", request_hash="h2"))
    assert a is True and b is True


def test_idempotency_keys_are_per_owner(sut: StoreUnderTest) -> None:
    """Caller B's key never returns caller A's run, nor conflicts with it (issue 11.1)."""
    owned = lambda run_id, owner, h: dataclasses.replace(new_run(run_id, key="k", request_hash=h), owner=owner)  # noqa: E731
    run_a, created_a = sut.store.create_run(owned("run1", "alice", "h1"))
    run_b, created_b = sut.store.create_run(owned("run2", "bob", "h2"))  # same key, another body: no 409
    assert created_a and created_b and (run_a.owner, run_b.owner) == ("alice", "bob")
    again, created = sut.store.create_run(owned("run3", "bob", "h2"))
    assert not created and again.run_id == "run2"
    with pytest.raises(IdempotencyConflict):
        sut.store.create_run(owned("run4", "alice", "h2"))
    _, unowned = sut.store.create_run(new_run("run5", key="k", request_hash="h9"))  # no owner: its own scope
    assert unowned


def test_list_runs_by_owner_returns_that_callers_runs_only_in_pages(sut: StoreUnderTest) -> None:
    for i in range(7):
        owner = ("alice", "bob", None)[i % 3]
        sut.store.create_run(dataclasses.replace(new_run(f"run{i}", now=T0 + i), owner=owner))
    mine = sut.store.list_runs("wf", owner="alice", limit=2)
    assert [r.run_id for r in mine.runs] == ["run6", "run3"] and mine.cursor is not None
    rest = sut.store.list_runs("wf", owner="alice", limit=2, cursor=mine.cursor)
    assert [r.run_id for r in rest.runs] == ["run0"] and rest.cursor is None
    assert {r.run_id for r in sut.store.list_runs("wf", owner="bob").runs} == {"run1", "run4"}
    assert len(sut.store.list_runs("wf", limit=20).runs) == 7  # no owner: every run (operators)
    assert sut.store.list_runs("wf", owner="carol").runs == []
    # another caller's cursor never pages through the first caller's runs (DynamoDB refuses it)
    try:
        stolen = sut.store.list_runs("wf", owner="bob", limit=2, cursor=mine.cursor)
    except ValueError:
        assert isinstance(sut.store, DynamoDBStore)
    else:
        assert {r.owner for r in stolen.runs} <= {"bob"}


def test_spend_token_is_single_use(sut: StoreUnderTest) -> None:
    sut.store.create_run(new_run("run1"))
    assert sut.store.spend_token("run1", "t1", T0, T0 // 1000 + 60) is True
    assert sut.store.spend_token("run1", "t1", T0 + 1, T0 // 1000 + 60) is False
    assert sut.store.spend_token("run1", "t2", T0, T0 // 1000 + 60) is True


# ------------------------------------------------------------------------------------ claim
def test_claim_of_absent_node_creates_and_claims_it(sut: StoreUnderTest) -> None:
    res = sut.store.claim("run1", "m#00003", node="m", index=3, owner="w1", now_ms=T0, lease_until_ms=T0 + 9000)
    assert res.kind is ClaimKind.CLAIMED and res.record is not None
    rec = res.record
    assert (rec.run_id, rec.key, rec.node, rec.index) == ("run1", "m#00003", "m", 3)
    assert (rec.status, rec.owner, rec.lease_until_ms) == (NodeStatus.RUNNING, "w1", T0 + 9000)
    assert (rec.attempts, rec.invocations, rec.crashes) == (1, 1, 0)
    assert (rec.started_ms, rec.current_started_ms, rec.created_ms) == (T0, T0, T0)
    assert sut.store.get_node("run1", "m#00003") == rec


@pytest.mark.parametrize("status", [NodeStatus.PENDING, NodeStatus.CONTINUING, NodeStatus.RETRYING])
def test_claimable_statuses_are_claimed(sut: StoreUnderTest, status: NodeStatus) -> None:
    put_in_status(sut.store, "step", status)
    before = sut.store.get_node("run1", "step")
    assert before is not None and before.status is status
    res = claim(sut.store, "step", owner="w2", now=T0 + 100)
    assert res.kind is ClaimKind.CLAIMED and res.record is not None
    rec = res.record
    assert (rec.status, rec.owner, rec.lease_until_ms) == (NodeStatus.RUNNING, "w2", T0 + 10_100)
    assert rec.input_ref == before.input_ref == '{"v":0}'  # the claim keeps the node's input
    assert rec.invocations == before.invocations + 1
    assert rec.attempts == before.attempts  # a claim is not an attempt of its own
    assert rec.current_started_ms == T0 + 100
    # ``started`` is the first claim ever; a later claim (continuation, retry) keeps it
    assert rec.started_ms == (T0 + 100 if status is NodeStatus.PENDING else T0)


def test_claim_of_running_node_is_busy_and_returns_the_record_without_a_second_read(sut: StoreUnderTest) -> None:
    assert claim(sut.store, "step", owner="w1").kind is ClaimKind.CLAIMED
    sut.calls.clear()
    res = claim(sut.store, "step", owner="w2", now=T0 + 1)
    assert res.kind is ClaimKind.BUSY and res.record is not None
    assert (res.record.status, res.record.owner, res.record.lease_until_ms) == (NodeStatus.RUNNING, "w1", T0 + 10_000)
    assert res.record.invocations == 1  # the lost claim changed nothing
    if sut.kind == "dynamodb":
        assert sut.calls == Counter({"UpdateItem": 1}), sut.calls  # ALL_OLD came back with the failure


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (NodeStatus.SUCCEEDED, ClaimKind.DONE),
        (NodeStatus.FAILED, ClaimKind.GONE),
        (NodeStatus.CANCELLED, ClaimKind.GONE),
        (NodeStatus.SLEEPING, ClaimKind.BUSY),
        (NodeStatus.WAITING, ClaimKind.BUSY),
        (NodeStatus.FANNED_OUT, ClaimKind.BUSY),
    ],
)
def test_claim_of_unclaimable_node_reports_its_state(sut: StoreUnderTest, status: NodeStatus, kind: ClaimKind) -> None:
    put_in_status(sut.store, "step", status)
    sut.calls.clear()
    res = claim(sut.store, "step", owner="w9")
    assert res.kind is kind
    assert res.record is not None and res.record.status is status and res.record.owner is None
    after = sut.store.get_node("run1", "step")
    assert after is not None and after.status is status and after.invocations == 1
    if sut.kind == "dynamodb":
        assert sut.calls == Counter({"UpdateItem": 1, "GetItem": 1}), sut.calls  # 1 GetItem: our get_node


def test_claim_of_cancelled_tombstone_is_gone(sut: StoreUnderTest) -> None:
    sut.store.put_node_if_absent(NodeInit("run1", "later", "later", None, status=NodeStatus.CANCELLED), T0)
    res = claim(sut.store, "later")
    assert res.kind is ClaimKind.GONE and res.record is not None and res.record.status is NodeStatus.CANCELLED
    assert res.record.input_ref is None


# ------------------------------------------------------------------------------------ takeover
def _running(sut: StoreUnderTest) -> Any:
    res = sut.store.claim("run1", "step", node="step", index=None, owner="dead", now_ms=T0, lease_until_ms=T0 + 5000)
    assert res.kind is ClaimKind.CLAIMED
    return res.record


def test_takeover_after_lease_expiry_counts_a_crash_and_an_attempt(sut: StoreUnderTest) -> None:
    stale = _running(sut)
    now = T0 + 5001
    res = sut.store.takeover("run1", "step", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 7000)
    assert res.kind is ClaimKind.CLAIMED and res.record is not None
    rec = res.record
    assert (rec.status, rec.owner, rec.lease_until_ms, rec.current_started_ms) == (
        NodeStatus.RUNNING,
        "w2",
        now + 7000,
        now,
    )
    assert (rec.attempts, rec.invocations, rec.crashes) == (2, 2, 1)
    assert rec.history == (Invocation(T0, T0 + 5000, "crashed"),)
    assert rec.started_ms == T0
    assert sut.store.get_node("run1", "step") == rec


def test_takeover_refused_while_the_lease_is_live(sut: StoreUnderTest) -> None:
    stale = _running(sut)
    for now in (T0 + 1, T0 + 5000):  # the lease ends *after* lease_until: equal is still live
        res = sut.store.takeover("run1", "step", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 7000)
        assert res.kind is ClaimKind.BUSY and res.record is not None and res.record.owner == "dead"
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and (rec.owner, rec.attempts, rec.crashes, rec.history) == ("dead", 1, 0, ())


def test_takeover_refused_when_the_owner_changed(sut: StoreUnderTest) -> None:
    stale = _running(sut)
    now = T0 + 6000
    first = sut.store.takeover("run1", "step", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 1)
    assert first.kind is ClaimKind.CLAIMED
    # a second worker that read the same stale record loses, even though w2's lease is over too
    later = now + 10
    res = sut.store.takeover("run1", "step", stale=stale, owner="w3", now_ms=later, lease_until_ms=later + 7000)
    assert res.kind is ClaimKind.BUSY and res.record is not None and res.record.owner == "w2"
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and (rec.attempts, rec.crashes, len(rec.history)) == (2, 1, 1)


def test_takeover_of_finished_node_reports_it(sut: StoreUnderTest) -> None:
    stale = _running(sut)
    assert sut.store.finish("run1", "step", NodeChanges(NodeStatus.SUCCEEDED, T0 + 1), owner="dead") is FinishResult.OK
    now = T0 + 9000
    res = sut.store.takeover("run1", "step", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 1)
    assert res.kind is ClaimKind.DONE
    missing = sut.store.takeover("run1", "ghost", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 1)
    assert missing.kind is ClaimKind.GONE and missing.record is None


# ------------------------------------------------------------------------------------ extend_lease (heartbeat)
def test_extend_lease_moves_the_owners_lease_and_lets_a_takeover_wait_for_it(sut: StoreUnderTest) -> None:
    stale = _running(sut)  # owner "dead", lease T0 + 5000
    assert sut.store.extend_lease("run1", "step", owner="dead", lease_until_ms=T0 + 20_000) is True
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and (rec.status, rec.owner, rec.lease_until_ms) == (NodeStatus.RUNNING, "dead", T0 + 20_000)
    assert (rec.attempts, rec.invocations, rec.crashes) == (1, 1, 0)  # a heartbeat is not an invocation
    now = T0 + 6000  # past the claim's lease, inside the extended one: no takeover
    res = sut.store.takeover("run1", "step", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 1)
    assert res.kind is ClaimKind.BUSY and res.record is not None and res.record.lease_until_ms == T0 + 20_000


def test_extend_lease_is_refused_after_a_takeover_a_finish_or_for_a_missing_node(sut: StoreUnderTest) -> None:
    stale = _running(sut)
    now = T0 + 5001
    assert sut.store.takeover("run1", "step", stale=stale, owner="w2", now_ms=now, lease_until_ms=now + 100).kind is (
        ClaimKind.CLAIMED
    )
    # the old owner's late heartbeat changes nothing: the new owner keeps its lease
    assert sut.store.extend_lease("run1", "step", owner="dead", lease_until_ms=T0 + 99_000) is False
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and (rec.owner, rec.lease_until_ms) == ("w2", now + 100)
    assert sut.store.finish("run1", "step", NodeChanges(NodeStatus.SUCCEEDED, now + 1), owner="w2") is FinishResult.OK
    assert sut.store.extend_lease("run1", "step", owner="w2", lease_until_ms=T0 + 99_000) is False
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.status is NodeStatus.SUCCEEDED and rec.lease_until_ms != T0 + 99_000
    assert sut.store.extend_lease("run1", "ghost", owner="w2", lease_until_ms=T0 + 99_000) is False
    assert sut.store.get_node("run1", "ghost") is None  # the refused write created nothing


# ------------------------------------------------------------------------------------ finish
def test_finish_checkpoints_and_releases_the_lease(sut: StoreUnderTest) -> None:
    claim(sut.store, "step", owner="w1")
    inv = Invocation(T0, T0 + 300, "succeeded")
    changes = NodeChanges(NodeStatus.SUCCEEDED, T0 + 300, output_ref='{"v":"out"}', invocation=inv, ended=True)
    assert sut.store.finish("run1", "step", changes, owner="w1") is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None
    assert (rec.status, rec.output_ref, rec.owner, rec.lease_until_ms, rec.ended_ms) == (
        NodeStatus.SUCCEEDED,
        '{"v":"out"}',
        None,
        0,
        T0 + 300,
    )
    assert rec.history == (inv,)
    assert rec.input_ref is None  # fields not in the changes stay as they were


def test_finish_is_lost_for_another_owner_a_wrong_status_or_a_missing_node(sut: StoreUnderTest) -> None:
    claim(sut.store, "step", owner="w1")
    done = NodeChanges(NodeStatus.SUCCEEDED, T0 + 1, output_ref='{"v":1}')
    assert sut.store.finish("run1", "step", done, owner="w2") is FinishResult.LOST
    assert sut.store.finish("run1", "step", done, owner="w1", expect=(NodeStatus.WAITING,)) is FinishResult.LOST
    assert sut.store.finish("run1", "ghost", done) is FinishResult.LOST
    assert sut.store.get_node("run1", "ghost") is None  # a lost finish never creates the node
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and (rec.status, rec.owner, rec.output_ref) == (NodeStatus.RUNNING, "w1", None)
    # without an owner the status alone decides; a second finish of the same transition is lost
    assert sut.store.finish("run1", "step", done) is FinishResult.OK
    assert sut.store.finish("run1", "step", done) is FinishResult.LOST


def test_finish_with_expect_moves_a_non_running_node(sut: StoreUnderTest) -> None:
    put_in_status(sut.store, "wait", NodeStatus.WAITING)
    changes = NodeChanges(NodeStatus.SUCCEEDED, T0 + 5, output_ref='{"v":"evt"}', ended=True)
    assert sut.store.finish("run1", "wait", changes) is FinishResult.LOST  # default expect: RUNNING
    assert sut.store.finish("run1", "wait", changes, expect=(NodeStatus.WAITING,)) is FinishResult.OK
    rec = sut.store.get_node("run1", "wait")
    assert rec is not None and rec.status is NodeStatus.SUCCEEDED and rec.output_ref == '{"v":"evt"}'


def test_finish_sets_optional_fields_and_clears_the_error(sut: StoreUnderTest) -> None:
    claim(sut.store, "step", owner="w1")
    err = {"node": "step", "type": "Boom", "message": "x"}
    retrying = NodeChanges(
        NodeStatus.RETRYING,
        T0 + 1,
        error=err,
        attempts=2,
        wake_at_ms=T0 + 2000,
        event_name="approve",
        task_token="tok",
        items_total=7,
        input_ref='{"v":"in2"}',
    )
    assert sut.store.finish("run1", "step", retrying, owner="w1") is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None
    assert (rec.status, rec.error, rec.attempts, rec.wake_at_ms) == (NodeStatus.RETRYING, err, 2, T0 + 2000)
    assert (rec.event_name, rec.task_token, rec.items_total, rec.input_ref) == ("approve", "tok", 7, '{"v":"in2"}')
    claim(sut.store, "step", owner="w2", now=T0 + 2000)  # the retry is due
    cleared = NodeChanges(NodeStatus.SUCCEEDED, T0 + 3, clear_error=True, output_ref='{"v":2}')
    assert sut.store.finish("run1", "step", cleared, owner="w2") is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.error is None and rec.attempts == 2


def test_a_retrying_node_is_claimed_only_from_its_wake_at(sut: StoreUnderTest) -> None:
    """An early activation (a duplicate, a sweeper re-issue) does not start a retry before its delay:
    the claim fails BUSY with the RETRYING record (its wake_at) until then, in one conditional write."""
    claim(sut.store, "step", owner="w1")
    retrying = NodeChanges(NodeStatus.RETRYING, T0 + 1, attempts=2, wake_at_ms=T0 + 2000)
    assert sut.store.finish("run1", "step", retrying, owner="w1") is FinishResult.OK
    early = claim(sut.store, "step", owner="w2", now=T0 + 1999)
    assert early.kind is ClaimKind.BUSY and early.record.status is NodeStatus.RETRYING
    assert early.record.wake_at_ms == T0 + 2000
    due = claim(sut.store, "step", owner="w3", now=T0 + 2000)
    assert due.kind is ClaimKind.CLAIMED and due.record.owner == "w3"
    # a RETRYING node without a wake_at (a step its budget holds) is claimable at any time
    held = NodeChanges(NodeStatus.RETRYING, T0 + 2001, attempts=2)
    claim(sut.store, "other", owner="w1")
    assert sut.store.finish("run1", "other", held, owner="w1") is FinishResult.OK
    assert claim(sut.store, "other", owner="w2", now=T0 + 2002).kind is ClaimKind.CLAIMED


def test_finish_with_a_new_error_and_clear_error_keeps_the_new_error(sut: StoreUnderTest) -> None:
    """``clear_error`` drops the *previous* error; an error given in the same changes is the new one."""
    claim(sut.store, "step", owner="w1")
    old = {"node": "step", "type": "Old", "message": "old"}
    assert sut.store.finish("run1", "step", NodeChanges(NodeStatus.RETRYING, T0, error=old)) is FinishResult.OK
    new = {"node": "step", "type": "New", "message": "new"}
    changes = NodeChanges(NodeStatus.FAILED, T0 + 1, error=new, clear_error=True)
    assert sut.store.finish("run1", "step", changes, expect=(NodeStatus.RETRYING,)) is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.error == new
    sut.store.create_run(new_run())
    sut.store.update_run("run1", RunChanges(T0, status=RunStatus.FAILED, error=old), expect=(RunStatus.RUNNING,))
    run = sut.store.update_run("run1", RunChanges(T0 + 1, error=new, clear_error=True), expect=(RunStatus.FAILED,))
    assert run is not None and run.error == new


def test_finish_accumulates_the_ledger(sut: StoreUnderTest) -> None:
    claim(sut.store, "step", owner="w1")
    first = NodeChanges(
        NodeStatus.CONTINUING,
        T0 + 1000,
        add_duration_ms=1000,
        add_cost_nano=1_500_000,
        add_input_tokens=100,
        add_output_tokens=10,
        invocation=Invocation(T0, T0 + 1000, "continued"),
    )
    assert sut.store.finish("run1", "step", first, owner="w1") is FinishResult.OK
    claim(sut.store, "step", owner="w2", now=T0 + 1000)
    second = NodeChanges(
        NodeStatus.SUCCEEDED,
        T0 + 1750,
        add_duration_ms=750,
        add_cost_nano=2_000_000_000,
        add_input_tokens=5,
        add_output_tokens=0,
        invocation=Invocation(T0 + 1000, T0 + 1750, "succeeded"),
        ended=True,
    )
    assert sut.store.finish("run1", "step", second, owner="w2") is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None
    assert rec.duration_ms == 1750
    assert rec.cost_usd == pytest.approx(2.0015)
    assert (rec.input_tokens, rec.output_tokens, rec.invocations) == (105, 10, 2)
    assert [h.outcome for h in rec.history] == ["continued", "succeeded"]
    assert rec.history[1] == Invocation(T0 + 1000, T0 + 1750, "succeeded")


def test_finish_adds_step_local_counters_and_starts_a_new_generation(sut: StoreUnderTest) -> None:
    sut.store.create_run(new_run())
    claim(sut.store, "s")
    changes = NodeChanges(NodeStatus.CONTINUING, T0 + 1, add_checkpoint_hits=3, add_effect_reruns=1)
    assert sut.store.finish("run1", "s", changes, owner="w1") is FinishResult.OK
    claim(sut.store, "s", owner="w2")
    failed = NodeChanges(NodeStatus.FAILED, T0 + 2, add_checkpoint_hits=2)
    assert sut.store.finish("run1", "s", failed, owner="w2") is FinishResult.OK
    rec = sut.store.get_node("run1", "s")
    assert rec is not None and (rec.checkpoint_hits, rec.effect_reruns, rec.generation) == (5, 1, 0)
    redrive = NodeChanges(NodeStatus.PENDING, T0 + 3, new_generation=True)
    assert sut.store.finish("run1", "s", redrive, expect=(NodeStatus.FAILED,)) is FinishResult.OK
    rec = sut.store.get_node("run1", "s")
    assert rec is not None and rec.generation == 1
    claimed = claim(sut.store, "s", owner="w3")
    assert claimed.record is not None and claimed.record.generation == 1  # the claim returns it


def test_add_checkpoint_hit_counts(sut: StoreUnderTest) -> None:
    put_in_status(sut.store, "step", NodeStatus.SUCCEEDED)
    sut.store.add_checkpoint_hit("run1", "step")
    sut.store.add_checkpoint_hit("run1", "step")
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.checkpoint_hits == 2 and rec.status is NodeStatus.SUCCEEDED


def test_counters_on_missing_items_are_no_ops(sut: StoreUnderTest) -> None:
    """Both adapters treat a checkpoint hit / crash event on a missing item the same way: ignored."""
    sut.store.add_checkpoint_hit("run1", "ghost")
    sut.store.add_crash_event("ghost-run", T0, "step", "takeover")
    assert sut.store.get_node("run1", "ghost") is None
    assert sut.store.get_run("ghost-run") is None


# ------------------------------------------------------------------------------------ nodes
def test_put_node_if_absent_never_overwrites(sut: StoreUnderTest) -> None:
    init = NodeInit("run1", "m#00000", "m", '{"v":"a"}', index=0)
    assert sut.store.put_node_if_absent(init, T0) is True
    claim(sut.store, "m#00000", owner="w1")
    assert sut.store.put_node_if_absent(NodeInit("run1", "m#00000", "m", '{"v":"b"}', index=0), T0 + 1) is False
    rec = sut.store.get_node("run1", "m#00000")
    assert rec is not None and (rec.status, rec.input_ref, rec.owner, rec.index) == (
        NodeStatus.RUNNING,
        '{"v":"a"}',
        "w1",
        0,
    )


def test_list_nodes_by_prefix_in_key_order(sut: StoreUnderTest) -> None:
    sut.store.create_run(new_run())
    for i in (10, 2, 0, 1):
        sut.store.put_node_if_absent(NodeInit("run1", f"m#{i:05d}", "m", f'{{"v":{i}}}', index=i), T0)
    sut.store.put_node_if_absent(NodeInit("run1", "m", "m", None), T0)
    sut.store.put_node_if_absent(NodeInit("run1", "mx", "mx", None), T0)
    # other item kinds in the same partition are not nodes
    sut.store.put_each("run1", "m", "each", EachRecord(0, '{"v":0}', 1, T0))
    sut.store.put_once("run1", "m", "llm", '{"v":0}', T0)
    sut.store.put_event("run1", "approve", '{"v":0}', T0)
    sut.store.create_run(new_run("run2"))  # another run's nodes are not listed

    items = sut.store.list_nodes("run1", "m#")
    assert [r.key for r in items] == ["m#00000", "m#00001", "m#00002", "m#00010"]
    assert [r.index for r in items] == [0, 1, 2, 10]
    assert [r.input_ref for r in items] == ['{"v":0}', '{"v":1}', '{"v":2}', '{"v":10}']
    assert [r.key for r in sut.store.list_nodes("run1")] == [
        "m",
        "m#00000",
        "m#00001",
        "m#00002",
        "m#00010",
        "mx",
        "plan",
    ]
    assert [r.key for r in sut.store.list_nodes("run1", "m")] == ["m", "m#00000", "m#00001", "m#00002", "m#00010", "mx"]
    assert sut.store.list_nodes("run1", "zzz") == []
    assert sut.store.list_nodes("no-run") == []


# ------------------------------------------------------------------------------------ each / once / events
def test_each_checkpoints_are_written_once_and_listed_by_index(sut: StoreUnderTest) -> None:
    recs = [EachRecord(i, f'{{"v":{i}}}', 10 * i, T0 + i, loop="@1") for i in (11, 0, 2)]
    for rec in recs:
        assert sut.store.put_each("run1", "m#00001", "@1", rec) is True
    assert sut.store.put_each("run1", "m#00001", "@1", EachRecord(2, '{"v":"dup"}', 999, T0 + 9)) is False
    sut.store.put_each("run1", "m#00001", "pages", EachRecord(0, '{"v":"p"}', 5, T0))
    sut.store.put_each("run1", "m", "@1", EachRecord(0, '{"v":"parent"}', 7, T0))
    listed = sut.store.list_each("run1", "m#00001", "@1")
    assert listed == sorted(recs, key=lambda r: r.index)
    assert listed[1] == EachRecord(2, '{"v":2}', 20, T0 + 2, loop="@1")  # the duplicate changed nothing
    assert sut.store.list_each("run1", "m#00001", "pages") == [EachRecord(0, '{"v":"p"}', 5, T0, loop="pages")]
    assert sut.store.list_each("run1", "m#00002", "@1") == []
    everything = sut.store.list_each_all("run1")
    assert set(everything) == {"m#00001", "m"}
    assert [r.index for r in everything["m#00001"]] == [0, 2, 11, 0]  # loop "@1", then "pages"
    assert everything["m"] == [EachRecord(0, '{"v":"parent"}', 7, T0, loop="@1")]
    assert sut.store.list_each_all("run2") == {}


def test_each_records_carry_slowest_and_fingerprint_and_are_scoped_by_generation(sut: StoreUnderTest) -> None:
    rec = EachRecord(3, '{"v":3}', 40, T0, slowest_ms=90, fingerprint="abcd", loop="@2/1/@1")
    assert sut.store.put_each("run1", "s", "@2/1/@1", rec) is True
    assert sut.store.list_each("run1", "s", "@2/1/@1") == [rec]
    # a new generation (a redrive that discards progress) sees nothing of the old one, and vice versa
    assert sut.store.list_each("run1", "s", "@2/1/@1", generation=1) == []
    new = EachRecord(3, '{"v":"new"}', 1, T0, loop="@2/1/@1", generation=1)
    assert sut.store.put_each("run1", "s", "@2/1/@1", new, generation=1) is True
    assert sut.store.list_each("run1", "s", "@2/1/@1", generation=1) == [new]
    assert sut.store.list_each("run1", "s", "@2/1/@1") == [rec]
    assert sut.store.list_each_all("run1") == {"s": [rec, new]}
    # a nested loop's items never show up in its parent's loop (prefix ends at the id)
    assert sut.store.list_each("run1", "s", "@2") == []


def test_last_each_reads_only_the_highest_index(sut: StoreUnderTest) -> None:
    assert sut.store.last_each("run1", "s", "@1") is None
    for i in (0, 1, 2, 9, 10, 11):
        sut.store.put_each("run1", "s", "@1", EachRecord(i, f'{{"v":{i}}}', i, T0 + i, slowest_ms=100 + i))
    sut.store.put_each("run1", "s", "@10", EachRecord(50, '{"v":50}', 1, T0))  # another loop: not seen
    sut.store.put_each("run1", "s", "@1/11/@1", EachRecord(70, '{"v":70}', 1, T0))  # a nested loop: not seen
    sut.calls.clear()
    last = sut.store.last_each("run1", "s", "@1")
    assert last == EachRecord(11, '{"v":11}', 11, T0 + 11, slowest_ms=111, loop="@1")
    if sut.kind == "dynamodb":  # one Query that returns one item
        assert sut.calls == Counter({"Query": 1})
    assert sut.store.last_each("run1", "s", "@1", generation=1) is None


def test_a_loop_summary_is_what_last_each_finds_and_is_not_an_item(sut: StoreUnderTest) -> None:
    for i in range(3):
        sut.store.put_each("run1", "s", "@1", EachRecord(i, f'{{"v":{i}}}', 5, T0 + i))
    summary = EachRecord(2, '{"v":[0,1,2]}', 0, T0 + 9, slowest_ms=5, fingerprint="ff", complete=True)
    assert sut.store.put_each("run1", "s", "@1", summary) is True
    assert sut.store.put_each("run1", "s", "@1", summary) is False
    assert sut.store.last_each("run1", "s", "@1") == EachRecord(
        2, '{"v":[0,1,2]}', 0, T0 + 9, slowest_ms=5, fingerprint="ff", loop="@1", complete=True
    )
    assert [r.index for r in sut.store.list_each("run1", "s", "@1")] == [0, 1, 2]
    assert [r.index for r in sut.store.list_each_all("run1")["s"]] == [0, 1, 2]


def test_put_once_returns_the_first_winner(sut: StoreUnderTest) -> None:
    assert sut.store.get_once("run1", "step", "llm") is None
    assert sut.store.put_once("run1", "step", "llm", '{"v":"first"}', T0) == '{"v":"first"}'
    assert sut.store.put_once("run1", "step", "llm", '{"v":"second"}', T0 + 1) == '{"v":"first"}'
    assert sut.store.get_once("run1", "step", "llm") == '{"v":"first"}'
    assert sut.store.put_once("run1", "step", "other", '{"v":"x"}', T0) == '{"v":"x"}'
    assert sut.store.get_once("run1", "step2", "llm") is None
    assert sut.store.get_once("run1", "step", "llm", generation=1) is None


def test_start_once_marks_in_progress_then_reports_a_restart_or_the_result(sut: StoreUnderTest) -> None:
    first = sut.store.start_once("run1", "s", "@1/0/charge", owner="w1", now_ms=T0)
    assert first == OnceStart()  # fresh: run the effect
    assert sut.store.get_once("run1", "s", "@1/0/charge") is None  # a marker is not a result
    again = sut.store.start_once("run1", "s", "@1/0/charge", owner="w2", now_ms=T0 + 5)
    assert again == OnceStart(restarted=True, previous_owner="w1")  # w1 started it and never checkpointed
    assert sut.store.put_once("run1", "s", "@1/0/charge", '{"v":"paid"}', T0 + 6) == '{"v":"paid"}'
    done = sut.store.start_once("run1", "s", "@1/0/charge", owner="w3", now_ms=T0 + 7)
    assert done == OnceStart(done_ref='{"v":"paid"}')  # the result, and the marker write changed nothing
    assert sut.store.get_once("run1", "s", "@1/0/charge") == '{"v":"paid"}'
    # another operation, node or generation is independent
    assert sut.store.start_once("run1", "s", "@1/1/charge", owner="w3", now_ms=T0) == OnceStart()
    assert sut.store.start_once("run1", "s", "@1/0/charge", owner="w3", now_ms=T0, generation=1) == OnceStart()


def test_dynamodb_once_costs_two_writes_first_time_and_one_call_when_done(moto: MotoSession) -> None:
    sut = _dynamodb(moto, RETENTION_S)
    sut.calls.clear()
    assert sut.store.start_once("run1", "s", "pay", owner="w1", now_ms=T0) == OnceStart()
    sut.store.put_once("run1", "s", "pay", '{"v":1}', T0)
    assert sut.calls == Counter({"PutItem": 2})
    sut.calls.clear()
    assert sut.store.start_once("run1", "s", "pay", owner="w2", now_ms=T0).done_ref == '{"v":1}'
    assert sut.calls == Counter({"PutItem": 1})  # the result came back with the failed condition


def test_events_are_buffered_once(sut: StoreUnderTest) -> None:
    assert sut.store.get_event("run1", "approve") is None
    assert sut.store.put_event("run1", "approve", '{"v":"yes"}', T0) is True
    assert sut.store.put_event("run1", "approve", '{"v":"no"}', T0 + 1) is False
    assert sut.store.get_event("run1", "approve") == '{"v":"yes"}'
    assert sut.store.get_event("run2", "approve") is None


# ------------------------------------------------------------------------------------ runs
def test_update_run_applies_changes_only_in_expected_status(sut: StoreUnderTest) -> None:
    sut.store.create_run(new_run())
    assert (
        sut.store.update_run("run1", RunChanges(T0 + 1, status=RunStatus.FAILED), expect=(RunStatus.WAITING,)) is None
    )
    assert (
        sut.store.update_run("ghost", RunChanges(T0 + 1, status=RunStatus.FAILED), expect=(RunStatus.RUNNING,)) is None
    )
    assert sut.store.get_run("ghost") is None  # a failed update never creates the run
    err = {"node": "plan", "type": "Boom", "message": "x"}
    failed = sut.store.update_run(
        "run1", RunChanges(T0 + 2, status=RunStatus.FAILED, error=err, ended=True), expect=(RunStatus.RUNNING,)
    )
    assert failed is not None
    assert (failed.status, failed.error, failed.ended_ms, failed.updated_ms) == (RunStatus.FAILED, err, T0 + 2, T0 + 2)
    assert failed.current == "plan" and failed.created_ms == T0
    redriven = sut.store.update_run(
        "run1",
        RunChanges(T0 + 3, status=RunStatus.RUNNING, current="draft", clear_error=True, add_redrive=True),
        expect=(RunStatus.FAILED,),
    )
    assert redriven is not None
    assert (redriven.status, redriven.error, redriven.current, redriven.redrives) == (
        RunStatus.RUNNING,
        None,
        "draft",
        1,
    )
    done = sut.store.update_run(
        "run1",
        RunChanges(T0 + 4, status=RunStatus.SUCCEEDED, output_ref='{"v":"out"}', current="", ended=True),
        expect=(RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING),
    )
    assert done is not None and (done.output_ref, done.current, done.ended_ms) == ('{"v":"out"}', "", T0 + 4)
    assert sut.store.get_run("run1") == done


def test_crash_events_are_listed_in_time_order(sut: StoreUnderTest) -> None:
    sut.store.create_run(new_run())
    sut.store.add_crash_event("run1", T0 + 20, "m#00001", "lost_handoff")
    sut.store.add_crash_event("run1", T0 + 10, "fetch", "takeover")
    sut.store.add_crash_event("run1", T0 + 20, "m#00001", "lost_handoff")  # a second, identical event counts
    assert sut.store.list_crash_events("run1") == [
        CrashEvent(T0 + 10, "fetch", "takeover"),
        CrashEvent(T0 + 20, "m#00001", "lost_handoff"),
        CrashEvent(T0 + 20, "m#00001", "lost_handoff"),
    ]
    assert sut.store.list_crash_events("run2") == []
    run = sut.store.get_run("run1")
    assert run is not None and run.crash_events == ()  # the RUN item holds no list: it does not grow
    assert run.status is RunStatus.RUNNING  # nothing else changed


def _make_runs(store: CheckpointStore, n: int, workflow: str = "wf") -> list[str]:
    ids = []
    for i in range(n):
        run_id = f"{workflow}-run{i:02d}"
        store.create_run(new_run(run_id, workflow=workflow, now=T0 + i * 1000))
        ids.append(run_id)
    return ids


def _all_pages(store: CheckpointStore, workflow: str, limit: int, status: RunStatus | None = None) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = store.list_runs(workflow, status=status, limit=limit, cursor=cursor)
        assert len(page.runs) <= limit
        pages.append([r.run_id for r in page.runs])
        cursor = page.cursor
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


def test_list_runs_newest_first_with_cursor_pagination(sut: StoreUnderTest) -> None:
    ids = _make_runs(sut.store, 7)
    _make_runs(sut.store, 2, workflow="other")
    first = sut.store.list_runs("wf", limit=3)
    assert [r.run_id for r in first.runs] == ids[::-1][:3]
    assert first.cursor is not None
    pages = _all_pages(sut.store, "wf", 3)
    assert pages == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]
    whole = sut.store.list_runs("wf", limit=50)
    assert [r.run_id for r in whole.runs] == ids[::-1] and whole.cursor is None
    assert [r.run_id for r in sut.store.list_runs("other").runs] == ["other-run01", "other-run00"]
    assert sut.store.list_runs("nobody").runs == []


def test_list_runs_status_filter_pages_over_matches_only(sut: StoreUnderTest) -> None:
    ids = _make_runs(sut.store, 9)
    for run_id in ids[::2]:  # 0, 2, 4, 6, 8 succeed
        done = RunChanges(T0 + 99_999, status=RunStatus.SUCCEEDED, ended=True)
        assert sut.store.update_run(run_id, done, expect=(RunStatus.RUNNING,)) is not None
    pages = _all_pages(sut.store, "wf", 2, RunStatus.SUCCEEDED)
    flat = [r for p in pages for r in p]
    assert flat == [ids[8], ids[6], ids[4], ids[2], ids[0]]
    assert all(len(p) == 2 for p in pages[:2])  # a page is filled from several reads if need be
    running = sut.store.list_runs("wf", status=RunStatus.RUNNING, limit=10)
    assert [r.run_id for r in running.runs] == [ids[7], ids[5], ids[3], ids[1]]
    assert all(r.status is RunStatus.RUNNING for r in running.runs)
    assert sut.store.list_runs("wf", status=RunStatus.CANCELLED).runs == []


# ------------------------------------------------------------------------------------ TTL
def test_dynamodb_items_carry_the_ttl_attribute(moto: MotoSession) -> None:
    sut = _dynamodb(moto, RETENTION_S)
    store = sut.store
    expected = T0 // 1000 + RETENTION_S
    assert store.expires_at(T0) == expected
    store.create_run(new_run(key="k", request_hash="h"))
    claim(store, "m#00001", now=T0)
    store.put_node_if_absent(NodeInit("run1", "m#00002", "m", None, index=2), T0)
    store.put_each("run1", "m#00001", "each", EachRecord(0, '{"v":0}', 1, T0))
    store.put_once("run1", "m#00001", "llm", '{"v":0}', T0)
    store.start_once("run1", "m#00001", "pay", owner="w", now_ms=T0)
    store.put_event("run1", "approve", '{"v":0}', T0)
    keys = [
        ("IDEM#wf#k", "IDEM"),
        (run_pk("run1"), RUN_SK),
        (run_pk("run1"), node_sk("plan")),
        (run_pk("run1"), node_sk("m#00001")),
        (run_pk("run1"), node_sk("m#00002")),
        (run_pk("run1"), each_sk("m#00001", "each", 0)),
        (run_pk("run1"), once_sk("m#00001", "llm")),
        (run_pk("run1"), once_sk("m#00001", "pay")),
        (run_pk("run1"), event_sk("approve")),
    ]
    for pk, sk in keys:
        item = sut.raw(pk, sk)
        assert item is not None, (pk, sk)
        assert item.get("expires_at") == expected, (pk, sk, item)


def test_no_ttl_attribute_without_retention(make_store: Callable[..., StoreUnderTest]) -> None:
    sut = make_store(None)
    assert sut.store.expires_at(T0) is None
    sut.store.create_run(new_run())
    claim(sut.store, "step")
    sut.store.put_once("run1", "step", "llm", '{"v":0}', T0)
    for sk in (RUN_SK, node_sk("plan"), node_sk("step"), once_sk("step", "llm")):
        item = sut.raw(run_pk("run1"), sk)
        assert item is not None and "expires_at" not in item, (sk, item)


# ------------------------------------------------------------------------------------ one call each
def test_dynamodb_maps_each_operation_onto_one_api_call(moto: MotoSession) -> None:
    sut = _dynamodb(moto, RETENTION_S)
    store = sut.store

    def calls_of(fn: Callable[[], Any]) -> Counter[str]:
        sut.calls.clear()
        fn()
        return Counter(sut.calls)

    stale: list[Any] = []
    steps: list[tuple[str, Callable[[], Any], str]] = [
        ("create_run", lambda: store.create_run(new_run(key="k", request_hash="h")), "TransactWriteItems"),
        (
            "claim",
            lambda: stale.append(
                store.claim("run1", "s", node="s", index=None, owner="w", now_ms=T0, lease_until_ms=T0).record
            ),
            "UpdateItem",
        ),
        (
            "takeover",
            lambda: store.takeover("run1", "s", stale=stale[0], owner="w2", now_ms=T0 + 1, lease_until_ms=T0 + 9),
            "UpdateItem",
        ),
        (
            "finish",
            lambda: store.finish("run1", "s", NodeChanges(NodeStatus.SUCCEEDED, T0 + 2), owner="w2"),
            "UpdateItem",
        ),
        ("add_checkpoint_hit", lambda: store.add_checkpoint_hit("run1", "s"), "UpdateItem"),
        (
            "put_node_if_absent",
            lambda: store.put_node_if_absent(NodeInit("run1", "m#00000", "m", None, index=0), T0),
            "PutItem",
        ),
        ("put_each", lambda: store.put_each("run1", "s", "each", EachRecord(0, '{"v":0}', 1, T0)), "PutItem"),
        ("last_each", lambda: store.last_each("run1", "s", "each"), "Query"),
        ("start_once", lambda: store.start_once("run1", "s", "fx", owner="w", now_ms=T0), "PutItem"),
        ("put_once (winner)", lambda: store.put_once("run1", "s", "llm", '{"v":1}', T0), "PutItem"),
        ("put_once (loser)", lambda: store.put_once("run1", "s", "llm", '{"v":2}', T0), "PutItem"),
        ("put_event", lambda: store.put_event("run1", "go", '{"v":1}', T0), "PutItem"),
        ("get_run", lambda: store.get_run("run1"), "GetItem"),
        ("get_node", lambda: store.get_node("run1", "s"), "GetItem"),
        ("get_once", lambda: store.get_once("run1", "s", "llm"), "GetItem"),
        ("get_event", lambda: store.get_event("run1", "go"), "GetItem"),
        ("list_nodes", lambda: store.list_nodes("run1"), "Query"),
        ("list_each", lambda: store.list_each("run1", "s", "each"), "Query"),
        (
            "update_run",
            lambda: store.update_run("run1", RunChanges(T0, current="s"), expect=(RunStatus.RUNNING,)),
            "UpdateItem",
        ),
        ("add_crash_event", lambda: store.add_crash_event("run1", T0, "s", "takeover"), "PutItem"),
        ("list_crash_events", lambda: store.list_crash_events("run1"), "Query"),
        ("list_history", lambda: store.list_history("run1"), "Query"),
    ]
    for label, fn, op in steps:
        assert calls_of(fn) == Counter({op: 1}), label
    assert store.get_once("run1", "s", "llm") == '{"v":1}'


# ------------------------------------------------------------------------------------ bounded records
def item_bytes(item: dict[str, Any] | None) -> int:
    """The serialized size of a raw item (plain JSON; grows as DynamoDB's item size does)."""
    assert item is not None
    return len(json.dumps(item, sort_keys=True, separators=(",", ":")))


def plant(sut: StoreUnderTest, sk: str, item: dict[str, Any]) -> None:
    """Write a raw item into run1's partition behind the adapter's back."""
    if isinstance(sut.store, MemoryStore):
        sut.store._items[(run_pk("run1"), sk)] = item
    else:
        assert isinstance(sut.store, DynamoDBStore)
        raw = {**item, "pk": run_pk("run1"), "sk": sk}
        sut.store.client.put_item(TableName=sut.store.table, Item=to_item(raw))


def _invocations(sut: StoreUnderTest, n: int, *, crash_every: int = 0) -> list[Invocation]:
    """``n`` invocations of node ``step`` through the port as the engine makes them: a claim, then a
    CONTINUING finish based on the claimed record; every ``crash_every``-th one dies and is taken over.
    Returns the invocations in the order they were recorded."""
    expected: list[Invocation] = []
    now = T0
    for i in range(n):
        res = claim(sut.store, "step", owner=f"w{i}", now=now)
        assert res.kind is ClaimKind.CLAIMED and res.record is not None
        rec = res.record
        if crash_every and i % crash_every == crash_every - 1:  # this worker dies: the next one takes over
            now += 10_001
            res = sut.store.takeover("run1", "step", stale=rec, owner=f"t{i}", now_ms=now, lease_until_ms=now + 5)
            assert res.kind is ClaimKind.CLAIMED and res.record is not None
            expected.append(Invocation(rec.current_started_ms or 0, rec.lease_until_ms, "crashed"))
            rec = res.record
        inv = Invocation(now, now + 7, "continued")
        changes = NodeChanges(NodeStatus.CONTINUING, now + 7, add_duration_ms=7, invocation=inv, prior=rec)
        assert sut.store.finish("run1", "step", changes, owner=rec.owner) is FinishResult.OK
        expected.append(inv)
        now += 100
    return expected


def test_node_item_size_is_constant_and_the_full_history_is_kept(sut: StoreUnderTest) -> None:
    """500 continuations (200 on moto, whose calls are slow) with a takeover every 10th: the node item
    keeps the last HISTORY_WINDOW invocations and a count; the rest are H# items, read back in order
    (on the original code the item grew ~57 B per invocation, 400 KB at ~7,200)."""
    n = 500 if sut.kind == "memory" else 200
    sizes = {}
    expected: list[Invocation] = []
    for total in (40, n):
        expected += _invocations(sut, total - (len(expected) and 40), crash_every=10)
        sizes[total] = item_bytes(sut.raw(run_pk("run1"), node_sk("step")))
    assert sizes[n] - sizes[40] <= 16, sizes  # a few more digits in the counters, nothing else
    assert sizes[n] < 1500, sizes
    rec = sut.store.get_node("run1", "step")
    recorded = n + n // 10  # every takeover records the dead invocation too
    assert rec is not None and len(expected) == recorded
    assert rec.history == tuple(expected[-HISTORY_WINDOW:]) and rec.history_count == recorded
    assert (rec.invocations, rec.crashes, rec.duration_ms) == (recorded, n // 10, 7 * n)
    assert sut.store.node_history("run1", rec) == tuple(expected)
    older = sut.store.list_history("run1")
    assert list(older) == ["step"] and sorted(older["step"]) == list(range(recorded - HISTORY_WINDOW))


def test_happy_path_node_needs_no_history_items(sut: StoreUnderTest) -> None:
    expected = _invocations(sut, HISTORY_WINDOW)
    sut.calls.clear()
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.history == tuple(expected) and rec.history_complete
    assert sut.store.list_history("run1") == {}
    assert sut.store.node_history("run1", rec) == tuple(expected)
    assert sut.calls == (Counter({"GetItem": 1, "Query": 1}) if sut.kind == "dynamodb" else Counter())


def test_finish_past_the_window_costs_one_extra_put_and_no_read(moto: MotoSession) -> None:
    sut = _dynamodb(moto, RETENTION_S)
    _invocations(sut, HISTORY_WINDOW)
    res = claim(sut.store, "step", owner="wx", now=T0 + 10_000)
    inv = Invocation(T0 + 10_000, T0 + 10_005, "succeeded")
    changes = NodeChanges(NodeStatus.SUCCEEDED, T0 + 10_005, invocation=inv, prior=res.record, ended=True)
    sut.calls.clear()
    assert sut.store.finish("run1", "step", changes, owner="wx") is FinishResult.OK
    assert sut.calls == Counter({"PutItem": 1, "UpdateItem": 1})
    assert sut.raw(run_pk("run1"), history_sk("step", 0)) is not None


def test_an_evicted_invocation_whose_node_update_was_lost_is_not_read_twice(sut: StoreUnderTest) -> None:
    """The H# item is written before the node update; when that update is lost (lease gone, or the
    worker dies in between) the H# item is still inside the window: readers ignore it, and the next
    eviction rewrites it with the same content."""
    expected = _invocations(sut, HISTORY_WINDOW)
    res = claim(sut.store, "step", owner="late", now=T0 + 50_000)
    assert res.record is not None
    stale = NodeChanges(NodeStatus.SUCCEEDED, T0 + 50_001, invocation=Invocation(1, 2, "succeeded"), prior=res.record)
    assert sut.store.finish("run1", "step", stale, owner="someone-else") is FinishResult.LOST
    if sut.kind == "memory":  # one atomic step there: plant what a worker dying in between leaves
        plant(sut, history_sk("step", 0), expected[0].to_dict())
    assert sut.raw(run_pk("run1"), history_sk("step", 0)) is not None  # written, then the update lost
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.history_count == HISTORY_WINDOW
    assert sut.store.node_history("run1", rec) == tuple(expected)
    inv = Invocation(T0 + 50_000, T0 + 50_002, "succeeded")
    done = NodeChanges(NodeStatus.SUCCEEDED, T0 + 50_002, invocation=inv, prior=res.record)
    assert sut.store.finish("run1", "step", done, owner="late") is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and sut.store.node_history("run1", rec) == (*expected, inv)


def test_finish_without_prior_extends_the_stored_history(sut: StoreUnderTest) -> None:
    """A caller that has no record (``prior=None``) still gets a correct, bounded history: the store
    reads the node first (DynamoDB: one GetItem more)."""
    expected = _invocations(sut, HISTORY_WINDOW + 2)
    claim(sut.store, "step", owner="np", now=T0 + 90_000)
    inv = Invocation(T0 + 90_000, T0 + 90_001, "succeeded")
    sut.calls.clear()
    done = NodeChanges(NodeStatus.SUCCEEDED, T0 + 90_001, invocation=inv)
    assert sut.store.finish("run1", "step", done, owner="np") is FinishResult.OK
    if sut.kind == "dynamodb":
        assert sut.calls == Counter({"GetItem": 1, "PutItem": 1, "UpdateItem": 1})
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and len(rec.history) == HISTORY_WINDOW
    assert sut.store.node_history("run1", rec) == (*expected, inv)


def test_node_items_written_before_the_window_are_read_and_bounded_on_their_next_invocation(
    sut: StoreUnderTest,
) -> None:
    """An item with a longer ``history`` list and no ``hist_n`` (written by an earlier version)."""
    legacy = [Invocation(T0 + i, T0 + i + 1, "continued") for i in range(HISTORY_WINDOW + 5)]
    put_in_status(sut.store, "step", NodeStatus.CONTINUING)
    item = sut.raw(run_pk("run1"), node_sk("step"))
    assert item is not None
    item["history"] = [h.to_dict() for h in legacy]
    plant(sut, node_sk("step"), item)
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and rec.history_count == len(legacy) and rec.history_complete
    res = claim(sut.store, "step", owner="new", now=T0 + 1000)
    inv = Invocation(T0 + 1000, T0 + 1001, "succeeded")
    changes = NodeChanges(NodeStatus.SUCCEEDED, T0 + 1001, invocation=inv, prior=res.record)
    assert sut.store.finish("run1", "step", changes, owner="new") is FinishResult.OK
    rec = sut.store.get_node("run1", "step")
    assert rec is not None and len(rec.history) == HISTORY_WINDOW
    assert sut.store.node_history("run1", rec) == (*legacy, inv)


def test_run_item_size_is_constant_whatever_the_number_of_crash_events(sut: StoreUnderTest) -> None:
    """On the original code the RUN item grew by ~43 B per crash event (its ``crashes`` list)."""
    sut.store.create_run(new_run())
    before = item_bytes(sut.raw(run_pk("run1"), RUN_SK))
    events = [CrashEvent(T0 + 10 * i, f"n{i % 7}", ("takeover", "lost_handoff")[i % 2]) for i in range(200)]
    for e in reversed(events):
        sut.store.add_crash_event("run1", e.at_ms, e.node, e.kind)
    assert item_bytes(sut.raw(run_pk("run1"), RUN_SK)) == before
    assert sut.store.list_crash_events("run1") == events


def test_history_and_crash_items_carry_the_ttl_attribute(moto: MotoSession) -> None:
    sut = _dynamodb(moto, RETENTION_S)
    expected = _invocations(sut, HISTORY_WINDOW + 1)
    sut.store.add_crash_event("run1", T0 + 5, "step", "takeover")
    evicted = sut.raw(run_pk("run1"), history_sk("step", 0))
    assert evicted is not None and evicted["expires_at"] == expected[0].started_ms // 1000 + RETENTION_S
    assert isinstance(sut.store, DynamoDBStore)
    crash = moto.peek.query(
        TableName=sut.store.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :c)",
        ExpressionAttributeValues={":pk": {"S": run_pk("run1")}, ":c": {"S": "C#"}},
    )["Items"]
    assert [from_item(i)["expires_at"] for i in crash] == [(T0 + 5) // 1000 + RETENTION_S]


# ------------------------------------------------------------------------------------ active-run index
def active_ids(store: CheckpointStore, limit: int = 100) -> list[str]:
    ids, cursor = [], None
    while True:
        page = store.list_active_runs(limit=limit, cursor=cursor)
        ids += [r.run_id for r in page.runs]
        if (cursor := page.cursor) is None:
            return sorted(ids)


def test_active_index_lists_active_runs_and_cancels_until_settled(sut: StoreUnderTest) -> None:
    for i in range(5):
        sut.store.create_run(new_run(f"run{i}", workflow="wf" if i % 2 else "other", now=T0 + i))
    assert active_ids(sut.store) == [f"run{i}" for i in range(5)]
    assert active_ids(sut.store, limit=2) == [f"run{i}" for i in range(5)]  # pages through every workflow
    t = T0 + 10
    sut.store.update_run("run0", RunChanges(t, status=RunStatus.WAITING), expect=(RunStatus.RUNNING,))
    sut.store.update_run("run1", RunChanges(t, status=RunStatus.SUCCEEDED, ended=True), expect=(RunStatus.RUNNING,))
    sut.store.update_run("run2", RunChanges(t, status=RunStatus.FAILED, ended=True), expect=(RunStatus.RUNNING,))
    sut.store.update_run("run3", RunChanges(t, status=RunStatus.CANCELLED, ended=True), expect=(RunStatus.RUNNING,))
    assert active_ids(sut.store) == ["run0", "run3", "run4"]  # a cancel not finished stays listed
    sut.store.update_run("run3", RunChanges(t, settled=True), expect=(RunStatus.CANCELLED,))
    assert active_ids(sut.store) == ["run0", "run4"]
    redriven = sut.store.update_run("run2", RunChanges(t, status=RunStatus.RUNNING, add_redrive=True),
                                    expect=(RunStatus.FAILED,))  # fmt: skip
    assert redriven is not None and redriven.redrives == 1
    assert active_ids(sut.store) == ["run0", "run2", "run4"]
    [listed] = [r for r in sut.store.list_active_runs().runs if r.run_id == "run0"]
    assert listed.status is RunStatus.WAITING and listed.updated_ms == t  # the whole record, current


# ------------------------------------------------------------------------------------ the port
def test_the_store_port_has_at_most_ten_abstract_methods() -> None:
    """Issue 15: an adapter implements a handful of primitives; every operation above them is
    written once in CheckpointStore (both adapters inherit it unchanged)."""
    assert len(StorePort.__abstractmethods__) <= 10, sorted(StorePort.__abstractmethods__)
    assert CheckpointStore.__abstractmethods__ == StorePort.__abstractmethods__
    shared = {"create_run", "update_run", "claim", "takeover", "finish", "extend_lease", "start_once", "put_once"}
    for adapter in (MemoryStore, DynamoDBStore):
        assert not shared & set(vars(adapter)), adapter


def test_create_run_with_a_used_run_id_raises_store_conflict(sut: StoreUnderTest) -> None:
    """The run and its first node are put if absent: a second run with the same id is refused
    with a typed error on both adapters (the memory store used to overwrite the first run)."""
    sut.store.create_run(new_run())
    with pytest.raises(StoreConflict):
        sut.store.create_run(new_run())


# ------------------------------------------------------------------------------------ step fusion
# (stepchain.engine.fusion) the predecessor's checkpoint carries the invocation's lease on its successor
# (``chain_until``); the fused successor's first write is its checkpoint: an implied claim, ONE
# conditional write that creates the node, fenced by any claim another worker made meanwhile.
FUSED_OWNER = "req-1/abcd" + IMPLIED


def implied(key: str = "s1", *, attempts: int = 1) -> NodeRecord:
    """The record an implied claim makes in memory (nothing written)."""
    return NodeRecord(
        "run1", key, key, None, NodeStatus.RUNNING, attempts=attempts, invocations=1, owner=FUSED_OWNER,
        lease_until_ms=T0 + 60_000, current_started_ms=T0, created_ms=T0, started_ms=T0, fused=True,
    )  # fmt: skip


def done_changes(prior: NodeRecord | None, **kw: object) -> NodeChanges:
    inv = Invocation(T0, T0 + 5, "succeeded")
    return NodeChanges(
        NodeStatus.SUCCEEDED, T0 + 5, output_ref='{"v":2}', invocation=inv, ended=True, prior=prior, **kw
    )  # type: ignore[arg-type]


def test_a_checkpoint_records_the_chain_lease_on_its_successor(sut: StoreUnderTest) -> None:
    claimed = claim(sut.store, "s0", owner="w1").record
    calls = sum(sut.calls.values())
    assert (
        sut.store.finish("run1", "s0", done_changes(claimed, chain_until_ms=T0 + 62_000), owner="w1") is FinishResult.OK
    )
    assert sum(sut.calls.values()) - calls == (1 if sut.kind == "dynamodb" else 0)  # one UpdateItem
    rec = sut.store.get_node("run1", "s0")
    assert rec is not None and rec.chain_until_ms == T0 + 62_000 and not rec.fused


def test_a_fused_steps_checkpoint_creates_it_in_one_write(sut: StoreUnderTest) -> None:
    before = dict(sut.calls)
    assert sut.store.finish("run1", "s1", done_changes(implied()), owner=FUSED_OWNER) is FinishResult.OK
    if sut.kind == "dynamodb":
        assert {k: v - before.get(k, 0) for k, v in sut.calls.items() if v != before.get(k, 0)} == {"PutItem": 1}
    rec = sut.store.get_node("run1", "s1")
    assert rec is not None
    assert (rec.status, rec.output_ref, rec.attempts, rec.invocations, rec.fused, rec.owner) == (
        NodeStatus.SUCCEEDED, '{"v":2}', 1, 1, True, None,
    )  # fmt: skip
    assert (rec.started_ms, rec.ended_ms, rec.history) == (T0, T0 + 5, (Invocation(T0, T0 + 5, "succeeded"),))
    raw = sut.raw("RUN#run1", "N#s1")
    assert raw is not None and raw.get("expires_at") is not None  # a TTL as a claimed node has


def test_a_fused_steps_retry_or_hold_also_creates_it(sut: StoreUnderTest) -> None:
    inv = Invocation(T0, T0 + 5, "retrying")
    changes = NodeChanges(NodeStatus.RETRYING, T0 + 5, invocation=inv, attempts=2, prior=implied(), wake_at_ms=T0 + 9)
    assert sut.store.finish("run1", "s1", changes, owner=FUSED_OWNER) is FinishResult.OK
    rec = sut.store.get_node("run1", "s1")
    assert rec is not None and (rec.status, rec.attempts, rec.wake_at_ms) == (NodeStatus.RETRYING, 2, T0 + 9)
    # a budget hold writes without the prior record: the node is created all the same
    hold = NodeChanges(NodeStatus.RETRYING, T0 + 7, wake_at_ms=T0 + 99)
    assert sut.store.finish("run1", "s2", hold, owner=FUSED_OWNER) is FinishResult.OK
    rec2 = sut.store.get_node("run1", "s2")
    assert rec2 is not None and (rec2.status, rec2.attempts, rec2.invocations) == (NodeStatus.RETRYING, 1, 1)


def test_a_takeover_fences_the_fused_invocation_out(sut: StoreUnderTest) -> None:
    """A recovery claimed the successor (the chain's lease ran out): the zombie's checkpoint is lost."""
    assert claim(sut.store, "s1", owner="w2", now=T0 + 70_000).kind is ClaimKind.CLAIMED
    assert sut.store.finish("run1", "s1", done_changes(implied()), owner=FUSED_OWNER) is FinishResult.LOST
    rec = sut.store.get_node("run1", "s1")
    assert rec is not None and (rec.status, rec.owner, rec.output_ref) == (NodeStatus.RUNNING, "w2", None)
    # and once the recovery finished it, the zombie still cannot overwrite it
    assert sut.store.finish("run1", "s1", done_changes(rec), owner="w2") is FinishResult.OK
    assert sut.store.finish("run1", "s1", done_changes(implied()), owner=FUSED_OWNER) is FinishResult.LOST


def test_a_fused_checkpoint_is_written_once(sut: StoreUnderTest) -> None:
    """A second implied write for the same node (a duplicate chain) is lost: the first one stands."""
    assert sut.store.finish("run1", "s1", done_changes(implied()), owner=FUSED_OWNER) is FinishResult.OK
    other = NodeChanges(NodeStatus.SUCCEEDED, T0 + 9, output_ref='{"v":3}', ended=True, prior=implied())
    assert sut.store.finish("run1", "s1", other, owner="req-2/ffff" + IMPLIED) is FinishResult.LOST
    assert sut.store.finish("run1", "s1", other, owner=FUSED_OWNER) is FinishResult.LOST  # not RUNNING any more
    rec = sut.store.get_node("run1", "s1")
    assert rec is not None and rec.output_ref == '{"v":2}'


def test_an_ordinary_finish_still_never_creates_a_node(sut: StoreUnderTest) -> None:
    assert sut.store.finish("run1", "ghost", done_changes(None), owner="w1") is FinishResult.LOST
    assert sut.store.get_node("run1", "ghost") is None


# ------------------------------------------------------------------- limit keys (issue 19)
def test_a_concurrency_key_admits_limit_holders_and_reclaims_only_ended_leases(sut: StoreUnderTest) -> None:
    s, pk = sut.store, "LIMIT#llm#gpt"
    assert [s.acquire_slot(pk, f"o{i}", 2, T0 + 10_000, T0).acquired for i in range(3)] == [True, True, False]
    sut.calls.clear()
    full = s.acquire_slot(pk, "o3", 2, T0 + 10_000, T0 + 5_000)  # both leases live: ONE call, no reclaim
    assert not full.acquired and full.lease_ends_ms == T0 + 10_000
    assert sut.kind == "memory" or sum(sut.calls.values()) == 1
    assert s.extend_slot(pk, "o0", T0 + 60_000)
    took = s.acquire_slot(pk, "o3", 2, T0 + 90_000, T0 + 20_000)  # o1's lease ended: reclaimed, o0's not
    assert took.acquired and took.holders == 2
    assert set(s.slot_holders(pk).values()) == {T0 + 60_000, T0 + 90_000}
    assert not s.release_slot(pk, "o1")  # reclaimed: its late release changes nothing
    assert s.release_slot(pk, "o0") and not s.release_slot(pk, "o0")  # released once only
    assert s.acquire_slot(pk, "o4", 2, T0 + 90_000, T0 + 20_000).acquired
    assert not s.extend_slot(pk, "o1", T0 + 99_000)


def test_a_rate_bucket_advances_from_now_or_from_its_backlog_whatever_the_guess(sut: StoreUnderTest) -> None:
    s, pk = sut.store, "LIMIT#rpm#p"
    now = T0 * 1000
    assert s.advance_bucket(pk, now, 1_000_000, busy=True) == now + 1_000_000  # absent: the guess was wrong
    assert s.advance_bucket(pk, now, 1_000_000, busy=False) == now + 2_000_000  # busy: wrong again, still right
    assert s.advance_bucket(pk, now + 10_000_000, 1_000_000, busy=True) == now + 11_000_000  # idle since
    assert s.advance_bucket(pk, now + 10_000_000, -500_000, busy=True) == now + 10_500_000  # a refund
    assert s.advance_bucket(pk, now + 20_000_000, -500_000, busy=False) == now + 20_000_000  # idle: nothing back
    assert s.push_bucket(pk, now + 60_000_000, now) and not s.push_bucket(pk, now + 30_000_000, now)
    assert s.bucket_tat(pk) == now + 60_000_000


def test_waiting_steps_get_slots_in_queue_order_and_a_silent_waiter_loses_its_place(sut: StoreUnderTest) -> None:
    from stepchain.store.limits import Waiter

    s, pk = sut.store, "LIMIT#llm#queue"
    a, b, c = (Waiter(x, seq, 5_000) for x, seq in (("a", 100), ("b", 200), ("c", 50)))
    assert s.acquire_slot(pk, "o0", 1, T0 + 10_000, T0).acquired
    assert s.acquire_slot(pk, "oa", 1, T0 + 10_000, T0, a).position == 0  # queued: a, then b
    assert s.acquire_slot(pk, "ob", 1, T0 + 10_000, T0, b).position == 1
    assert s.release_slot(pk, "o0")
    assert not s.acquire_slot(pk, "new", 1, T0 + 10_000, T0 + 1).acquired  # a newcomer goes behind them
    late_b = s.acquire_slot(pk, "ob", 1, T0 + 10_000, T0 + 1, b)
    assert not late_b.acquired and late_b.position == 1  # b waits for a, though a slot is free
    assert s.acquire_slot(pk, "oa", 1, T0 + 10_000, T0 + 2, a).acquired  # a's turn
    assert s.acquire_slot(pk, "oc", 1, T0 + 10_000, T0 + 3, c).position == 0  # c: higher priority, ahead of b
    assert s.release_slot(pk, "oa")
    # c stops asking (its run was cancelled): after its entry goes stale, b gets the free slot
    assert s.acquire_slot(pk, "ob", 1, T0 + 10_000, T0 + 4, b).position == 1
    assert s.acquire_slot(pk, "ob", 1, T0 + 20_000, T0 + 6_000, b).acquired
    item = sut.raw(pk, "C") or {}
    assert not any(k.startswith(("w_", "x_")) for k in item) and int(item["nw"]) == 0
    assert s.release_slot(pk, "ob") and s.acquire_slot(pk, "free", 1, T0 + 30_000, T0 + 7_000).acquired
