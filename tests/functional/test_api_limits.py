"""Concurrency and rate limits over the runs API (issue 19): a throttled step in ``GET /runs/{id}``."""

from __future__ import annotations

from tests.functional.test_api import call, start

from stepchain import RateLimit, StepContext, Workflow
from stepchain.testing import Harness

limited = Workflow("api-limited")


@limited.step(limits=RateLimit(1, per_s=60, key=lambda ctx, x: "provider-a", name="rpm"))
def ask(ctx: StepContext, x: int) -> int:
    return x


def test_a_throttled_step_shows_its_limit_key_and_expected_start() -> None:
    with Harness(limited, backend="memory") as h:
        first = start(h, "api-limited", 1).json["run_id"]
        second = start(h, "api-limited", 2).json["run_id"]
        h.run(max_activations=2)  # the first goes, the second reserves the next minute
        view = call(h, "get-run", path=f"/runs/{second}").json
        [node] = view["nodes"]
        assert node["status"] == "RETRYING" and node["attempts"] == 1
        assert node["throttled"] == {"limit": "rpm", "key": "provider-a", "until_ms": h.clock.now_ms() + 60_000}
        assert call(h, "get-run", path=f"/runs/{first}").json["nodes"][0]["throttled"] is None
        assert h.run(second) == "SUCCEEDED"
        assert call(h, "get-run", path=f"/runs/{second}").json["nodes"][0]["throttled"] is None
