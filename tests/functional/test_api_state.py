"""The runs API and the durable run state: ``GET /runs/{id}`` shows it, and an event whose payload
cannot merge into it (``wait_for_event(into_state=True)``) is a 400 that stores nothing."""

from __future__ import annotations

from tests.functional.test_api import call, start
from tests.integration.state_flows import agent

from stepchain.testing import Harness


def test_get_run_shows_the_state_and_a_bad_event_payload_is_400() -> None:
    with Harness(agent) as h:
        run_id = start(h, "state-agent", "t").json["run_id"]
        h.run(run_id)
        got = call(h, "get-run", path=f"/runs/{run_id}")
        assert got.status == 200 and got.json["status"] == "WAITING"
        assert got.json["state"] == {
            "task": "t",
            "notes": ["t-result0"],
            "turns": 1,
            "approvals": [],
            "approved_by": None,
        }
        bad = call(h, "send-event", path=f"/runs/{run_id}/events/approve", body={"no_such_field": 1})
        assert bad.status == 400 and bad.json["error"]["code"] == "validation_error", bad.json
        ok = call(h, "send-event", path=f"/runs/{run_id}/events/approve", body={"approvals": ["ann-0"]})
        assert ok.status == 202
        h.run(run_id)
        assert call(h, "get-run", path=f"/runs/{run_id}").json["state"]["approvals"] == ["ann-0"]
