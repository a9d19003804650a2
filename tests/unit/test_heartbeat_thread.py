"""The heartbeat on a real clock: a daemon thread that beats every H and is gone when the block ends
(Lambda freezes the sandbox after the handler returns: nothing may run then)."""

from __future__ import annotations

import threading
import time
from typing import Any

from stepchain.clock import SystemClock
from stepchain.engine.heartbeat import HeartbeatPolicy, InFlight, SqsHeartbeat


class FakeStore:
    def __init__(self) -> None:
        self.extends: list[tuple[str, str, str, int]] = []

    def extend_lease(self, run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
        self.extends.append((run_id, key, owner, lease_until_ms))
        return True


class FakeSqs:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def change_message_visibility_batch(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        return {"Successful": [{"Id": e["Id"]} for e in kw["Entries"]]}


def test_real_clock_heartbeat_beats_every_h_and_stops_before_the_block_ends() -> None:
    store, sqs = FakeStore(), FakeSqs()
    policy = HeartbeatPolicy(visibility_s=1, interval_s=0.05)
    hb = SqsHeartbeat(policy, store, sqs, [InFlight("m1", "https://q/1/a", "rh1")], SystemClock())  # type: ignore[arg-type]
    with hb:
        assert len(sqs.calls) == 1  # the arrival change, before any step runs
        with hb.serving("m1"):
            now = SystemClock().now_ms()
            lease = hb.lease_until(now)
            assert lease is not None and now <= lease <= now + policy.lease_ms
            hb.hold("run1", "slow", "me")
            time.sleep(0.3)
        n_extends, n_calls = len(store.extends), len(sqs.calls)
        assert n_extends >= 3 and n_calls >= 4
        assert all(e[:3] == ("run1", "slow", "me") for e in store.extends)
        time.sleep(0.15)  # the record is done: no lease to extend, no message to keep invisible
        assert (len(store.extends), len(sqs.calls)) == (n_extends, n_calls)
    assert not [t for t in threading.enumerate() if t.name == "stepchain-heartbeat"]
    assert sqs.calls[0]["Entries"] == [{"Id": "0", "ReceiptHandle": "rh1", "VisibilityTimeout": 1}]


def test_a_real_threads_beats_reach_the_claiming_activations_node_write() -> None:
    """The heartbeat thread is outside the activation's request meter: it counts its own requests and
    the activation's next node write takes them (the run's ledger shows what the heartbeat cost)."""
    from stepchain import requests

    store, sqs = FakeStore(), FakeSqs()
    policy = HeartbeatPolicy(visibility_s=1, interval_s=0.05)
    hb = SqsHeartbeat(policy, store, sqs, [InFlight("m1", "https://q/1/a", "rh1")], SystemClock())  # type: ignore[arg-type]
    with hb, hb.serving("m1"), requests.metering({"sqs_receive": 1}):  # as handle_sqs_batch and serve nest
        hb.lease_until(SystemClock().now_ms())  # the claim
        hb.hold("run1", "slow", "me")
        time.sleep(0.3)
        hb.stop()  # the thread is joined: no beat runs any more; the activation's node write comes now
        taken = requests.take_for_node_write("SUCCEEDED")
    assert len(sqs.calls) >= 4 and len(store.extends) >= 3
    assert taken["sqs_other"] == len(sqs.calls)  # the arrival change + one per beat
    assert taken["ddb_write"] == len(store.extends) and taken["sqs_receive"] == 1
