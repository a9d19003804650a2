"""Issue 10.4: ``Harness`` runs in memory by default (fast unit tests); moto stays one argument away."""

from __future__ import annotations

from typing import Any

from stepchain import Workflow
from stepchain.store.dynamodb import DynamoDBStore
from stepchain.store.memory import MemoryStore
from stepchain.store.payloads import MemoryBlobStore, S3BlobStore
from stepchain.testing import Harness


def make() -> Workflow:
    wf = Workflow("default-backend")
    for i in range(3):
        wf.step(name=f"s{i}")(lambda ctx, x: {"v": x["v"] + 1, "pad": "x" * 40_000})
    return wf


def outcome(h: Harness) -> tuple[Any, ...]:
    run_id = h.start("default-backend", {"v": 0})
    h.crash_at("after_checkpoint", node="s1")
    status = h.run(run_id)
    view = h.view(run_id)
    return status, h.output(run_id)["v"], dict(h.executions), view.restart_tax_avoided.crashes


def test_harness_defaults_to_memory_and_moto_gives_the_same_result() -> None:
    with Harness(make()) as h:
        assert isinstance(h.store, MemoryStore) and isinstance(h.blobs, MemoryBlobStore)
        in_memory = outcome(h)
        assert h.api_calls == {}  # no AWS call at all
    with Harness(make(), backend="moto") as h:
        assert isinstance(h.store, DynamoDBStore) and isinstance(h.blobs, S3BlobStore)
        on_moto = outcome(h)
        assert h.api_calls["dynamodb.UpdateItem"] > 0 and h.api_calls["s3.PutObject"] == 3
    assert in_memory == on_moto == ("SUCCEEDED", 3, {"s0": 1, "s1": 1, "s2": 1}, 1)
