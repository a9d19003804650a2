"""Issue 7, observed 9 (the harness and engine parts): SfnHarness's poll timeout and its message,
the elapsed time it logs for a crashed invocation, and a WorkerLost error that names the step's
timeout_s."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stepchain import RetryPolicy, Workflow
from stepchain.testing import Harness, SfnHarness


def chain(name: str, steps: int, real_pause_s: float = 0.0) -> Workflow:
    wf = Workflow(name)
    for i in range(steps):

        def step(ctx: Any, x: int) -> int:
            if real_pause_s:  # real time (time.sleep would spend virtual time): moto's threads run meanwhile
                threading.Event().wait(real_pause_s)
            return x + 1

        wf.step(name=f"s{i}")(step)
    return wf


def test_sfn_run_waits_as_long_as_the_run_makes_progress() -> None:
    """A run longer than the poll timeout, progressing all along, is waited for (the timeout
    counts real seconds without progress, not the run's whole length)."""
    with SfnHarness(chain("sfn-long", 6, real_pause_s=0.6), poll_timeout_s=2.0) as h:
        run_id = h.start("sfn-long", 0)
        assert h.run(run_id) == "SUCCEEDED"  # 3.6 s of steps > 2 s
        assert h.output(run_id) == 6


def test_sfn_run_timeout_message_names_the_real_limit() -> None:
    gate = threading.Event()
    wf = Workflow("sfn-stuck")

    @wf.step()
    def stuck(ctx: Any, x: Any) -> Any:
        gate.wait(30)  # blocks in real time until the test lets it go
        return x

    with SfnHarness(wf, poll_timeout_s=0.3) as h:
        run_id = h.start("sfn-stuck", 1)
        try:
            with pytest.raises(TimeoutError) as info:
                h.run(run_id)
        finally:
            gate.set()
        message = str(info.value)
        assert "None" not in message and "0.3 s without progress" in message, message
        assert h.run(run_id) == "SUCCEEDED"


def test_sfn_default_poll_timeout_fits_ordinary_runs() -> None:
    with SfnHarness(chain("sfn-default", 1)) as h:
        assert h.poll_timeout_s >= 60  # was 30 s of total real time, less than a long moto run


def test_sfn_logs_a_crashed_invocation_without_the_wait_for_its_lease() -> None:
    """The driver moves the clock past a dead invocation's lease so the retry can take over;
    that wait is not the invocation's own time (it showed as a budget overrun)."""
    with SfnHarness(chain("sfn-crash", 2), budget_ms=5000) as h:
        h.crash_at("after_claim", node="s1")
        run_id = h.start("sfn-crash", 0)
        assert h.run(run_id) == "SUCCEEDED"
        crashed = [i for i in h.invocations if i.outcome == "crashed"]
        assert [i.key for i in crashed] == ["s1"]
        assert all(0 <= i.elapsed_ms <= i.budget_ms for i in h.invocations), h.invocations


def test_worker_lost_names_the_timeout_and_that_every_attempt_died() -> None:
    wf = Workflow("always-killed")

    @wf.step(timeout_s=2, retry=RetryPolicy(max_attempts=2, backoff_s=0))
    def slow(ctx: Any, x: Any) -> Any:
        import time

        time.sleep(5)  # virtual: past the 2 s timeout, so Lambda kills every attempt
        return x

    with Harness(wf, backend="memory") as h:
        run_id = h.start("always-killed", 1)
        h.run()
        assert h.status(run_id) == "FAILED"
        err = h.view(run_id).error
        assert err is not None and err["type"] == "WorkerLost"
        assert "timeout_s=2" in err["message"], err
        assert "each of its 2 attempts was killed or timed out" in err["message"], err
        assert [i.outcome for i in h.invocations] == ["timed_out", "timed_out", "FAILED"]
