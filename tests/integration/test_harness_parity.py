"""Harness parity: the same workflow, driven by the same calls, gives the same results on every
harness (in memory, on moto, over SQS, over Step Functions, and the embedded runtime).

The workflow (harness_parity_flow.py) is not the research agent: a step, a map, an event wait, a
sleep, a step. One scenario exercises every shared method: ``crash_at``, ``duplicate_delivery``,
``start``, ``run`` (and its result), ``send_event``, ``advance``, ``cancel``, ``redrive``,
``status``, ``output``, ``view``, ``runs`` and ``executions``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.harness_parity_flow import BUDGET_MS, FAIL_FLAG, WAIT_TIMEOUT_S, wf

from stepchain.testing import Harness, LocalHarness, SfnHarness, SqsHarness

ROOT = Path(__file__).resolve().parents[2]
Driver = Harness | LocalHarness


def scenario(h: Driver, fail_flag: Path) -> dict[str, Any]:
    """The same calls on every harness; returns what they answered."""
    seen: dict[str, Any] = {}
    # 1. a crash after an item's checkpoint, every message delivered twice, an event, a sleep
    h.crash_at("after_checkpoint", node="square#00001")  # one item: map items run concurrently on sfn
    ok = h.start("parity", 3)
    seen["ok.waiting"] = h.run(ok)
    seen["ok.event"] = h.send_event(ok, "go", {"by": "qa"})
    seen["ok.done"] = h.run(ok)
    seen["ok.output"] = h.output(ok)
    seen["ok.executions"] = dict(h.executions)
    view = h.view(ok)
    seen["ok.nodes"] = [(n.key, n.status, [(i.key, i.status) for i in n.items]) for n in view.nodes]
    # 2. the event never comes: advancing past the wait's deadline fails the run
    late = h.start("parity", 1)
    seen["late.waiting"] = h.run(late)
    h.advance(WAIT_TIMEOUT_S / 2)
    seen["late.before_deadline"] = h.run(late)
    h.advance(WAIT_TIMEOUT_S / 2 + 1)  # past the deadline: run() waits for its timeout to fail the run
    seen["late.after_deadline"] = h.run(late)
    seen["late.error"] = (h.view(late).error or {}).get("type")
    # 3. cancelled while it waits
    cancelled = h.start("parity", 1)
    h.run(cancelled)
    h.cancel(cancelled)
    seen["cancelled"] = h.run(cancelled)
    # 4. fails for good, then is redriven once the cause is gone; run() without a run id
    fail_flag.touch()
    redriven = h.start("parity", 2)
    h.run()
    h.send_event(redriven, "go", 1)
    seen["redriven.failed"] = h.run()
    fail_flag.unlink()
    h.redrive(redriven)
    seen["redriven.done"] = h.run()
    seen["redriven.output"] = h.output(redriven)
    seen["redriven.redrives"] = h.view(redriven).redrives
    # the dead worker's item was redelivered, found done, and its handoff re-issued (on SQS the
    # whole batch comes back with it, so its other items may report the same: not compared).
    # Checked last: in real time (LocalHarness) the redelivery comes a visibility timeout later.
    events = {(e["node"], e["kind"]) for e in h.view(ok).crash_events}
    seen["ok.crash_recorded"] = ("square#00001", "lost_handoff") in events
    seen["runs"] = h.runs() == sorted([ok, late, cancelled, redriven])
    seen["statuses"] = [h.status(r) for r in (ok, late, cancelled, redriven)]
    return seen


EXPECTED: dict[str, Any] = {
    "ok.waiting": "WAITING",
    "ok.event": "delivered",
    "ok.done": "SUCCEEDED",
    "ok.output": {"go": {"by": "qa"}, "sum": 0 + 1 + 4},
    "ok.executions": {"split": 1, "square#00000": 1, "square#00001": 1, "square#00002": 1, "total": 1},
    "ok.nodes": [
        ("split", "SUCCEEDED", []),
        ("square", "SUCCEEDED", [(f"square#0000{i}", "SUCCEEDED") for i in range(3)]),
        ("go", "SUCCEEDED", []),
        ("sleep_3", "SUCCEEDED", []),
        ("total", "SUCCEEDED", []),
    ],
    "ok.crash_recorded": True,
    "late.waiting": "WAITING",
    "late.before_deadline": "WAITING",
    "late.after_deadline": "FAILED",
    "late.error": "EventTimeout",
    "cancelled": "CANCELLED",
    "redriven.failed": "FAILED",
    "redriven.done": "SUCCEEDED",
    "redriven.output": {"go": 1, "sum": 0 + 1},
    "redriven.redrives": 1,
    "runs": True,
    "statuses": ["SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED"],
}

HARNESSES: dict[str, Callable[[], Driver]] = {
    "memory": lambda: Harness(wf, backend="memory", budget_ms=BUDGET_MS, duplicate_delivery=True),
    "moto": lambda: Harness(wf, backend="moto", budget_ms=BUDGET_MS, duplicate_delivery=True),
    "sqs": lambda: SqsHarness(wf, budget_ms=BUDGET_MS, duplicate_delivery=True),
    "sfn": lambda: SfnHarness(wf, budget_ms=BUDGET_MS, duplicate_delivery=True),
    # real time and real worker processes
    "local": lambda: LocalHarness(
        "tests.integration.harness_parity_flow:wf", budget_ms=BUDGET_MS, duplicate_delivery=True, pythonpath=[str(ROOT)]
    ),
}


@pytest.fixture
def fail_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    flag = tmp_path / "fail"
    monkeypatch.setenv(FAIL_FLAG, str(flag))  # before the harness starts: its workers inherit it
    yield flag


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_same_calls_same_results_on_every_harness(kind: str, fail_flag: Path) -> None:
    with HARNESSES[kind]() as h:
        seen = scenario(h, fail_flag)
    assert {k: seen[k] for k in EXPECTED} == EXPECTED
    assert Counter(seen["ok.executions"]) == Counter(EXPECTED["ok.executions"])
