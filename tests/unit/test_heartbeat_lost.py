"""A beat whose lease extension fails warns "taken over" only when another worker holds the node:
the node's own commit racing a beat (the lease ended because the step finished) is no takeover.
Before this, every such race logged "heartbeat found the lease lost (taken over)" (make demo's workers.log)."""

from __future__ import annotations

from typing import Any

import pytest

import stepchain.engine.heartbeat as heartbeat
from stepchain.clock import SystemClock
from stepchain.engine.heartbeat import HeartbeatPolicy, SqsHeartbeat


class Rec:
    def __init__(self, owner: str | None) -> None:
        self.owner = owner


class EndedLeaseStore:
    """extend_lease always fails (the lease is no longer ours); get_node shows who holds the node now."""

    def __init__(self, owner_now: str | None) -> None:
        self.owner_now = owner_now

    def extend_lease(self, run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
        return False

    def get_node(self, run_id: str, key: str) -> Rec:
        return Rec(self.owner_now)


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str, *a: Any, **kw: Any) -> None:
        self.warnings.append(msg)

    def debug(self, msg: str, *a: Any, **kw: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("owner_now", "warned"),
    [("someone-else", True), ("me", False), (None, False)],
    ids=["taken-over", "finished-still-mine", "finished-released"],
)
def test_a_failed_extension_warns_only_on_a_real_takeover(
    monkeypatch: pytest.MonkeyPatch, owner_now: str | None, warned: bool
) -> None:
    log = Recorder()
    monkeypatch.setattr(heartbeat, "logger", log)
    hb = SqsHeartbeat.lease_only(
        HeartbeatPolicy(visibility_s=1, interval_s=0.05), EndedLeaseStore(owner_now), SystemClock()
    )  # type: ignore[arg-type]
    hb.hold("run1", "fetch", "me")
    hb.tick(1_000)
    assert hb.lost  # either way the heartbeat stops extending that lease
    assert log.warnings == (["heartbeat found the lease lost (taken over)"] if warned else [])
